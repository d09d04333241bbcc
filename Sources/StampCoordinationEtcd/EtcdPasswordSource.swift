#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import StampCoordination
import StampCore

/// Where the password of an etcd location's user comes from: never the location itself.
///
/// `STAMP_ETCD_PASSWORD` holds the password; without it, `STAMP_ETCD_PASSWORD_FILE` names a file
/// whose text (one trailing line break dropped) is the password. A file that other users may read
/// or write is refused, as a PostgreSQL password file is.
public struct EtcdPasswordSource: Sendable {
    /// The variable that holds the password.
    public static let passwordVariable = "STAMP_ETCD_PASSWORD"
    /// The variable that names the password file.
    public static let passwordFileVariable = "STAMP_ETCD_PASSWORD_FILE"

    /// Where a password came from, so that a refusal of it can say which to correct.
    public enum Origin: Sendable, Hashable, CustomStringConvertible {
        /// The `STAMP_ETCD_PASSWORD` environment variable.
        case environment
        /// The file `STAMP_ETCD_PASSWORD_FILE` names.
        case passwordFile(path: String)

        public var description: String {
            switch self {
            case .environment: EtcdPasswordSource.passwordVariable
            case .passwordFile(let path): "the password file \(path)"
            }
        }
    }

    /// The environment variables read.
    public var environment: [String: String]

    public init(environment: [String: String]) {
        self.environment = environment
    }

    /// The variables of this process.
    public static var process: EtcdPasswordSource {
        EtcdPasswordSource(environment: ProcessInfo.processInfo.environment)
    }

    /// The password and where it came from; `nil` when neither variable is set.
    public func password() throws(CoordinationError) -> (password: String, origin: Origin)? {
        if let password = environment[Self.passwordVariable] { return (password, .environment) }
        guard let path = environment[Self.passwordFileVariable], !path.isEmpty else { return nil }
        var text = try Self.readPrivateFile(path)
        if text.hasSuffix("\r\n") {
            text.removeLast(2)
        } else if text.hasSuffix("\n") {
            text.removeLast()
        }
        return (text, .passwordFile(path: path))
    }

    /// The text of the file at `path`, which only its owner may read or write.
    private static func readPrivateFile(_ path: String) throws(CoordinationError) -> String {
        do {
            return try PrivateFile.text(at: path)
        } catch {
            throw CoordinationError(.invalidConfiguration, "the etcd password file \(path) \(error.reason)")
        }
    }
}
