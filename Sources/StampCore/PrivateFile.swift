#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Reading a secret from a file that only its owner may read or write, as libpq demands of
/// `~/.pgpass`: a regular file with no permission bits for its group or for others.
public enum PrivateFile {
    /// Why a private file was not read; each caller words it for its own file.
    public enum Problem: Error, Equatable {
        /// There is no file at the path.
        case missing
        /// `stat` failed with this `errno`.
        case unreadable(errno: Int32)
        case notRegularFile
        /// Its group or other users may read or write it.
        case openToOthers
        /// Its bytes are not UTF-8 text, or reading them failed.
        case notText

        /// What went wrong, to follow "the ... file PATH" in a message.
        public var reason: String {
            switch self {
            case .missing: "does not exist"
            case .unreadable(let errno): "cannot be read (errno \(errno))"
            case .notRegularFile: "is not a regular file"
            case .openToOthers: "is open to other users; make it readable by its owner only (chmod 600)"
            case .notText: "cannot be read as UTF-8 text"
            }
        }
    }

    /// The text of the file at `path`, once it is known to be a regular file closed to everyone
    /// but its owner.
    public static func text(at path: String) throws(Problem) -> String {
        var status = stat()
        guard stat(path, &status) == 0 else {
            throw errno == ENOENT ? .missing : .unreadable(errno: errno)
        }
        // The file type bits, and the permission bits of the group and of others.
        guard status.st_mode & 0o170000 == 0o100000 else { throw .notRegularFile }
        guard status.st_mode & 0o077 == 0 else { throw .openToOthers }
        guard let contents = FileManager.default.contents(atPath: path), let text = String(bytes: contents, encoding: .utf8) else {
            throw .notText
        }
        return text
    }
}
