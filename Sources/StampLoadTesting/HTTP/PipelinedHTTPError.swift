/// Why a ``PipelinedHTTPClient`` request got no answer; its message is safe to show.
public struct PipelinedHTTPError: Error, Sendable, CustomStringConvertible {
    /// Stable codes for the ways a request can fail.
    public enum Code: String, Sendable {
        /// No connection was open to take the request.
        case notConnected = "not-connected"
        /// No answer came within the request's timeout.
        case timedOut = "timed-out"
        /// The connection closed before the answer came: the request may or may not have taken effect.
        case connectionClosed = "connection-closed"
        /// The answer's body was larger than the request allowed.
        case answerTooLarge = "answer-too-large"
        /// The server sent something HTTP/1.1 does not allow, such as an answer with no request outstanding.
        case protocolViolation = "protocol-violation"
        /// The client was closed.
        case clientClosed = "client-closed"
    }

    public let code: Code
    public let message: String
    /// The error underneath, when there is one.
    public let cause: (any Error)?

    public init(_ code: Code, _ message: String, cause: (any Error)? = nil) {
        self.code = code
        self.message = message
        self.cause = cause
    }

    public var description: String {
        cause.map { "\(code.rawValue): \(message) (\($0))" } ?? "\(code.rawValue): \(message)"
    }
}
