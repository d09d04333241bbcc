import Foundation

/// HAProxy (Debian's `haproxy`), when installed, as the load balancer in front of the audit servers.
public struct HAProxy: Sendable {
    /// The program's path.
    public let executable: String
    /// The major and minor version, such as `2.6`.
    public let version: String

    /// HAProxy from PATH or the system program folders, with its version; `nil` when it is not installed.
    public static func find() async -> HAProxy? {
        guard let executable = ExecutableSearch.find("haproxy", extraDirectories: ExecutableSearch.systemDirectories) else { return nil }
        guard let child = try? ChildProcess.start(ChildProcess.Launch(name: "haproxy -v", executable: executable, arguments: ["-v"])) else { return nil }
        guard await child.waitForExit() == .exited(0) else { return nil }
        await child.output.waitForEnd()
        return HAProxy(executable: executable, version: version(in: child.output.contents) ?? "(unknown version)")
    }

    /// The `2.6` of "HAProxy version 2.6.12-1+deb12u1 2023/12/16 - https://haproxy.org/".
    static func version(in text: String) -> String? {
        guard let start = text.range(of: "version ") else { return nil }
        let parts = text[start.upperBound...].prefix { $0.isNumber || $0 == "." }.split(separator: ".")
        guard parts.count >= 2 else { return nil }
        return "\(parts[0]).\(parts[1])"
    }

    /// The configuration: TCP mode, each connection to the next backend in turn, and the client
    /// side on the listening socket HAProxy inherits as descriptor 3.
    ///
    /// TCP mode costs HAProxy about two thirds of what HTTP mode with keep-alive does, and balances
    /// as well for the demo's driver, which opens its keep-alive connections at the start and
    /// spreads its requests evenly over them; more threads (`nbthread`) or fewer changed nothing
    /// measurable.
    static func configuration(backends: [Int]) -> String {
        """
        global
            maxconn 4096
        defaults
            mode tcp
            timeout connect 2s
            timeout client 60s
            timeout server 60s
        frontend audit
            bind fd@3
            default_backend audit_servers
        backend audit_servers
            balance roundrobin
        \(backends.enumerated().map { "    server audit-\($0.offset) 127.0.0.1:\($0.element)" }.joined(separator: "\n"))

        """
    }

    /// Writes the configuration in `folder` and starts HAProxy in the foreground on `listener`,
    /// round-robin over the `backends` ports.
    ///
    /// HAProxy cannot bind port 0 and report the port, so it takes over a socket this process
    /// already listens on: no other process can take the port in between.
    public func start(listener: LoopbackListener, backends: [Int], folder: URL, log: URL, supervisor: ProcessSupervisor) throws(LoadTestingError) -> ChildProcess {
        let directory = folder.appendingPathComponent("haproxy")
        let file = directory.appendingPathComponent("haproxy.cfg")
        do {
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            try Self.configuration(backends: backends).write(to: file, atomically: true, encoding: .utf8)
        } catch {
            throw LoadTestingError(.setupFailed, "cannot write HAProxy's configuration", cause: error)
        }
        return try supervisor.start(ChildProcess.Launch(
            name: "haproxy",
            executable: executable,
            arguments: ["-db", "-f", file.path],
            directory: directory.path,
            log: log.path,
            inheritedDescriptors: [listener.descriptor]
        ))
    }
}
