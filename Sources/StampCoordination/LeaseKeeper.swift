import StampCore

/// The decisions of a generator node about its lease and reservation, as a pure state machine.
///
/// The shell asks ``nextAction(now:logicalUnixMilliseconds:)`` what to do, performs it against the
/// coordination store, and reports the outcome. Nothing here reads a clock, sleeps or does I/O, so
/// tests drive it with any instants they like.
///
/// The rules, from DESIGN.md: claim a node ID; persist a reservation before issuing and extend it
/// ahead of need; renew every `ttl/3`; count the lease as valid for `ttl - margin` from the moment
/// the last successful claim or renewal was *sent*; after that, or when the store says another
/// process owns the node ID, stop issuing and claim again. While the node's wall clock is further
/// from the store's than `maxClockSkew` (measured at each claim and renewal), issue nothing and
/// persist no reservation made from that clock; keep renewing, and resume once it is back. A
/// reservation also never starts further ahead of the store's clock, as estimated from the last
/// confirmation, than that bound plus twice the node's maximum lead (the furthest a node's logical
/// time runs ahead of the store's on its own: the first ID of a node ID claimed with no stored
/// reservation): a clock that jumped ahead since the last renewal is found out only by the next one,
/// which must not persist a reservation from it.
public struct LeaseKeeper<Instant: InstantProtocol>: Sendable where Instant.Duration == Duration, Instant: Sendable {
    /// What the shell should do next.
    public enum Action: Sendable, Equatable {
        /// Claim a node ID.
        case claim
        /// Renew the lease on `node` and raise its reservation to `reservedUntilUnixMilliseconds`.
        case renew(node: Int, reservedUntilUnixMilliseconds: Int64)
        /// Nothing to do before `until`.
        case wait(until: Instant)
    }

    /// The lease held, if any.
    public private(set) var lease: NodeLease?
    /// The first Unix millisecond this holder may issue at: the reservation the node ID had when claimed.
    public private(set) var floorUnixMilliseconds: Int64 = 0
    /// The reservation persisted for this holder; IDs stay below it. Equal to the floor until the
    /// first renewal after a claim lands.
    public private(set) var reservedUntilUnixMilliseconds: Int64 = 0
    /// Until when the lease may be used for issuing, on the monotonic clock.
    public private(set) var validUntil: Instant?
    /// How far the node's wall clock was from the store's at the last measurement, in milliseconds:
    /// positive when the node's runs ahead, 0 when none was measured or none could be told apart.
    public private(set) var clockSkewMilliseconds: Int64 = 0

    public let configuration: LeaseConfiguration
    /// The node's maximum lead of logical time over its wall clock, in milliseconds.
    public let maxLeadMilliseconds: Int64
    private var confirmedAt: Instant?
    /// The store's clock when the last confirmation was answered, in Unix milliseconds.
    private var storeUnixMillisecondsAtConfirmation: Int64 = 0
    private var retryAt: Instant?

    public init(configuration: LeaseConfiguration, maxLeadMilliseconds: Int64 = 0) {
        self.configuration = configuration
        self.maxLeadMilliseconds = maxLeadMilliseconds
    }

    /// Whether IDs may be issued at `now`: a lease is held, confirmed recently enough, a
    /// reservation above the floor has been persisted, and the clock skew is within its bound.
    public func canIssue(at now: Instant) -> Bool {
        guard lease != nil, let validUntil else { return false }
        return now < validUntil && reservedUntilUnixMilliseconds > floorUnixMilliseconds && !isClockSkewed
    }

    /// Whether the last measured clock skew is beyond ``LeaseConfiguration/maxClockSkew``.
    public var isClockSkewed: Bool {
        abs(clockSkewMilliseconds) > configuration.maxClockSkew.wholeMilliseconds
    }

    /// Decides the next step at monotonic `now`, given the node's logical time in Unix milliseconds
    /// (the later of its wall clock and the time of its last ID).
    public mutating func nextAction(now: Instant, logicalUnixMilliseconds: Int64) -> Action {
        if let validUntil, now >= validUntil {
            // Not confirmed for ttl - margin: the lease may already belong to someone else.
            dropLease()
        }
        if let retryAt, now < retryAt {
            return .wait(until: lease.flatMap { _ in validUntil }.map { min($0, retryAt) } ?? retryAt)
        }
        guard let lease, let confirmedAt, let validUntil else { return .claim }

        let renewalDue = confirmedAt.advanced(by: configuration.renewInterval)
        if isClockSkewed {
            // Keep the lease and measure again at each renewal, but persist nothing from this clock.
            if now >= renewalDue { return .renew(node: lease.node, reservedUntilUnixMilliseconds: reservedUntilUnixMilliseconds) }
            return .wait(until: min(renewalDue, validUntil))
        }
        let window = configuration.reservationWindow.wholeMilliseconds
        // The store's clock now is at most its reading at the last confirmation plus the time since it was sent.
        let storeNow = storeUnixMillisecondsAtConfirmation + confirmedAt.duration(to: now).wholeMilliseconds
        let furthest = storeNow + configuration.maxClockSkew.wholeMilliseconds + 2 * maxLeadMilliseconds
        let base = max(min(logicalUnixMilliseconds, furthest), floorUnixMilliseconds)
        let headroom = reservedUntilUnixMilliseconds - base
        if now >= renewalDue || headroom <= window / 2 {
            return .renew(node: lease.node, reservedUntilUnixMilliseconds: base + window)
        }
        // Wake when the renewal is due, or when logical time (at least wall speed) would eat half the window.
        let headroomWake = now.advanced(by: .milliseconds(headroom - window / 2))
        return .wait(until: min(renewalDue, headroomWake, validUntil))
    }

    /// A claim sent at `sentAt` returned `lease`.
    public mutating func claimSucceeded(_ lease: NodeLease, sentAt: Instant) {
        self.lease = lease
        floorUnixMilliseconds = lease.reservedUntilUnixMilliseconds
        reservedUntilUnixMilliseconds = lease.reservedUntilUnixMilliseconds
        confirm(lease, sentAt: sentAt)
    }

    /// A claim failed, or found every node ID held; try again after the retry interval.
    public mutating func claimFailed(at now: Instant) {
        retryAt = now.advanced(by: configuration.retryInterval)
    }

    /// A renewal sent at `sentAt` returned `lease`.
    public mutating func renewSucceeded(_ lease: NodeLease, sentAt: Instant) {
        guard self.lease?.node == lease.node else { return }
        self.lease = lease
        reservedUntilUnixMilliseconds = max(reservedUntilUnixMilliseconds, lease.reservedUntilUnixMilliseconds)
        confirm(lease, sentAt: sentAt)
    }

    /// A claim or renewal measured the node's wall clock `milliseconds` from the store's (positive: ahead).
    public mutating func clockSkewMeasured(_ milliseconds: Int64) {
        clockSkewMilliseconds = milliseconds
    }

    /// The skew of a wall clock that read `wallBefore` and `wallAfter` around a store call answered at
    /// `storeUnixMilliseconds` on the store's clock: how far the store's time lies outside the
    /// readings, positive when the wall clock runs ahead, 0 when it lies between them.
    public static func clockSkew(storeUnixMilliseconds: Int64, wallBefore: Int64, wallAfter: Int64) -> Int64 {
        if storeUnixMilliseconds < wallBefore { return wallBefore - storeUnixMilliseconds }
        if storeUnixMilliseconds > wallAfter { return wallAfter - storeUnixMilliseconds }
        return 0
    }

    /// A renewal could not reach the store; keep the lease until it runs out and retry.
    public mutating func renewFailed(at now: Instant) {
        retryAt = now.advanced(by: configuration.retryInterval)
    }

    /// The store said another process owns the node ID: stop issuing now and claim again.
    public mutating func ownershipLost() {
        dropLease()
    }

    /// The lease was released on shutdown.
    public mutating func released() {
        dropLease()
    }

    private mutating func confirm(_ lease: NodeLease, sentAt: Instant) {
        if let confirmedAt, sentAt < confirmedAt { return }
        confirmedAt = sentAt
        storeUnixMillisecondsAtConfirmation = lease.expiresAtUnixMilliseconds - configuration.ttl.wholeMilliseconds
        validUntil = sentAt.advanced(by: configuration.issuingPeriod)
        retryAt = nil
    }

    private mutating func dropLease() {
        lease = nil
        confirmedAt = nil
        validUntil = nil
        floorUnixMilliseconds = 0
        reservedUntilUnixMilliseconds = 0
    }
}
