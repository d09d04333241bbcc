import StampCoordination

/// An etcd cluster as a coordination store location,
/// `etcd://[USER@]HOST[:PORT][,HOST[:PORT]...][/PREFIX]` or `etcds://...[?cacert=PATH]`, read into its parts.
///
/// This is the one reader of etcd locations. The endpoints are members of one cluster, tried in
/// turn; the port defaults to 2379 and an IPv6 host goes in brackets. `etcds` talks TLS to every
/// member and checks its certificate against the authorities of `cacert` (a PEM file), else the
/// system's; `etcd` talks plain HTTP. The prefix (default `stamp`) is the key space of one cluster
/// of generator nodes, so several clusters can share one etcd. A user's password never goes in the
/// location (it would show in process lists and shell histories): it comes from
/// ``EtcdPasswordSource``. A refusal's message never repeats the location or any part of it.
public struct EtcdLocation: Sendable, Hashable, CustomStringConvertible {
    /// The port an endpoint without one names: etcd's client port.
    public static let defaultPort = 2379
    /// The key prefix of a location without one.
    public static let defaultPrefix = "stamp"

    /// One member's client address.
    public struct Endpoint: Sendable, Hashable, CustomStringConvertible {
        /// A host name or address; an IPv6 address without its brackets.
        public var host: String
        public var port: Int

        public init(host: String, port: Int = EtcdLocation.defaultPort) {
            self.host = host
            self.port = port
        }

        /// `HOST:PORT`, with an IPv6 host in brackets.
        public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
    }

    /// The members to talk to, in the order they are tried first.
    public var endpoints: [Endpoint]
    /// The key prefix, without leading or trailing `/`.
    public var prefix: String
    /// The etcd user to authenticate as; `nil` when the cluster has authentication off.
    public var username: String?
    /// Whether every member is reached over TLS.
    public var usesTLS: Bool
    /// The PEM file of the certificate authorities that TLS trusts; `nil` trusts the system's.
    public var caFile: String?

    public init(endpoints: [Endpoint], prefix: String = Self.defaultPrefix, username: String? = nil, usesTLS: Bool = false, caFile: String? = nil) {
        self.endpoints = endpoints
        self.prefix = prefix
        self.username = username
        self.usesTLS = usesTLS
        self.caFile = caFile
    }

    /// Whether `text` names an etcd location (by its scheme), so that callers know which reader it is for.
    public static func isEtcdLocation(_ text: String) -> Bool {
        text.hasPrefix("etcd://") || text.hasPrefix("etcds://")
    }

    /// Reads `etcd://[USER@]HOST[:PORT][,HOST[:PORT]...][/PREFIX]` or `etcds://...[?cacert=PATH]`.
    public init(parsing text: String) throws(CoordinationError) {
        let rest: Substring
        if text.hasPrefix("etcd://") {
            usesTLS = false
            rest = text.dropFirst("etcd://".count)
        } else if text.hasPrefix("etcds://") {
            usesTLS = true
            rest = text.dropFirst("etcds://".count)
        } else {
            throw Self.invalid("it must start with etcd:// or etcds://")
        }
        guard !rest.contains("#") else { throw Self.invalid("fragments are not supported") }
        let queryStart = rest.firstIndex(of: "?")
        let beforeQuery = rest[..<(queryStart ?? rest.endIndex)]
        let pathStart = beforeQuery.firstIndex(of: "/")
        var authority = beforeQuery[..<(pathStart ?? beforeQuery.endIndex)]

        username = nil
        if let at = authority.lastIndex(of: "@") {
            let user = authority[..<at]
            guard !user.contains(":") else {
                throw Self.invalid("it must not hold a password: set STAMP_ETCD_PASSWORD or STAMP_ETCD_PASSWORD_FILE")
            }
            guard !user.isEmpty else { throw Self.invalid("the user before @ is empty") }
            username = try Self.decoded(user, part: "the user")
            authority = authority[authority.index(after: at)...]
        }
        endpoints = try authority.split(separator: ",", omittingEmptySubsequences: false).map { (part) throws(CoordinationError) in
            try Self.endpoint(part)
        }

        if let pathStart {
            let path = beforeQuery[beforeQuery.index(after: pathStart)...]
            prefix = path.isEmpty ? Self.defaultPrefix : try Self.prefix(path)
        } else {
            prefix = Self.defaultPrefix
        }

        caFile = nil
        if let queryStart {
            for parameter in rest[rest.index(after: queryStart)...].split(separator: "&") {
                guard let equals = parameter.firstIndex(of: "="), parameter[..<equals] == "cacert" else {
                    throw Self.invalid("the only query parameter is cacert")
                }
                guard usesTLS else { throw Self.invalid("cacert needs TLS: use etcds://") }
                let path = try Self.decoded(parameter[parameter.index(after: equals)...], part: "cacert")
                guard !path.isEmpty else { throw Self.invalid("cacert is empty") }
                caFile = path
            }
        }
    }

    /// The location as it can be written, with its user and every part it was read from.
    public var description: String {
        let user = username.map { "\(Self.escaped($0))@" } ?? ""
        let query = caFile.map { "?cacert=\(Self.escaped($0))" } ?? ""
        return "\(usesTLS ? "etcds" : "etcd")://\(user)\(endpoints.map(\.description).joined(separator: ","))/\(prefix)\(query)"
    }

    /// The base URL of `endpoint`'s JSON gateway.
    func baseURL(of endpoint: Endpoint) -> String {
        "\(usesTLS ? "https" : "http")://\(endpoint)"
    }

    private static func endpoint(_ text: Substring) throws(CoordinationError) -> Endpoint {
        guard !text.isEmpty else { throw Self.invalid("it needs at least one HOST[:PORT], and no empty one between commas") }
        let host: Substring
        let portText: Substring?
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else { throw Self.invalid("an IPv6 host lacks its closing bracket") }
            host = text[text.index(after: text.startIndex)..<close]
            let after = text[text.index(after: close)...]
            if after.isEmpty {
                portText = nil
            } else {
                guard after.hasPrefix(":") else { throw Self.invalid("a bracketed host must be followed by :PORT or nothing") }
                portText = after.dropFirst()
            }
        } else if let colon = text.firstIndex(of: ":") {
            host = text[..<colon]
            portText = text[text.index(after: colon)...]
        } else {
            host = text
            portText = nil
        }
        guard !host.isEmpty, host.allSatisfy({ $0.isLetter || $0.isNumber || "-._:".contains($0) }), host.allSatisfy(\.isASCII) else {
            throw Self.invalid("a host must be a name or an address")
        }
        guard let portText else { return Endpoint(host: String(host)) }
        guard let port = Int(portText), (1...65535).contains(port), portText.allSatisfy(\.isASCII) else {
            throw Self.invalid("a port must be a number from 1 to 65535")
        }
        return Endpoint(host: String(host), port: port)
    }

    private static func prefix(_ path: Substring) throws(CoordinationError) -> String {
        let trimmed = path.hasSuffix("/") ? path.dropLast() : path
        let segments = trimmed.split(separator: "/", omittingEmptySubsequences: false)
        guard segments.allSatisfy({ segment in
            !segment.isEmpty && segment.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || "-_.".contains($0)) }
        }) else {
            throw Self.invalid("the prefix must be segments of letters, digits, -, _ and . between single slashes")
        }
        return String(trimmed)
    }

    /// A refusal of a location, saying what the form is and what is wrong, never repeating the text.
    private static func invalid(_ reason: String) -> CoordinationError {
        CoordinationError(
            .invalidLocation,
            "an etcd location must be etcd://[USER@]HOST[:PORT][,HOST[:PORT]...][/PREFIX] or etcds://...[?cacert=PATH]: \(reason)"
        )
    }

    /// `text` with the characters that end or break a part percent-encoded.
    private static func escaped(_ text: String) -> String {
        var escaped = ""
        for character in text {
            switch character {
            case "%": escaped += "%25"
            case " ": escaped += "%20"
            case "@": escaped += "%40"
            case ":": escaped += "%3A"
            case "&": escaped += "%26"
            case "#": escaped += "%23"
            case "?": escaped += "%3F"
            default: escaped.append(character)
            }
        }
        return escaped
    }

    /// `text` with its percent-encodings undone; a malformed one, a space or a line break is refused.
    private static func decoded(_ text: Substring, part: String) throws(CoordinationError) -> String {
        var bytes: [UInt8] = []
        var iterator = text.utf8.makeIterator()
        while let byte = iterator.next() {
            guard byte != UInt8(ascii: " "), byte != UInt8(ascii: "\n"), byte != UInt8(ascii: "\r") else {
                throw Self.invalid("\(part) holds a space or a line break; percent-encode it")
            }
            guard byte == UInt8(ascii: "%") else {
                bytes.append(byte)
                continue
            }
            guard let high = iterator.next().flatMap(Self.hexValue), let low = iterator.next().flatMap(Self.hexValue) else {
                throw Self.invalid("\(part) has a malformed percent-encoding")
            }
            bytes.append(high << 4 | low)
        }
        guard let decoded = String(validating: bytes, as: UTF8.self) else {
            throw Self.invalid("\(part) is not UTF-8 once decoded")
        }
        return decoded
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}
