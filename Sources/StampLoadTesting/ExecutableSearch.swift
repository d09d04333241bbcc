import Foundation

/// Finds installed programs.
public enum ExecutableSearch {
    /// The first executable `name` in the directories of PATH, then in `extraDirectories`; `nil` when there is none.
    public static func find(_ name: String, extraDirectories: [String] = []) -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
        let directories = path.split(separator: ":").map(String.init) + extraDirectories
        return directories.map { "\($0)/\(name)" }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    /// The folders of system programs, which a user's PATH often leaves out (Debian installs HAProxy and runuser there).
    public static let systemDirectories = ["/usr/sbin", "/sbin"]
}
