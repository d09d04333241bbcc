/// Why a ``StampIDClient`` returned no ID; its message is safe to show.
public struct StampClientError: Error, Sendable, CustomStringConvertible {
    /// Stable codes for client errors.
    public enum Code: String, Sendable {
        /// Every attempt failed; ``StampClientError/attempts`` says why each did.
        case allNodesFailed = "all-nodes-failed"
        /// A node rejected the request as invalid (a 4xx such as a shard out of range); not retried.
        case invalidRequest = "invalid-request"
        /// The calling task was cancelled.
        case cancelled
        /// The retry budget was spent, so a retry that the policy allowed was not made.
        case retryBudgetExhausted = "retry-budget-exhausted"
        /// The client has no node to ask.
        case noNodes = "no-nodes"
    }

    /// One failed attempt: which node, and why.
    public struct Attempt: Sendable, CustomStringConvertible {
        /// The node's base URL.
        public let node: String
        /// Why the attempt failed.
        public let failure: TransportFailure

        public var description: String { "\(node): \(failure)" }
    }

    public let code: Code
    /// What went wrong, safe to show.
    public let message: String
    /// Every failed attempt of the request, oldest first.
    public let attempts: [Attempt]

    init(_ code: Code, _ message: String, attempts: [Attempt] = []) {
        self.code = code
        self.message = message
        self.attempts = attempts
    }

    public var description: String {
        attempts.isEmpty ? "\(code.rawValue): \(message)" : "\(code.rawValue): \(message) [\(attempts.map(\.description).joined(separator: "; "))]"
    }
}
