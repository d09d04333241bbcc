/// What a client sends to record a change: one field of one user, its old and new value, who
/// changed it and why.
public struct AuditEventInput: Sendable, Equatable {
    public var field: String
    /// The value before the change; `nil` when the field had none.
    public var before: String?
    /// The value after the change; `nil` when the change removed it.
    public var after: String?
    public var actor: String
    public var reason: String

    public init(field: String, before: String?, after: String?, actor: String, reason: String = "") {
        self.field = field
        self.before = before
        self.after = after
        self.actor = actor
        self.reason = reason
    }
}

/// The bounds on every input of the audit API.
public enum AuditLimits {
    /// User IDs: 1 to 128 of `A-Z a-z 0-9 . _ : @ -`.
    public static let maxUserLength = 128
    /// Field names: 1 to 64 of `a-z 0-9 . _ -`, starting with a letter.
    public static let maxFieldLength = 64
    /// Each of `before` and `after`, in Unicode code points (as JSON Schema counts `maxLength`).
    public static let maxValueLength = 1024
    /// `actor`, in Unicode code points.
    public static let maxActorLength = 256
    /// `reason`, in Unicode code points.
    public static let maxReasonLength = 1024
    /// A request body: room for every member at its longest, each code point written as a
    /// 12-byte escaped surrogate pair.
    public static let maxBodyBytes = 64 * 1024
    /// `Idempotency-Key`: 1 to 255 visible ASCII characters.
    public static let maxIdempotencyKeyLength = 255
    /// The page size of history reads.
    public static let maxPageSize = 500
    public static let defaultPageSize = 50

    /// Checks a user ID.
    public static func validate(user: some StringProtocol) throws(AuditInputError) {
        guard (1...maxUserLength).contains(user.utf8.count),
              user.utf8.allSatisfy({ isAlphanumeric($0) || $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "_") || $0 == UInt8(ascii: ":") || $0 == UInt8(ascii: "@") || $0 == UInt8(ascii: "-") })
        else {
            throw AuditInputError(.invalidUser, "user IDs are 1 to \(maxUserLength) characters of A-Z, a-z, 0-9, '.', '_', ':', '@' and '-'")
        }
    }

    /// Checks a field name.
    public static func validate(field: some StringProtocol) throws(AuditInputError) {
        guard (1...maxFieldLength).contains(field.utf8.count), let first = field.utf8.first, (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(first),
              field.utf8.allSatisfy({ (UInt8(ascii: "a")...UInt8(ascii: "z")).contains($0) || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) || $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "_") || $0 == UInt8(ascii: "-") })
        else {
            throw AuditInputError(.invalidField, "field names are 1 to \(maxFieldLength) characters of a-z, 0-9, '.', '_' and '-', starting with a letter")
        }
    }

    /// Checks an idempotency key.
    public static func validate(idempotencyKey key: some StringProtocol) throws(AuditInputError) {
        guard (1...maxIdempotencyKeyLength).contains(key.utf8.count), key.utf8.allSatisfy({ (0x21...0x7e).contains($0) }) else {
            throw AuditInputError(.invalidIdempotencyKey, "Idempotency-Key must be 1 to \(maxIdempotencyKeyLength) visible ASCII characters")
        }
    }

    /// Checks every member of a write. Messages name the member, never its value.
    public static func validate(_ event: AuditEventInput) throws(AuditInputError) {
        try validate(field: event.field)
        for (name, value) in [("before", event.before), ("after", event.after)] {
            if let value, value.unicodeScalars.count > maxValueLength {
                throw AuditInputError(.valueTooLarge, "\(name) is limited to \(maxValueLength) characters")
            }
        }
        guard event.before != nil || event.after != nil else {
            throw AuditInputError(.invalidEvent, "before and after cannot both be null")
        }
        guard (1...maxActorLength).contains(event.actor.unicodeScalars.count) else {
            throw AuditInputError(.invalidEvent, "actor must be 1 to \(maxActorLength) characters")
        }
        guard event.reason.unicodeScalars.count <= maxReasonLength else {
            throw AuditInputError(.invalidEvent, "reason is limited to \(maxReasonLength) characters")
        }
        for (name, value) in [("before", event.before), ("after", event.after), ("actor", event.actor), ("reason", event.reason)] {
            if let value, value.unicodeScalars.contains(where: isRefusedControl) {
                throw AuditInputError(.invalidEvent, "\(name) holds a control character; text may hold tab, line feed and carriage return but no other control character (U+0000-U+001F, U+007F)")
            }
        }
    }

    /// Whether text refuses `scalar`: every C0 control character and DEL but tab, line feed and
    /// carriage return. (PostgreSQL refuses U+0000 in text; the others have no place in an audit record.)
    static func isRefusedControl(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar.value {
        case 0x09, 0x0a, 0x0d: false
        case 0x00...0x1f, 0x7f: true
        default: false
        }
    }

    private static func isAlphanumeric(_ byte: UInt8) -> Bool {
        (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte) || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(byte) || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte)
    }
}

/// Why an audit input or a stored value cannot be used. The message names what is wrong, never
/// the personal data it concerns.
public struct AuditInputError: Error, Sendable, CustomStringConvertible {
    public enum Code: String, Sendable {
        case invalidUser = "invalid-user"
        case invalidField = "invalid-field"
        case invalidEvent = "invalid-event"
        case valueTooLarge = "value-too-large"
        case invalidIdempotencyKey = "invalid-idempotency-key"
        case invalidConfiguration = "invalid-configuration"
        case sealedValueUnreadable = "sealed-value-unreadable"
    }

    public let code: Code
    public let message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "\(code.rawValue): \(message)" }
}
