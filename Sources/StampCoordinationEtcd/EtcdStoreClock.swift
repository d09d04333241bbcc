import Synchronization

/// What this process knows of the etcd cluster's clock: the offset between the members' wall
/// clock and this machine's monotonic clock, narrowed from the `Date` headers of their answers.
///
/// etcd shows no clock but that header, which names whole seconds. One answer says only that the
/// member's clock was in a given second at some instant between sending and answering: the offset
/// is known to a second. Answers that arrive at different points of the members' second narrow it,
/// since each must agree with all the others: the answers whose second changed, or did not, just
/// before or after an instant place the members' second boundaries, and so the offset, to within
/// the requests' round trips. ``probeDelay(now:)`` says when a request would halve what is still
/// unknown; the store sends one then, in the background.
///
/// The offset is taken against the monotonic clock, so that a step of this machine's wall clock
/// leaves it alone: a node whose clock is stepped back 1 s sees a 1 s skew at its next renewal,
/// whichever point of the members' second that renewal meets. An answer that contradicts what is
/// known (a member's clock stepped, or another member's clock differs) starts over from that
/// answer alone. What is known widens by ``driftAllowance`` with time, so that two clocks running
/// at slightly different rates never make the estimate claim more than there is.
final class EtcdStoreClock: Sendable {
    /// How much the offset may move each second the clocks run: a generous bound on the rate
    /// difference of two disciplined clocks (100 ppm).
    static let driftAllowance = 0.000_1
    /// Below this uncertainty (in milliseconds) the estimate is narrow enough for skew checks.
    static let narrowEnough: Int64 = 20
    /// How long the store waits between probes once the offset is narrow.
    static let refreshMilliseconds: Int64 = 30_000

    /// The members' wall clock minus this machine's monotonic clock, in milliseconds, as an
    /// interval that holds it; `at` is the monotonic millisecond it was last narrowed.
    struct Offset: Equatable {
        var low: Int64
        var high: Int64
        var at: Int64
    }

    private let state = Mutex<Offset?>(nil)

    /// The offset as known at monotonic millisecond `now`, widened for the drift since it was narrowed.
    func offset(now: Int64) -> Offset? {
        state.withLock { $0.map { Self.widened($0, to: now) } }
    }

    /// Takes in an answer dated `unixSecond` by its member, to a request sent at monotonic
    /// millisecond `sent` and answered by `answered`.
    func observe(sent: Int64, answered: Int64, unixSecond: Int64) {
        let seen = Offset(low: unixSecond * 1000 - answered, high: unixSecond * 1000 + 999 - sent, at: answered)
        state.withLock { known in
            guard let held = known.map({ Self.widened($0, to: answered) }) else {
                known = seen
                return
            }
            let low = max(held.low, seen.low)
            let high = min(held.high, seen.high)
            known = low <= high ? Offset(low: low, high: high, at: answered) : seen
        }
    }

    /// The members' now, in Unix milliseconds, at monotonic millisecond `monotonic`, when this
    /// machine's wall clock read `wall` then: the wall reading where the estimate allows it, else
    /// the nearest time the estimate allows. Without an estimate, the wall reading.
    func storeNow(wall: Int64, monotonic: Int64) -> Int64 {
        guard let offset = offset(now: monotonic) else { return wall }
        return min(max(wall, monotonic + offset.low), monotonic + offset.high)
    }

    /// How long from monotonic millisecond `now` until a request should reach a member so that its
    /// answer halves the uncertainty: at the middle of the span where a second of the members' may
    /// begin. Once the uncertainty is narrow, a probe every ``refreshMilliseconds`` keeps it so.
    func probeDelay(now: Int64) -> Int64 {
        guard let offset = offset(now: now) else { return 0 }
        guard offset.high - offset.low > Self.narrowEnough else { return Self.refreshMilliseconds }
        // A member's second begins at monotonic times t with t + offset ≡ 0 (mod 1000); for the
        // offset's middle value, the next such t at least 100 ms ahead.
        let middle = (offset.low + offset.high) / 2
        let ahead = now + 100 + middle
        let boundary = (ahead / 1000 + 1) * 1000 - middle
        return boundary - now
    }

    private static func widened(_ offset: Offset, to now: Int64) -> Offset {
        let drift = Int64((Double(max(0, now - offset.at)) * driftAllowance).rounded(.up))
        return Offset(low: offset.low - drift, high: offset.high + drift, at: offset.at)
    }
}
