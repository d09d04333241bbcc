import Synchronization

/// When each request of an open-loop run is due: request `i` of a stream at `rate` per second is
/// due `i / rate` seconds after the start, whatever the answers.
///
/// Each time is computed from its index, so rounding never drifts the schedule. Several streams
/// (writes and reads, say) are merged in time order; at the same time the lower stream goes first.
public struct OpenLoopSchedule: Sendable {
    /// One due request.
    public struct Slot: Sendable, Equatable {
        /// The stream's index in ``OpenLoopSchedule/rates``.
        public let stream: Int
        /// The request's index within its stream.
        public let index: Int64
        /// When it is due, from the start of the run.
        public let offset: Duration
    }

    /// Requests per second of each stream; a rate of 0 (or less) starts nothing.
    public let rates: [Double]
    /// How long the schedule runs: requests due at or after it are not started.
    public let duration: Duration
    private var next: [Int64]

    public init(rates: [Double], duration: Duration) {
        self.rates = rates
        self.duration = duration
        next = Array(repeating: 0, count: rates.count)
    }

    /// The next due request, or `nil` once every stream has reached the end.
    public mutating func nextSlot() -> Slot? {
        var earliest: (stream: Int, offset: Duration)?
        for (stream, rate) in rates.enumerated() where rate > 0 {
            let offset = Duration.nanoseconds(Int64((Double(next[stream]) * 1e9 / rate).rounded()))
            if offset < duration, earliest.map({ offset < $0.offset }) ?? true {
                earliest = (stream, offset)
            }
        }
        guard let earliest else { return nil }
        defer { next[earliest.stream] += 1 }
        return Slot(stream: earliest.stream, index: next[earliest.stream], offset: earliest.offset)
    }
}

/// Starts the requests of a schedule at their times on a clock and bounds how many are in flight.
///
/// A request whose time has come is started then even when earlier ones have not been answered
/// (open loop), so that a slow answer cannot hide the queue behind it; a run that wakes late
/// starts every request already due at once. A request due while `inFlightLimit` are in flight
/// is not started: a driver that cannot keep up would otherwise queue without bound. With a
/// `wakeInterval` the runner wakes at most once per interval and starts together every request
/// due by then, so that a high rate costs one wake-up per interval instead of one per request
/// (latency still counts from each request's due instant).
public final class OpenLoopRunner<C: Clock>: Sendable where C.Duration == Duration {
    /// A request to start: its slot and the instant it was due.
    public typealias Due = (slot: OpenLoopSchedule.Slot, due: C.Instant)

    public let clock: C
    public let inFlightLimit: Int
    /// The least time between two wake-ups; zero wakes for each request at its time.
    public let wakeInterval: Duration

    private struct State {
        var running = 0
        var idle: CheckedContinuation<Void, Never>?
    }

    private let state = Mutex(State())

    public init(clock: C, inFlightLimit: Int, wakeInterval: Duration = .zero) {
        self.clock = clock
        self.inFlightLimit = inFlightLimit
        self.wakeInterval = wakeInterval
    }

    /// Requests started and not yet finished.
    public var inFlight: Int { state.withLock { $0.running } }

    /// Runs `schedule` from `start`, calling `request`, each in a task of its own, for each due slot
    /// with its due instant, or `notStarted` when too many are in flight; returns when every
    /// started request has finished. Cancellation stops the schedule; the requests already
    /// started are waited for.
    public func run(
        _ schedule: OpenLoopSchedule,
        from start: C.Instant,
        request: @escaping @Sendable (OpenLoopSchedule.Slot, C.Instant) async -> Void,
        notStarted: (OpenLoopSchedule.Slot) -> Void
    ) async {
        await withDiscardingTaskGroup { group in
            await drive(schedule, from: start, notStarted: notStarted) { due in
                for (slot, instant) in due {
                    group.addTask {
                        await request(slot, instant)
                        self.finished()
                    }
                }
            }
        }
    }

    /// Runs `schedule` from `start`, handing `startRequests` the requests due at each wake-up,
    /// or `notStarted` each request due while too many are in flight; each request handed over
    /// counts as in flight until ``finished()`` is called for it, and the run returns when every
    /// one has finished. For a driver that starts requests without a task each. Cancellation
    /// stops the schedule; the requests already started are waited for.
    public func run(
        _ schedule: OpenLoopSchedule,
        from start: C.Instant,
        startRequests: ([Due]) -> Void,
        notStarted: (OpenLoopSchedule.Slot) -> Void
    ) async {
        await drive(schedule, from: start, notStarted: notStarted, startRequests: startRequests)
        await withCheckedContinuation { continuation in
            let idle = state.withLock { state in
                if state.running == 0 { return true }
                state.idle = continuation
                return false
            }
            if idle { continuation.resume() }
        }
    }

    /// Ends one request handed over by ``run(_:from:startRequests:notStarted:)``.
    public func finished() {
        let idle = state.withLock { state in
            state.running -= 1
            defer { if state.running == 0 { state.idle = nil } }
            return state.running == 0 ? state.idle : nil
        }
        idle?.resume()
    }

    private func drive(_ schedule: OpenLoopSchedule, from start: C.Instant, notStarted: (OpenLoopSchedule.Slot) -> Void, startRequests: ([Due]) -> Void) async {
        var schedule = schedule
        var next = schedule.nextSlot()
        var lastWake: C.Instant?
        while let first = next {
            var wake = start.advanced(by: first.offset)
            if let lastWake, lastWake.advanced(by: wakeInterval) > wake { wake = lastWake.advanced(by: wakeInterval) }
            if wake > clock.now {
                do {
                    try await clock.sleep(until: wake, tolerance: nil)
                } catch {
                    break
                }
            }
            let now = clock.now
            lastWake = now
            var due: [Due] = []
            while let slot = next, start.advanced(by: slot.offset) <= now {
                let started = state.withLock { state in
                    guard state.running < inFlightLimit else { return false }
                    state.running += 1
                    return true
                }
                if started {
                    due.append((slot, start.advanced(by: slot.offset)))
                } else {
                    notStarted(slot)
                }
                next = schedule.nextSlot()
            }
            if !due.isEmpty { startRequests(due) }
        }
    }
}

/// Calls a body once a second on a clock, for progress lines.
public enum ProgressTicker {
    /// Calls `body` with the whole seconds since `start` at each second after it, until `last`
    /// (when given) is passed or the task is cancelled.
    public static func run<C: Clock>(clock: C, from start: C.Instant, until last: C.Instant? = nil, _ body: (Int) -> Void) async where C.Duration == Duration {
        var tick = start
        while true {
            tick = tick.advanced(by: .seconds(1))
            if let last, tick > last { return }
            do {
                try await clock.sleep(until: tick, tolerance: nil)
            } catch {
                return
            }
            body(Int((start.duration(to: tick) / .seconds(1)).rounded()))
        }
    }
}
