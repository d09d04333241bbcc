/// An RFC 9457 problem document: the body of every error both APIs answer, as
/// `application/problem+json`.
public struct ProblemDetails: Codable, Sendable, Equatable {
    /// The problem's stable type URI, `urn:stamp:problem:<kind>` (`about:blank` when absent).
    public var type: String
    /// The reason phrase of the status.
    public var title: String?
    /// The HTTP status code.
    public var status: Int?
    /// A human-readable explanation, safe to show.
    public var detail: String?

    public init(type: ProblemType, title: String, status: Int, detail: String) {
        self.type = type.uri
        self.title = title
        self.status = status
        self.detail = detail
    }

    enum CodingKeys: String, CodingKey { case type, title, status, detail }

    /// Decodes a problem; every member is optional, as RFC 9457 allows.
    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        type = try container.decodeIfPresent(String.self, forKey: .type) ?? "about:blank"
        title = try container.decodeIfPresent(String.self, forKey: .title)
        status = try container.decodeIfPresent(Int.self, forKey: .status)
        detail = try container.decodeIfPresent(String.self, forKey: .detail)
    }

    /// Whether the document is a problem of `type`.
    public func `is`(_ type: ProblemType) -> Bool {
        self.type == type.uri
    }
}

/// A stable problem type of the Stamp APIs; its URI is `urn:stamp:problem:<raw value>`.
public struct ProblemType: RawRepresentable, Sendable, Hashable {
    public let rawValue: String

    public init(rawValue: String) {
        self.rawValue = rawValue
    }

    /// The type URI, the `type` member of a problem document.
    public var uri: String { "urn:stamp:problem:\(rawValue)" }

    // Both APIs.
    public static let invalidParameter = ProblemType(rawValue: "invalid-parameter")
    public static let invalidID = ProblemType(rawValue: "invalid-id")
    public static let unknownShard = ProblemType(rawValue: "unknown-shard")
    public static let unavailable = ProblemType(rawValue: "unavailable")
    public static let notFound = ProblemType(rawValue: "not-found")
    public static let methodNotAllowed = ProblemType(rawValue: "method-not-allowed")
    public static let bodyTooLarge = ProblemType(rawValue: "body-too-large")
    public static let httpError = ProblemType(rawValue: "http-error")
    public static let internalError = ProblemType(rawValue: "internal-error")

    // The generator node API.
    public static let notAcceptable = ProblemType(rawValue: "not-acceptable")
    public static let afterTooFarAhead = ProblemType(rawValue: "after-too-far-ahead")

    // The audit API.
    public static let unauthorized = ProblemType(rawValue: "unauthorized")
    public static let forbidden = ProblemType(rawValue: "forbidden")
    public static let invalidUser = ProblemType(rawValue: "invalid-user")
    public static let invalidField = ProblemType(rawValue: "invalid-field")
    public static let invalidEvent = ProblemType(rawValue: "invalid-event")
    public static let valueTooLarge = ProblemType(rawValue: "value-too-large")
    public static let invalidIdempotencyKey = ProblemType(rawValue: "invalid-idempotency-key")
    public static let idempotencyKeyReused = ProblemType(rawValue: "idempotency-key-reused")
    public static let invalidCursor = ProblemType(rawValue: "invalid-cursor")
    public static let unsupportedMediaType = ProblemType(rawValue: "unsupported-media-type")
}
