/// Why a database could not be named, opened or used.
///
/// The message never repeats a location's text, which may be a mistyped URL with a password in it,
/// nor SQL or bound values.
public struct DatabaseError: Error, Sendable, CustomStringConvertible {
    /// Stable codes for database errors.
    public enum Code: String, Sendable {
        /// A location or URL that cannot be read.
        case invalidLocation = "invalid-location"
        /// The database could not be opened, or its connections are closed.
        case unavailable
        /// A file the connection needs, such as a password file or a certificate file, cannot be used.
        case invalidConfiguration = "invalid-configuration"
        /// The TLS connection to the server failed: it offers no TLS, or its certificate is not trusted.
        case tlsFailed = "tls-failed"
        /// The server refused the user or its password.
        case authenticationFailed = "authentication-failed"
    }

    public let code: Code
    /// What is wrong, safe to show.
    public let message: String
    /// The underlying error, for logs at debug level.
    public let cause: (any Error & Sendable)?

    public init(_ code: Code, _ message: String, cause: (any Error & Sendable)? = nil) {
        self.code = code
        self.message = message
        self.cause = cause
    }

    public var description: String { message }
}
