/// Durations of the lease and reservation protocol.
public struct LeaseConfiguration: Sendable, Hashable {
    /// How long a lease lasts after each claim or renewal (default 10 s).
    public var ttl: Duration
    /// How long before the lease's end, on the node's monotonic clock, the node stops issuing when
    /// it could not renew (default 2 s). It covers clock-rate differences and request latency.
    public var margin: Duration
    /// How far ahead of the node's logical time the persisted reservation reaches (default 3 s).
    /// A larger window survives longer store outages; a smaller one lets a restarted node
    /// start sooner, since it must begin above the previous reservation.
    public var reservationWindow: Duration
    /// Pause after a failed claim or renewal before the next attempt (default 500 ms).
    public var retryInterval: Duration
    /// How far the node's wall clock may be from the store's, measured at every claim and renewal,
    /// before the node stops issuing (default 250 ms). Keep it well under the maximum lead: a node
    /// ahead persists reservations that far ahead, which the next owner of its node ID waits for, and
    /// its IDs become floors that other nodes refuse once they are more than the maximum lead ahead.
    public var maxClockSkew: Duration

    public init(ttl: Duration = .seconds(10), margin: Duration = .seconds(2), reservationWindow: Duration = .seconds(3), retryInterval: Duration = .milliseconds(500), maxClockSkew: Duration = .milliseconds(250)) {
        self.ttl = ttl
        self.margin = margin
        self.reservationWindow = reservationWindow
        self.retryInterval = retryInterval
        self.maxClockSkew = maxClockSkew
    }

    /// How often a held lease is renewed: a third of the TTL.
    public var renewInterval: Duration { ttl / 3 }

    /// How long after a confirmed claim or renewal the node may issue: `ttl - margin`.
    public var issuingPeriod: Duration { ttl - margin }

    /// Checks that the durations make a working protocol.
    public func validate() throws(CoordinationError) {
        guard ttl >= .milliseconds(300) else { throw CoordinationError(.invalidConfiguration, "lease TTL must be at least 300 ms") }
        guard margin > .zero, margin < ttl - renewInterval else {
            throw CoordinationError(.invalidConfiguration, "lease margin must be above 0 and below two thirds of the TTL, so that a renewal can land before issuing stops")
        }
        guard reservationWindow >= .milliseconds(100) else { throw CoordinationError(.invalidConfiguration, "reservation window must be at least 100 ms") }
        guard retryInterval > .zero, retryInterval < issuingPeriod else {
            throw CoordinationError(.invalidConfiguration, "retry interval must be above 0 and below TTL minus margin")
        }
        guard maxClockSkew > .zero else { throw CoordinationError(.invalidConfiguration, "maximum clock skew must be above 0") }
    }
}
