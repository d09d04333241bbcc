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

/// The timing of an open-loop run: at each wake-up, which requests of a schedule are due, and
/// when to wake next. A pure value that a runner feeds the time it woke at; the runner sleeps and
/// starts the requests.
///
/// With a `wakeInterval` the next wake-up is never sooner than that after the last one, and every
/// request due by then is handed out together, so that a high rate costs one wake-up per interval
/// instead of one per request; each request keeps its own due instant, from which latency counts.
public struct OpenLoopPacer<Instant: InstantProtocol>: Sendable where Instant.Duration == Duration {
    /// A request due: its slot and the instant it was due.
    public typealias Due = (slot: OpenLoopSchedule.Slot, due: Instant)

    public let start: Instant
    /// The least time between two wake-ups; zero wakes for each request at its time.
    public let wakeInterval: Duration
    private var schedule: OpenLoopSchedule
    private var next: OpenLoopSchedule.Slot?
    private var lastWake: Instant?

    public init(_ schedule: OpenLoopSchedule, from start: Instant, wakeInterval: Duration = .zero) {
        self.schedule = schedule
        self.start = start
        self.wakeInterval = wakeInterval
        next = self.schedule.nextSlot()
    }

    /// When to wake next: when the next request is due, but no sooner than `wakeInterval` after
    /// the last wake-up; `nil` once every request has been handed out.
    public var nextWake: Instant? {
        guard let next else { return nil }
        let due = start.advanced(by: next.offset)
        guard let lastWake else { return due }
        return max(due, lastWake.advanced(by: wakeInterval))
    }

    /// The requests due by `now`, in schedule order: what a runner that woke at `now` starts.
    public mutating func wake(at now: Instant) -> [Due] {
        lastWake = now
        var due: [Due] = []
        while let slot = next, start.advanced(by: slot.offset) <= now {
            due.append((slot, start.advanced(by: slot.offset)))
            next = schedule.nextSlot()
        }
        return due
    }
}

/// Starts the requests of a schedule at their times on a clock, each in a task of its own, and
/// bounds how many are in flight.
///
/// A request whose time has come is started then even when earlier ones have not been answered
/// (open loop), so that a slow answer cannot hide the queue behind it; a run that wakes late
/// starts every request already due at once. A request due while `inFlightLimit` are in flight
/// is not started: a driver that cannot keep up would otherwise queue without bound. The
/// wake-ups are an ``OpenLoopPacer``'s.
public final class OpenLoopRunner<C: Clock>: Sendable where C.Duration == Duration {
    public let clock: C
    public let inFlightLimit: Int
    /// The least time between two wake-ups (see ``OpenLoopPacer``).
    public let wakeInterval: Duration
    private let running = Atomic<Int>(0)

    public init(clock: C, inFlightLimit: Int, wakeInterval: Duration = .zero) {
        self.clock = clock
        self.inFlightLimit = inFlightLimit
        self.wakeInterval = wakeInterval
    }

    /// Requests started and not yet finished.
    public var inFlight: Int { running.load(ordering: .relaxed) }

    /// Runs `schedule` from `start`, calling `request` for each due slot with its due instant, or
    /// `notStarted` when too many are in flight; returns when every started request has finished.
    /// Cancellation stops the schedule; the requests already started are waited for.
    public func run(
        _ schedule: OpenLoopSchedule,
        from start: C.Instant,
        request: @escaping @Sendable (OpenLoopSchedule.Slot, C.Instant) async -> Void,
        notStarted: (OpenLoopSchedule.Slot) -> Void
    ) async {
        var pacer = OpenLoopPacer(schedule, from: start, wakeInterval: wakeInterval)
        await withDiscardingTaskGroup { group in
            while let wake = pacer.nextWake {
                if wake > clock.now {
                    do {
                        try await clock.sleep(until: wake, tolerance: nil)
                    } catch {
                        break
                    }
                }
                for (slot, due) in pacer.wake(at: clock.now) {
                    guard running.load(ordering: .relaxed) < inFlightLimit else {
                        notStarted(slot)
                        continue
                    }
                    running.add(1, ordering: .relaxed)
                    group.addTask {
                        await request(slot, due)
                        self.running.subtract(1, ordering: .relaxed)
                    }
                }
            }
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
