/// Why a demo or load run, or one of the processes it needs, could not go on; its message is safe to show.
public struct LoadTestingError: Error, Sendable, CustomStringConvertible {
    /// Stable codes for the failures of this module.
    public enum Code: String, Sendable {
        /// A program the run needs is not installed (PostgreSQL's tools, runuser).
        case toolMissing = "tool-missing"
        /// A process could not be started, or ended when it should not have (with its status and the end of its log).
        case processFailed = "process-failed"
        /// A process did not become ready in time.
        case notReady = "not-ready"
        /// The run's folder, files, sockets or databases could not be set up.
        case setupFailed = "setup-failed"
        /// A history file, node log or fault schedule for the checker could not be read.
        case badHistory = "bad-history"
    }

    public let code: Code
    /// What went wrong, safe to show: no secrets, at most the end of a process's own log.
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
