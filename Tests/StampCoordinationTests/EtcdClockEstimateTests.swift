@testable import StampCoordinationEtcd
import Testing

/// ``EtcdStoreClock``: the members' clock learnt from whole-second `Date` headers, against a
/// simulated member whose clock runs `offset` ms ahead of this machine's monotonic clock.
@Suite("etcd clock estimate")
struct EtcdClockEstimateTests {
    /// A member answering at monotonic millisecond `answered`: the second its `Date` header names.
    static func memberSecond(offset: Int64, at answered: Int64) -> Int64 {
        (answered + offset) / 1000
    }

    /// Sends probes when the clock asks, each answered 1 ms after it was sent and received 2 ms
    /// after, from monotonic millisecond `start`; returns the monotonic millisecond after the last.
    /// Checks after each answer that the estimate still holds the true offset.
    static func probe(_ clock: EtcdStoreClock, offset: Int64, from start: Int64, count: Int) -> Int64 {
        var now = start
        for _ in 0..<count {
            now += clock.probeDelay(now: now)
            clock.observe(sent: now, answered: now + 2, unixSecond: memberSecond(offset: offset, at: now + 1))
            now += 2
            let known = clock.offset(now: now)!
            #expect(known.low <= offset && offset <= known.high, "the estimate \(known) lost the offset \(offset)")
        }
        return now
    }

    @Test("with no answer yet the store's now is the wall clock, and a probe is due at once")
    func unknownAtFirst() {
        let clock = EtcdStoreClock()
        #expect(clock.storeNow(wall: 998_000, monotonic: 5_000) == 998_000)
        #expect(clock.probeDelay(now: 5_000) == 0)
    }

    @Test("one answer moves the wall clock into the member's second, as far as it lies outside it")
    func oneAnswerBoundsToASecond() {
        let clock = EtcdStoreClock()
        clock.observe(sent: 500, answered: 500, unixSecond: 1_000)
        #expect(clock.storeNow(wall: 1_000_500, monotonic: 500) == 1_000_500)
        #expect(clock.storeNow(wall: 1_003_200, monotonic: 500) == 1_000_999)
        #expect(clock.storeNow(wall: 998_000, monotonic: 500) == 1_000_000)
    }

    @Test("probes at the times it asks for narrow the offset to the round trip, whatever the phase", arguments: [0, 1, 249, 500, 751, 900, 999] as [Int64])
    func probesNarrowTheOffset(phase: Int64) {
        let clock = EtcdStoreClock()
        let offset = 1_764_000_000_000 + phase
        let now = Self.probe(clock, offset: offset, from: 10_000, count: 12)
        let known = clock.offset(now: now)!
        #expect(known.high - known.low <= EtcdStoreClock.narrowEnough, "still \(known.high - known.low) ms wide")
        #expect(clock.probeDelay(now: now) == EtcdStoreClock.refreshMilliseconds)
    }

    /// The nemesis's fault: a node's wall clock stepped back 1 s, renewing at a point of the members'
    /// second (900 ms in) where one answer alone shows only 100 ms of the skew.
    @Test("a wall clock stepped back 1 s shows its whole skew once the offset is narrow")
    func aStepBackShowsWhole() {
        let offset: Int64 = 1_764_000_000_000
        let learnt = EtcdStoreClock()
        let probed = Self.probe(learnt, offset: offset, from: 10_000, count: 12)
        // The next renewal at least a second later, when the members' clock is 900 ms into its second.
        let renewal = (probed + 1_000) / 1_000 * 1_000 + 900
        let stepped = renewal + offset - 1_000

        let fresh = EtcdStoreClock()
        fresh.observe(sent: renewal, answered: renewal, unixSecond: Self.memberSecond(offset: offset, at: renewal))
        #expect(fresh.storeNow(wall: stepped, monotonic: renewal) - stepped == 100, "one answer sees 100 ms of the step")

        learnt.observe(sent: renewal, answered: renewal, unixSecond: Self.memberSecond(offset: offset, at: renewal))
        let seen = learnt.storeNow(wall: stepped, monotonic: renewal) - stepped
        #expect(seen >= 1_000 - EtcdStoreClock.narrowEnough && seen <= 1_000, "the step seen as \(seen) ms")
    }

    @Test("an answer that contradicts the estimate starts it over from that answer")
    func aContradictionStartsOver() {
        let clock = EtcdStoreClock()
        let offset: Int64 = 1_764_000_000_300
        let now = Self.probe(clock, offset: offset, from: 10_000, count: 12)
        // The member's clock steps 5 s ahead.
        clock.observe(sent: now, answered: now + 2, unixSecond: Self.memberSecond(offset: offset + 5_000, at: now + 1))
        let known = clock.offset(now: now + 2)!
        #expect(known.low <= offset + 5_000 && offset + 5_000 <= known.high)
        #expect(known.high - known.low > 900, "one answer knows the offset to a second")
        #expect(clock.probeDelay(now: now + 2) < 1_200, "probing resumes")
    }

    @Test("what is known widens by 100 ppm of the time since")
    func theEstimateWidensWithTime() {
        let clock = EtcdStoreClock()
        clock.observe(sent: 1_000, answered: 1_000, unixSecond: 5)
        let at = clock.offset(now: 1_000)!
        let later = clock.offset(now: 101_000)!
        #expect(later.low == at.low - 10 && later.high == at.high + 10)
    }
}
