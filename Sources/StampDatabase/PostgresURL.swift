/// A PostgreSQL connection URL, `postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?sslmode=MODE[&sslrootcert=PATH]]`,
/// read into its parts.
///
/// This is the one reader of PostgreSQL URLs: every store configures its connections from it,
/// through ``PostgresConnectionSettings``. The scheme may also be `postgresql`. Every part may be
/// percent-encoded, and must be for a `/`, `?`, `#` or space in it, a `:` in the user or a `&` in a
/// query value; an IPv6 host goes in brackets; the port defaults to 5432. The query may set
/// `sslmode` (``SSLMode``, as libpq names them; `disable` when absent) and, with `verify-full`,
/// `sslrootcert`, the file of the certificate authorities to trust. Other query parameters and
/// fragments are refused, so are malformed percent-encodings and characters a URL cannot hold. A
/// refusal's message never repeats the URL or any part of it, and ``description`` hides the password.
public struct PostgresURL: Sendable, Hashable, CustomStringConvertible {
    /// The port a URL without one names.
    public static let defaultPort = 5432

    /// Whether and how a connection uses TLS: the URL's `sslmode`, with libpq's names and meanings.
    public enum SSLMode: String, Sendable, Hashable, CaseIterable {
        /// No TLS: the connection, password included, travels in clear.
        case disable
        /// TLS, or no connection; the server's certificate is not checked, so this guards against
        /// eavesdropping, not against a server that pretends to be another.
        case require
        /// TLS, or no connection, with a server certificate that a trusted authority signed for the
        /// URL's host: the certificate authorities of `sslrootcert`, else the system's.
        case verifyFull = "verify-full"
    }

    public var username: String
    public var password: String?
    /// A host name or address; an IPv6 address without its brackets.
    public var host: String
    public var port: Int
    public var database: String
    public var sslMode: SSLMode
    /// The PEM file of the certificate authorities a `verify-full` connection trusts; `nil` trusts the system's.
    public var sslRootCertificate: String?

    public init(
        username: String, password: String? = nil, host: String, port: Int = Self.defaultPort, database: String,
        sslMode: SSLMode = .disable, sslRootCertificate: String? = nil
    ) {
        self.username = username
        self.password = password
        self.host = host
        self.port = port
        self.database = database
        self.sslMode = sslMode
        self.sslRootCertificate = sslRootCertificate
    }

    /// Reads `postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?sslmode=MODE[&sslrootcert=PATH]]` (or `postgresql://`).
    public init(parsing url: String) throws(DatabaseError) {
        guard let schemeEnd = url.range(of: "://"), ["postgres", "postgresql"].contains(url[..<schemeEnd.lowerBound]) else {
            throw Self.invalid("it must start with postgres:// or postgresql://")
        }
        let afterScheme = url[schemeEnd.upperBound...]
        guard !afterScheme.contains("#") else {
            throw Self.invalid("fragments are not supported")
        }
        let queryStart = afterScheme.firstIndex(of: "?")
        let rest = afterScheme[..<(queryStart ?? afterScheme.endIndex)]
        let query = queryStart.map { afterScheme[afterScheme.index(after: $0)...] }
        guard rest.utf8.allSatisfy(Self.isAllowed), query?.utf8.allSatisfy(Self.isAllowed) ?? true else {
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
        (sslMode, sslRootCertificate) = try Self.tlsParameters(query)
    }

    /// Reads the query: `sslmode` and `sslrootcert`, each at most once; `sslrootcert` only with `verify-full`.
    private static func tlsParameters(_ query: Substring?) throws(DatabaseError) -> (SSLMode, String?) {
        guard let query else { return (.disable, nil) }
        var values: [String: String] = [:]
        for parameter in query.split(separator: "&", omittingEmptySubsequences: false) {
            guard let equals = parameter.firstIndex(of: "=") else {
                throw invalid("a query parameter must be NAME=VALUE")
            }
            let name = try decode(parameter[..<equals], part: "query")
            guard ["sslmode", "sslrootcert"].contains(name) else {
                throw invalid("the only query parameters are sslmode and sslrootcert")
            }
            guard values[name] == nil else { throw invalid("\(name) is given twice") }
            values[name] = try decode(parameter[parameter.index(after: equals)...], part: name)
        }
        var mode = SSLMode.disable
        if let text = values["sslmode"] {
            guard let named = SSLMode(rawValue: text) else {
                throw invalid("sslmode must be \(SSLMode.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            mode = named
        }
        let rootCertificate = values["sslrootcert"]
        if let rootCertificate {
            guard mode == .verifyFull else { throw invalid("sslrootcert is read only with sslmode=verify-full") }
            guard !rootCertificate.isEmpty else { throw invalid("sslrootcert must name a file") }
        }
        return (mode, rootCertificate)
    }

    /// The URL, percent-encoded where needed and password included:
    /// `postgres://USER[:PASSWORD]@HOST:PORT/DATABASE`, then `?sslmode=...` unless it is `disable`.
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
        text += ":\(port)/" + Self.encode(database)
        guard sslMode != .disable else { return text }
        text += "?sslmode=" + sslMode.rawValue
        if let sslRootCertificate { text += "&sslrootcert=" + Self.encode(sslRootCertificate, keeping: "/") }
        return text
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
