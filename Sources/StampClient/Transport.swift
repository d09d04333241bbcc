import StampCore

/// How the client talks to one node; ``HTTPTransport`` is the real one, tests use fakes.
///
/// A transport makes one request and reports what happened; timeouts, retries and node choice
/// are the client's.
public protocol StampTransport: Sendable {
    /// Asks `node` for `count` IDs of `shard`, each greater than `after`.
    func fetchIDs(node: String, shard: Int, count: Int, after: StampID?) async throws(TransportFailure) -> [StampID]
    /// Reads `GET /v1/cluster` from `node`: the addresses of the nodes holding leases.
    func fetchCluster(node: String) async throws(TransportFailure) -> [String]
    /// Whether `node` answers `GET /health/ready` with 200.
    func probe(node: String) async -> Bool
    /// Closes connections; called once the client is done.
    func shutdown() async
}

/// Why one request to one node failed, and whether another attempt may succeed.
public struct TransportFailure: Error, Sendable, Equatable, CustomStringConvertible {
    /// Stable kinds of failure.
    public enum Kind: String, Sendable {
        /// No answer within the attempt timeout.
        case timeout
        /// The connection could not be made, or broke.
        case connection
        /// The node answered 503: it cannot issue now.
        case unavailable
        /// The node answered 409 after-too-far-ahead: another node may serve it.
        case afterTooFarAhead = "after-too-far-ahead"
        /// The node answered with another 5xx.
        case serverError = "server-error"
        /// The node answered 4xx for a bad request.
        case invalidRequest = "invalid-request"
        /// The answer could not be read, or broke the order the client asked for.
        case invalidResponse = "invalid-response"
    }

    public let kind: Kind
    /// The HTTP status, when the node answered.
    public let status: Int?
    /// A short explanation, safe to show (a problem's `detail`, or the kind of I/O error).
    public let detail: String

    public init(_ kind: Kind, status: Int? = nil, detail: String) {
        self.kind = kind
        self.status = status
        self.detail = detail
    }

    /// Whether another attempt, on this node or another, may succeed.
    public var isRetryable: Bool { kind != .invalidRequest }

    public var description: String {
        if let status { return "\(kind.rawValue) (HTTP \(status)): \(detail)" }
        return "\(kind.rawValue): \(detail)"
    }
}
