#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import StampCore
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Where the password of a PostgreSQL URL without one comes from, by libpq's conventions.
///
/// `PGPASSWORD` is the password of every such connection. Without it, the password file is read:
/// the file `PGPASSFILE` names, else `~/.pgpass`. Each of its lines is
/// `HOST:PORT:DATABASE:USER:PASSWORD`, where `*` in the first four fields matches anything and `\`
/// escapes a `:` or `\` (an unescaped `:` ends the password); the first line that matches the URL gives the password, and lines starting
/// with `#` are comments. A missing file gives no password; a file that other users may read or
/// write is refused, where libpq would only ignore it.
public struct PostgresPasswordSource: Sendable {
    /// Where a password came from, so that a refusal of it can say which to correct.
    public enum Origin: Sendable, Hashable, CustomStringConvertible {
        /// The URL itself, which only code can give: locations that people write refuse passwords.
        case url
        /// The `PGPASSWORD` environment variable.
        case environment
        /// A line of this password file.
        case passwordFile(path: String)

        public var description: String {
            switch self {
            case .url: "the URL"
            case .environment: "PGPASSWORD"
            case .passwordFile(let path): "the password file \(path)"
            }
        }
    }

    /// The environment variables read: `PGPASSWORD`, `PGPASSFILE` and `HOME`.
    public var environment: [String: String]

    public init(environment: [String: String]) {
        self.environment = environment
    }

    /// The variables of this process.
    public static var process: PostgresPasswordSource {
        PostgresPasswordSource(environment: ProcessInfo.processInfo.environment)
    }

    /// The password for `url` and where it came from: the URL's own, `PGPASSWORD`, or the password
    /// file's first matching line; `nil` when none of them has one.
    public func password(for url: PostgresURL) throws(DatabaseError) -> (password: String, origin: Origin)? {
        if let password = url.password { return (password, .url) }
        if let password = environment["PGPASSWORD"] { return (password, .environment) }
        guard let path = passwordFilePath else { return nil }
        guard let text = try Self.readPasswordFile(path) else { return nil }
        return Self.password(inPasswordFile: text, for: url).map { ($0, .passwordFile(path: path)) }
    }

    /// `PGPASSFILE`, else `.pgpass` in `HOME`.
    var passwordFilePath: String? {
        if let path = environment["PGPASSFILE"], !path.isEmpty { return path }
        guard let home = environment["HOME"], !home.isEmpty else { return nil }
        return home.hasSuffix("/") ? home + ".pgpass" : home + "/.pgpass"
    }

    /// The first password in a password file's `text` whose line matches `url`.
    static func password(inPasswordFile text: String, for url: PostgresURL) -> String? {
        let wanted = [url.host, String(url.port), url.database, url.username]
        for line in text.split(whereSeparator: \.isNewline) where !line.hasPrefix("#") {
            let fields = splitFields(line)
            guard fields.count >= 5 else { continue }
            if zip(fields, wanted).allSatisfy({ field, value in field == "*" || field == value }) {
                return fields[4]
            }
        }
        return nil
    }

    /// Splits a password file line at its unescaped colons, undoing the escapes.
    private static func splitFields(_ line: Substring) -> [String] {
        var fields: [String] = []
        var field = ""
        var escaped = false
        for character in line {
            if escaped {
                field.append(character)
                escaped = false
            } else if character == "\\" {
                escaped = true
            } else if character == ":" {
                fields.append(field)
                field = ""
            } else {
                field.append(character)
            }
        }
        fields.append(field)
        return fields
    }

    /// The text of the password file at `path`; `nil` when there is none.
    private static func readPasswordFile(_ path: String) throws(DatabaseError) -> String? {
        do {
            return try PrivateFile.text(at: path)
        } catch .missing {
            return nil
        } catch {
            throw DatabaseError(.invalidConfiguration, "the PostgreSQL password file \(path) \(error.reason)")
        }
    }
}
