import NIOCore
import Synchronization

/// Starts the requests of a schedule from timers on one event loop, with no task per request and
/// no thread hand-off: for a driver whose requests are callbacks on that event loop.
///
/// It keeps the rules of ``OpenLoopRunner``: each request starts at its time whatever the answers,
/// a late wake-up starts every request already due, a request due while `inFlightLimit` are in
/// flight is not started, and the wake-ups are an ``OpenLoopPacer``'s. Each request started
/// counts as in flight until its driver calls ``finished()``, on the event loop.
public final class EventLoopOpenLoop: @unchecked Sendable {
    public let eventLoop: any EventLoop
    public let inFlightLimit: Int
    /// The least time between two wake-ups (see ``OpenLoopPacer``).
    public let wakeInterval: Duration

    private let running = Atomic<Int>(0)
    // The rest is used on the event loop only.
    private var timer: Scheduled<Void>?
    private var scheduleEnded = false
    private var ended: EventLoopPromise<Void>?

    public init(eventLoop: any EventLoop, inFlightLimit: Int, wakeInterval: Duration) {
        self.eventLoop = eventLoop
        self.inFlightLimit = inFlightLimit
        self.wakeInterval = wakeInterval
    }

    /// Requests started and not yet finished; from any thread.
    public var inFlight: Int { running.load(ordering: .relaxed) }

    /// Runs `schedule` from `start`, calling, on the event loop, `request` for each due slot with
    /// its due instant, or `notStarted` when too many are in flight; returns once the schedule has
    /// ended and every started request has finished. Cancellation stops the schedule; the
    /// requests already started are waited for.
    public func run(
        _ schedule: OpenLoopSchedule,
        from start: ContinuousClock.Instant,
        request: @escaping @Sendable (OpenLoopSchedule.Slot, ContinuousClock.Instant) -> Void,
        notStarted: @escaping @Sendable (OpenLoopSchedule.Slot) -> Void
    ) async {
        let ended = eventLoop.makePromise(of: Void.self)
        let pacer = OpenLoopPacer(schedule, from: start, wakeInterval: wakeInterval)
        eventLoop.execute {
            self.ended = ended
            self.wake(pacer, request: request, notStarted: notStarted)
        }
        await withTaskCancellationHandler {
            try? await ended.futureResult.get()
        } onCancel: {
            self.eventLoop.execute { self.endSchedule() }
        }
    }

    /// Ends one request started by ``run(_:from:request:notStarted:)``; on the event loop.
    public func finished() {
        eventLoop.assertInEventLoop()
        running.subtract(1, ordering: .relaxed)
        endIfIdle()
    }

    private func wake(
        _ pacer: OpenLoopPacer<ContinuousClock.Instant>,
        request: @escaping @Sendable (OpenLoopSchedule.Slot, ContinuousClock.Instant) -> Void,
        notStarted: @escaping @Sendable (OpenLoopSchedule.Slot) -> Void
    ) {
        guard !scheduleEnded else { return }
        var pacer = pacer
        let now = ContinuousClock.now
        if let wake = pacer.nextWake, wake <= now {
            for (slot, due) in pacer.wake(at: now) {
                guard running.load(ordering: .relaxed) < inFlightLimit else {
                    notStarted(slot)
                    continue
                }
                running.add(1, ordering: .relaxed)
                request(slot, due)
            }
        }
        guard let wake = pacer.nextWake else {
            endSchedule()
            return
        }
        let next = pacer
        timer = eventLoop.scheduleTask(in: TimeAmount(ContinuousClock.now.duration(to: wake))) {
            self.wake(next, request: request, notStarted: notStarted)
        }
    }

    private func endSchedule() {
        scheduleEnded = true
        timer?.cancel()
        timer = nil
        endIfIdle()
    }

    private func endIfIdle() {
        guard scheduleEnded, running.load(ordering: .relaxed) == 0, let ended else { return }
        self.ended = nil
        ended.succeed()
    }
}
