/// A Stamp ID: a positive 64-bit integer made of time, sequence, shard and node fields.
///
/// The value alone is ordered and unique; which bits mean what is given by an ``IDLayout``.
/// IDs travel as decimal strings in JSON, because JavaScript numbers lose precision above 2^53.
public struct StampID: RawRepresentable, Hashable, Comparable, Sendable, CustomStringConvertible {
    public let rawValue: Int64

    /// Wraps a raw value; `nil` when it is negative (bit 63 set).
    public init?(rawValue: Int64) {
        guard rawValue >= 0 else { return nil }
        self.rawValue = rawValue
    }

    init(unchecked rawValue: Int64) {
        self.rawValue = rawValue
    }

    /// Composes an ID from its fields, which must fit the layout.
    public init(time: Int64, sequence: Int64, shard: Int, node: Int, layout: IDLayout) {
        precondition(time >= 0 && time <= layout.maxTime, "time out of range")
        precondition(sequence >= 0 && sequence <= layout.maxSequence, "sequence out of range")
        precondition(shard >= 0 && shard <= layout.maxShard, "shard out of range")
        precondition(node >= 0 && node <= layout.maxNode, "node out of range")
        rawValue = time << layout.timeShift | sequence << layout.sequenceShift | Int64(shard) << layout.shardShift | Int64(node)
    }

    /// Parses canonical decimal text: 1 to 19 ASCII digits, no sign, no spaces, no leading zero, below 2^63.
    public init(decimal text: some StringProtocol) throws(IDParseError) {
        let utf8 = text.utf8
        guard !utf8.isEmpty else { throw IDParseError(.empty, text) }
        guard utf8.count <= 19 else { throw IDParseError(.tooLong, text) }
        var value: Int64 = 0
        for byte in utf8 {
            guard byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") else { throw IDParseError(.notDecimal, text) }
            let (times10, overflow1) = value.multipliedReportingOverflow(by: 10)
            let (sum, overflow2) = times10.addingReportingOverflow(Int64(byte &- UInt8(ascii: "0")))
            guard !overflow1, !overflow2 else { throw IDParseError(.outOfRange, text) }
            value = sum
        }
        guard utf8.count == 1 || utf8.first != UInt8(ascii: "0") else { throw IDParseError(.leadingZero, text) }
        rawValue = value
    }

    /// Parses the 13-character fixed-width text form (Crockford base32), case-insensitively.
    public init(text: some StringProtocol) throws(IDParseError) {
        guard let value = CrockfordBase32.decode(text) else {
            throw IDParseError(text.utf8.count == CrockfordBase32.width ? .notBase32 : .wrongLength, text)
        }
        rawValue = value
    }

    /// Parses either canonical decimal or the 13-character text form.
    public init(parsing text: some StringProtocol) throws(IDParseError) {
        if text.utf8.count == CrockfordBase32.width, text.utf8.contains(where: { $0 > UInt8(ascii: "9") }) {
            try self.init(text: text)
        } else {
            try self.init(decimal: text)
        }
    }

    /// The decimal form.
    public var description: String { String(rawValue) }

    /// The 13-character fixed-width form whose lexicographic order equals numeric order.
    public var text: String { CrockfordBase32.encode(rawValue) }

    /// Splits the ID into its fields under `layout`.
    public func fields(in layout: IDLayout) -> Fields {
        Fields(
            time: rawValue >> layout.timeShift,
            sequence: (rawValue >> layout.sequenceShift) & layout.maxSequence,
            shard: Int((rawValue >> layout.shardShift) & Int64(layout.maxShard)),
            node: Int(rawValue & Int64(layout.maxNode)),
            unixMilliseconds: (rawValue >> layout.timeShift) + layout.epochUnixMilliseconds
        )
    }

    /// Lower bound of all IDs whose time and sequence are these, whatever shard and node.
    public func position(in layout: IDLayout) -> (time: Int64, sequence: Int64) {
        (rawValue >> layout.timeShift, (rawValue >> layout.sequenceShift) & layout.maxSequence)
    }

    public static func < (lhs: StampID, rhs: StampID) -> Bool { lhs.rawValue < rhs.rawValue }

    /// The fields of an ID.
    public struct Fields: Sendable, Hashable {
        /// Milliseconds since the layout's epoch.
        public let time: Int64
        public let sequence: Int64
        public let shard: Int
        public let node: Int
        /// The time field as Unix milliseconds.
        public let unixMilliseconds: Int64
    }
}

extension StampID: Codable {
    /// Decodes from a JSON string of canonical decimal digits.
    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        let text = try container.decode(String.self)
        do {
            try self.init(decimal: text)
        } catch {
            throw DecodingError.dataCorruptedError(in: container, debugDescription: error.description)
        }
    }

    /// Encodes as a JSON string of decimal digits.
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }
}

/// Why a text could not be read as a ``StampID``.
public struct IDParseError: Error, Hashable, CustomStringConvertible {
    /// Stable codes for parse errors.
    public enum Code: String, Sendable {
        case empty
        case tooLong = "too-long"
        case notDecimal = "not-decimal"
        case leadingZero = "leading-zero"
        case outOfRange = "out-of-range"
        case wrongLength = "wrong-length"
        case notBase32 = "not-base32"
    }

    public let code: Code
    /// The offending input, shortened to 40 characters so that errors stay small.
    public let input: String

    init(_ code: Code, _ input: some StringProtocol) {
        self.code = code
        self.input = input.count > 40 ? String(input.prefix(40)) + "…" : String(input)
    }

    public var description: String {
        let reason = switch code {
        case .empty: "it is empty"
        case .tooLong: "it has more than 19 digits"
        case .notDecimal: "it must contain only the digits 0-9 (no sign, spaces or other characters)"
        case .leadingZero: "it has a leading zero"
        case .outOfRange: "it is not below 2^63"
        case .wrongLength: "the text form has exactly 13 characters"
        case .notBase32: "the text form uses Crockford base32 (0-9, A-Z without I, L, O, U) and starts with 0-7"
        }
        return "'\(input)' is not a Stamp ID: \(reason)"
    }
}

enum CrockfordBase32 {
    static let width = 13
    static let alphabet = Array("0123456789ABCDEFGHJKMNPQRSTVWXYZ".utf8)
    static let values: [UInt8] = {
        var table = [UInt8](repeating: 0xFF, count: 256)
        for (index, byte) in alphabet.enumerated() {
            table[Int(byte)] = UInt8(index)
            if byte >= UInt8(ascii: "A") { table[Int(byte) + 32] = UInt8(index) }
        }
        return table
    }()

    static func encode(_ value: Int64) -> String {
        String(unsafeUninitializedCapacity: width) { buffer in
            var remaining = UInt64(bitPattern: value)
            for index in stride(from: width - 1, through: 0, by: -1) {
                buffer[index] = alphabet[Int(remaining & 31)]
                remaining >>= 5
            }
            return width
        }
    }

    static func decode(_ text: some StringProtocol) -> Int64? {
        guard text.utf8.count == width else { return nil }
        var value: UInt64 = 0
        for (index, byte) in text.utf8.enumerated() {
            let digit = values[Int(byte)]
            guard digit != 0xFF, index > 0 || digit < 8 else { return nil }
            value = value << 5 | UInt64(digit)
        }
        return Int64(bitPattern: value)
    }
}
