import PostgresNIO
import StampCoordination

extension PostgresCoordinationStore {
    /// Reads a connection configuration from `postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE`.
    ///
    /// The scheme may also be `postgresql`. User, password and database may be percent-encoded;
    /// an IPv6 host goes in brackets. TLS is disabled. Error messages never repeat the password.
    public static func configuration(url: String) throws(CoordinationError) -> PostgresClient.Configuration {
        guard let schemeEnd = url.range(of: "://"), ["postgres", "postgresql"].contains(url[..<schemeEnd.lowerBound]) else {
            throw invalid("it must start with postgres:// or postgresql://")
        }
        let rest = url[schemeEnd.upperBound...]
        guard !rest.contains("?"), !rest.contains("#") else {
            throw invalid("query parameters and fragments are not supported")
        }
        guard let at = rest.lastIndex(of: "@") else { throw invalid("the user is missing (expected USER@HOST)") }
        let credentials = rest[..<at]
        let location = rest[rest.index(after: at)...]
        guard let slash = location.firstIndex(of: "/") else { throw invalid("the database is missing (expected HOST/DATABASE)") }
        let database = try decode(location[location.index(after: slash)...], part: "database")
        guard !database.isEmpty else { throw invalid("the database is missing (expected HOST/DATABASE)") }

        let username: String
        var password: String?
        if let colon = credentials.firstIndex(of: ":") {
            username = try decode(credentials[..<colon], part: "user")
            password = try decode(credentials[credentials.index(after: colon)...], part: "password")
        } else {
            username = try decode(credentials, part: "user")
        }
        guard !username.isEmpty else { throw invalid("the user is missing (expected USER@HOST)") }

        let (host, port) = try hostAndPort(location[..<slash])
        return PostgresClient.Configuration(host: host, port: port, username: username, password: password, database: database, tls: .disable)
    }

    /// Splits `HOST[:PORT]` or `[IPV6]:PORT`; the port defaults to 5432.
    private static func hostAndPort(_ authority: Substring) throws(CoordinationError) -> (String, Int) {
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
        guard !host.isEmpty else { throw invalid("the host is missing") }
        guard let portText else { return (String(host), 5432) }
        guard let port = Int(portText), (1...65_535).contains(port) else {
            throw invalid("the port must be a number from 1 to 65535")
        }
        return (String(host), port)
    }

    /// Undoes percent-encoding in one part of the URL.
    private static func decode(_ text: Substring, part: String) throws(CoordinationError) -> String {
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

    private static func hexadecimalValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        default: nil
        }
    }

    private static func invalid(_ reason: String) -> CoordinationError {
        CoordinationError(.invalidLocation, "invalid PostgreSQL URL: \(reason)")
    }
}
