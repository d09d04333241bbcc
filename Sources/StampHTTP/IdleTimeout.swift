import NIOCore

/// Decides when an HTTP/1 connection has been idle long enough to close, from the request parts
/// it read and the answers it wrote: the rule of Hummingbird's `HTTPConnectionStateHandler`, kept
/// by ``EventLoopRouteHandler`` for every request of its connection, answered in the pipeline or
/// by the router.
///
/// A request read whole whose answer is not written keeps the connection open however long the
/// answer takes; a request whose head or body is still arriving does not, so a client that stops
/// sending is closed on.
struct IdleTimeout {
    /// What to do when the timer set for ``deadline`` fires.
    enum Decision: Equatable {
        /// Close the connection.
        case close
        /// Set the timer again for this deadline.
        case wait(until: NIODeadline)
        /// Set no timer until an answer is written (``answered(at:)``).
        case waitForAnswer
    }

    let timeout: TimeAmount
    /// The last time a request part was read, or the last answer was written with no other request in progress.
    private var lastActivity: NIODeadline
    /// Requests whose head was read and whose answer is not written yet.
    private var requestsInProgress = 0
    /// Whether a request's head was read and its end was not.
    private var readingRequest = false

    init(timeout: TimeAmount, now: NIODeadline) {
        self.timeout = timeout
        lastActivity = now
    }

    /// When the connection is idle long enough if nothing happens before.
    var deadline: NIODeadline { lastActivity + timeout }

    /// A request's head was read.
    mutating func requestStarted(at now: NIODeadline) {
        lastActivity = now
        requestsInProgress += 1
        readingRequest = true
    }

    /// A part of a request's body was read.
    mutating func bodyRead(at now: NIODeadline) {
        lastActivity = now
    }

    /// A request's end was read.
    mutating func requestEnded(at now: NIODeadline) {
        lastActivity = now
        readingRequest = false
    }

    /// An answer's end was written.
    mutating func answered(at now: NIODeadline) {
        requestsInProgress = max(0, requestsInProgress - 1)
        if requestsInProgress == 0 { lastActivity = now }
    }

    /// What to do when the timer fires at `now`.
    func fired(at now: NIODeadline) -> Decision {
        if !readingRequest, requestsInProgress > 0 { return .waitForAnswer }
        return now >= deadline ? .close : .wait(until: deadline)
    }
}
