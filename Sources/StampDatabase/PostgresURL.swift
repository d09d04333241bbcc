import PostgresNIO

/// A PostgreSQL connection URL, `postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE`, read into its parts.
///
/// This is the one reader of PostgreSQL URLs: every store configures its connections from it.
/// The scheme may also be `postgresql`. Every part may be percent-encoded, and must be for a `/`,
/// `?`, `#` or space in it or a `:` in the user; an IPv6 host goes in brackets; the port defaults
/// to 5432. Query parameters and fragments are refused, so are malformed percent-encodings and
/// characters a URL cannot hold. A refusal's message never repeats the URL or any part of it, and
/// ``description`` hides the password.
public struct PostgresURL: Sendable, Hashable, CustomStringConvertible {
    /// The port a URL without one names.
    public static let defaultPort = 5432

    public var username: String
    public var password: String?
    /// A host name or address; an IPv6 address without its brackets.
    public var host: String
    public var port: Int
    public var database: String

    public init(username: String, password: String? = nil, host: String, port: Int = Self.defaultPort, database: String) {
        self.username = username
        self.password = password
        self.host = host
        self.port = port
        self.database = database
    }

    /// Reads `postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE` (or `postgresql://`).
    public init(parsing url: String) throws(DatabaseError) {
        guard let schemeEnd = url.range(of: "://"), ["postgres", "postgresql"].contains(url[..<schemeEnd.lowerBound]) else {
            throw Self.invalid("it must start with postgres:// or postgresql://")
        }
        let rest = url[schemeEnd.upperBound...]
        guard !rest.contains("?"), !rest.contains("#") else {
            throw Self.invalid("query parameters and fragments are not supported")
        }
        guard rest.utf8.allSatisfy(Self.isAllowed) else {
            throw Self.invalid("it holds a character a URL cannot hold unencoded")
        }
        guard let slash = rest.firstIndex(of: "/") else {
            throw Self.invalid("the database is missing (expected HOST/DATABASE)")
        }
        let authority = rest[..<slash]
        let path = rest[rest.index(after: slash)...]
        guard let at = authority.lastIndex(of: "@") else {
            throw Self.invalid(
                path.contains("@")
                    ? "the user is missing (expected USER@HOST; a / in the password must be written %2F)"
                    : "the user is missing (expected USER@HOST)"
            )
        }
        guard !path.contains("/") else {
            throw Self.invalid("the path must be the database alone (expected HOST/DATABASE)")
        }
        let database = try Self.decode(path, part: "database")
        guard !database.isEmpty else { throw Self.invalid("the database is missing (expected HOST/DATABASE)") }

        let credentials = authority[..<at]
        if let colon = credentials.firstIndex(of: ":") {
            username = try Self.decode(credentials[..<colon], part: "user")
            password = try Self.decode(credentials[credentials.index(after: colon)...], part: "password")
        } else {
            username = try Self.decode(credentials, part: "user")
            password = nil
        }
        guard !username.isEmpty else { throw Self.invalid("the user is missing (expected USER@HOST)") }
        (host, port) = try Self.hostAndPort(authority[authority.index(after: at)...])
        self.database = database
    }

    /// The configuration of a connection pool to this database; TLS is disabled.
    public var configuration: PostgresClient.Configuration {
        PostgresClient.Configuration(host: host, port: port, username: username, password: password, database: database, tls: .disable)
    }

    /// The URL, percent-encoded where needed and password included: `postgres://USER[:PASSWORD]@HOST:PORT/DATABASE`.
    public var text: String {
        render(password: password.map { Self.encode($0) })
    }

    /// The URL with the password, if any, shown as `***`: safe to log.
    public var description: String {
        render(password: password.map { _ in "***" })
    }

    private func render(password: String?) -> String {
        var text = "postgres://" + Self.encode(username)
        if let password { text += ":" + password }
        text += "@" + (host.contains(":") ? "[\(Self.encode(host, keeping: ":"))]" : Self.encode(host))
        return text + ":\(port)/" + Self.encode(database)
    }

    /// Splits `HOST[:PORT]` or `[IPV6][:PORT]`; the port defaults to 5432.
    private static func hostAndPort(_ authority: Substring) throws(DatabaseError) -> (String, Int) {
        let host: Substring
        let portText: Substring?
        if authority.hasPrefix("[") {
            guard let close = authority.firstIndex(of: "]") else { throw invalid("the IPv6 host lacks its closing bracket") }
            host = authority[authority.index(after: authority.startIndex)..<close]
            let afterHost = authority[authority.index(after: close)...]
            guard afterHost.isEmpty || afterHost.hasPrefix(":") else { throw invalid("a port must follow the IPv6 host after a colon") }
            portText = afterHost.isEmpty ? nil : afterHost.dropFirst()
        } else if let colon = authority.firstIndex(of: ":") {
            host = authority[..<colon]
            portText = authority[authority.index(after: colon)...]
        } else {
            host = authority
            portText = nil
        }
        let decodedHost = try decode(host, part: "host")
        guard !decodedHost.isEmpty else { throw invalid("the host is missing") }
        guard let portText else { return (decodedHost, defaultPort) }
        guard !portText.isEmpty, portText.utf8.allSatisfy({ (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) }),
              let port = Int(portText), (1...65_535).contains(port)
        else {
            throw invalid("the port must be a number from 1 to 65535")
        }
        return (decodedHost, port)
    }

    /// Undoes percent-encoding in one part of the URL.
    private static func decode(_ text: Substring, part: String) throws(DatabaseError) -> String {
        var bytes: [UInt8] = []
        var iterator = text.utf8.makeIterator()
        while let byte = iterator.next() {
            guard byte == UInt8(ascii: "%") else {
                bytes.append(byte)
                continue
            }
            guard
                let high = iterator.next().flatMap(hexadecimalValue),
                let low = iterator.next().flatMap(hexadecimalValue)
            else {
                throw invalid("the \(part) has a malformed percent-encoding")
            }
            bytes.append(high << 4 | low)
        }
        guard let decoded = String(validating: bytes, as: UTF8.self) else {
            throw invalid("the \(part) is not valid UTF-8 once decoded")
        }
        return decoded
    }

    /// Percent-encodes every byte of `part` but the unreserved characters and `keeping`.
    private static func encode(_ part: String, keeping kept: Unicode.Scalar? = nil) -> String {
        var encoded = ""
        for byte in part.utf8 {
            if isUnreserved(byte) || kept.map({ UInt8(ascii: $0) == byte }) == true {
                encoded.unicodeScalars.append(Unicode.Scalar(byte))
            } else {
                encoded += "%" + String(byte >> 4, radix: 16, uppercase: true) + String(byte & 0xF, radix: 16, uppercase: true)
            }
        }
        return encoded
    }

    private static func hexadecimalValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        default: nil
        }
    }

    /// RFC 3986's unreserved characters: letters, digits, `-`, `.`, `_` and `~`.
    private static func isUnreserved(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            true
        default:
            "-._~".utf8.contains(byte)
        }
    }

    /// Whether a URL may hold `byte` unencoded after its scheme: unreserved characters, RFC 3986's
    /// sub-delimiters, and `:`, `@`, `/`, `[`, `]` and `%`.
    private static func isAllowed(_ byte: UInt8) -> Bool {
        isUnreserved(byte) || "!$&'()*+,;=:@/[]%".utf8.contains(byte)
    }

    private static func invalid(_ reason: String) -> DatabaseError {
        DatabaseError(.invalidLocation, "invalid PostgreSQL URL: \(reason)")
    }
}
