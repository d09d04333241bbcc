import StampCoordination
import StampTesting
import Testing

@Suite("Lease keeper")
struct LeaseKeeperTests {
    typealias Instant = ManualClock.Instant
    static let wall: Int64 = 1_767_225_600_000

    func at(_ milliseconds: Int64) -> Instant { Instant(offset: .milliseconds(milliseconds)) }

    func lease(node: Int = 2, reservedUntil: Int64) -> NodeLease {
        NodeLease(node: node, owner: "me", address: nil, expiresAtUnixMilliseconds: Self.wall + 10_000, reservedUntilUnixMilliseconds: reservedUntil)
    }

    @Test func claimThenReserveBeforeIssuing() {
        var keeper = LeaseKeeper<Instant>(configuration: LeaseConfiguration())
        #expect(keeper.nextAction(now: at(0), logicalUnixMilliseconds: Self.wall) == .claim)
        keeper.claimSucceeded(lease(reservedUntil: Self.wall + 1500), sentAt: at(0))
        #expect(!keeper.canIssue(at: at(1)), "no reservation above the floor has been persisted yet")
        // The reservation starts at the floor (the previous owner's) and reaches a window beyond.
        #expect(keeper.nextAction(now: at(1), logicalUnixMilliseconds: Self.wall) == .renew(node: 2, reservedUntilUnixMilliseconds: Self.wall + 4500))
        keeper.renewSucceeded(lease(reservedUntil: Self.wall + 4500), sentAt: at(1))
        #expect(keeper.canIssue(at: at(2)))
        #expect(keeper.floorUnixMilliseconds == Self.wall + 1500)
        #expect(keeper.reservedUntilUnixMilliseconds == Self.wall + 4500)
    }

    @Test func renewsEveryThirdOfTheTTLAndAheadOfNeed() {
        var keeper = LeaseKeeper<Instant>(configuration: LeaseConfiguration())
        keeper.claimSucceeded(lease(reservedUntil: 0), sentAt: at(0))
        keeper.renewSucceeded(lease(reservedUntil: Self.wall + 3000), sentAt: at(0))
        // Headroom 3000 ms; the reservation is extended when it falls under half the window.
        guard case .wait(let until) = keeper.nextAction(now: at(0), logicalUnixMilliseconds: Self.wall) else {
            Issue.record("expected a wait")
            return
        }
        #expect(until == at(1500))
        #expect(keeper.nextAction(now: at(1500), logicalUnixMilliseconds: Self.wall + 1500) == .renew(node: 2, reservedUntilUnixMilliseconds: Self.wall + 4500))
        // With the clock standing still, the renewal falls due after ttl/3.
        var idle = LeaseKeeper<Instant>(configuration: LeaseConfiguration())
        idle.claimSucceeded(lease(reservedUntil: 0), sentAt: at(0))
        idle.renewSucceeded(lease(reservedUntil: Self.wall + 3000), sentAt: at(0))
        #expect(idle.nextAction(now: at(3334), logicalUnixMilliseconds: Self.wall) == .renew(node: 2, reservedUntilUnixMilliseconds: Self.wall + 3000))
    }

    @Test func aClockThatJumpedAheadSinceTheLastRenewalReservesNothingFromIt() {
        var keeper = LeaseKeeper<Instant>(configuration: LeaseConfiguration(), maxLeadMilliseconds: 1000)
        keeper.claimSucceeded(lease(reservedUntil: 0), sentAt: at(0))
        keeper.renewSucceeded(lease(reservedUntil: Self.wall + 3000), sentAt: at(0))
        // An hour ahead at the next renewal, 3334 ms later: the skew is measured only by that renewal, so
        // the reservation it persists starts no further ahead of the store's clock (the lease's expiry
        // less the TTL, plus the time since) than the skew bound and twice the maximum lead.
        let hourAhead = Self.wall + 3334 + 3_600_000
        #expect(keeper.nextAction(now: at(3334), logicalUnixMilliseconds: hourAhead) == .renew(node: 2, reservedUntilUnixMilliseconds: Self.wall + 3334 + 250 + 2000 + 3000))
        // Within the bound, the node's own logical time decides.
        #expect(keeper.nextAction(now: at(3334), logicalUnixMilliseconds: Self.wall + 3334 + 2200) == .renew(node: 2, reservedUntilUnixMilliseconds: Self.wall + 3334 + 2200 + 3000))
    }

    @Test func failedRenewalsStopIssuingAtTTLMinusMargin() {
        var keeper = LeaseKeeper<Instant>(configuration: LeaseConfiguration())
        keeper.claimSucceeded(lease(reservedUntil: 0), sentAt: at(0))
        keeper.renewSucceeded(lease(reservedUntil: Self.wall + 60_000), sentAt: at(100))
        keeper.renewFailed(at: at(3500))
        #expect(keeper.nextAction(now: at(3600), logicalUnixMilliseconds: Self.wall) == .wait(until: at(4000)))
        #expect(keeper.canIssue(at: at(8099)))
        #expect(!keeper.canIssue(at: at(8100)), "valid for ttl - margin from the send time of the last success")
        #expect(keeper.nextAction(now: at(8100), logicalUnixMilliseconds: Self.wall) == .claim)
        #expect(keeper.lease == nil)
    }

    @Test func ownershipLostStopsAtOnce() {
        var keeper = LeaseKeeper<Instant>(configuration: LeaseConfiguration())
        keeper.claimSucceeded(lease(reservedUntil: 0), sentAt: at(0))
        keeper.renewSucceeded(lease(reservedUntil: Self.wall + 3000), sentAt: at(0))
        keeper.ownershipLost()
        #expect(!keeper.canIssue(at: at(1)))
        #expect(keeper.nextAction(now: at(1), logicalUnixMilliseconds: Self.wall) == .claim)
    }

    @Test func failedClaimsRetryAfterTheInterval() {
        var keeper = LeaseKeeper<Instant>(configuration: LeaseConfiguration(retryInterval: .milliseconds(700)))
        keeper.claimFailed(at: at(50))
        #expect(keeper.nextAction(now: at(100), logicalUnixMilliseconds: Self.wall) == .wait(until: at(750)))
        #expect(keeper.nextAction(now: at(750), logicalUnixMilliseconds: Self.wall) == .claim)
    }

    @Test func lateSuccessDoesNotExtendValidity() {
        var keeper = LeaseKeeper<Instant>(configuration: LeaseConfiguration())
        keeper.claimSucceeded(lease(reservedUntil: 0), sentAt: at(0))
        keeper.renewSucceeded(lease(reservedUntil: Self.wall + 3000), sentAt: at(5000))
        keeper.renewSucceeded(lease(reservedUntil: Self.wall + 2000), sentAt: at(4000))
        #expect(keeper.validUntil == at(13_000))
        #expect(keeper.reservedUntilUnixMilliseconds == Self.wall + 3000, "a reservation is never lowered")
    }

    @Test(arguments: [
        LeaseConfiguration(ttl: .milliseconds(100)),
        LeaseConfiguration(margin: .zero),
        LeaseConfiguration(margin: .seconds(7)),
        LeaseConfiguration(reservationWindow: .milliseconds(10)),
        LeaseConfiguration(retryInterval: .seconds(9)),
    ])
    func unworkableDurationsAreRejected(configuration: LeaseConfiguration) {
        #expect(throws: CoordinationError.self) { try configuration.validate() }
    }
}
