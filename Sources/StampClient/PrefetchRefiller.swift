import Logging
import StampCore
import Synchronization

/// Hands out IDs from the shards' prefetch buffers and keeps them filled: a call that finds too few
/// buffered IDs fetches a full buffer at once, and a take that leaves a buffer low asks ``run()``
/// for a refill in the background, one at a time.
///
/// A shard has one fill in flight at most, from a miss or from ``run()``: a call that misses while
/// one is out waits for it and then takes again, and the first call still short after it starts the
/// next. The buffers and fills are the shard ledger's, so that a take and the record of the ID as
/// returned are one step, and a miss starts or joins a fill in that same step; this type decides
/// when to fetch, answers the waiting calls and counts hits, misses, fills and discarded IDs.
final class PrefetchRefiller<C: Clock<Duration>>: Sendable where C.Instant: Sendable {
    private let policy: StampClientConfiguration.Prefetch
    private let requester: RetryingRequester<C>
    private let ledger: Locked<ShardLedger>
    private let clock: C
    /// When the refiller was made, with the client: buffers time their IDs from here.
    private let origin: C.Instant
    private let logger: Logger
    private let metrics: ClientMetrics
    private let counters: StatisticsCounters
    private let refills: AsyncStream<Int>
    private let refillContinuation: AsyncStream<Int>.Continuation
    /// The last number given to a call waiting for a fill.
    private let lastWaiterID = Atomic<UInt64>(0)

    init(policy: StampClientConfiguration.Prefetch, requester: RetryingRequester<C>, ledger: Locked<ShardLedger>, clock: C, logger: Logger, metrics: ClientMetrics, counters: StatisticsCounters) {
        self.policy = policy
        self.requester = requester
        self.ledger = ledger
        self.clock = clock
        origin = clock.now
        self.logger = logger
        self.metrics = metrics
        self.counters = counters
        (refills, refillContinuation) = AsyncStream.makeStream(of: Int.self, bufferingPolicy: .unbounded)
    }

    /// One ID of `shard` above `floor` from its buffer, or `nil` on a miss: the fast path of a single ID.
    func takeOne(shard: Int, above floor: StampID?) -> StampID? {
        let now = origin.duration(to: clock.now)
        let (id, discarded, refill) = ledger.withLock { $0.takeOne(shard: shard, above: floor, at: now, policy: policy) }
        recordTake(hits: id == nil ? 0 : 1, discarded: discarded, refill: refill, shard: shard)
        return id
    }

    /// Returns `count` ascending IDs of `shard` above `floor` from its buffer, filling the buffer
    /// first (with at least `count` IDs) as often as it holds too few, or waiting for the fill in
    /// flight when there is one.
    ///
    /// After the fill it waited for, a call takes again: one whose floor is above the IDs the fill
    /// brought skips them (they become gaps) and, still short, fills above its own floor. A fill's
    /// error is every waiting call's, but for the two that do not concern a call: the fill's caller
    /// was cancelled, or the fill's floor was too far ahead and the call's floor is lower.
    func ids(shard: Int, count: Int, above floor: StampID?) async throws(StampClientError) -> [StampID] {
        if let ids = take(count, shard: shard, above: floor) {
            return ids
        }
        metrics.prefetchMisses.increment()
        while true {
            switch await takeOrAwaitFill(count, shard: shard, above: floor) {
            case .taken(let ids):
                return ids
            case .lead:
                try await fill(shard: shard, count: max(count, policy.capacity), above: floor)
            case .waited(.takeAgain):
                continue
            case .waited(.failed(let error)):
                throw error
            }
        }
    }

    /// Refills each shard whose buffer ran low, one refill at a time, until cancelled; a refill is
    /// not made when a fill of the shard is in flight already.
    func run() async {
        for await shard in refills {
            guard ledger.withLock({ $0.beginRefill(shard: shard) }) else { continue }
            do throws(StampClientError) {
                try await fill(shard: shard, count: policy.capacity, above: nil)
            } catch {
                logger.warning("prefetch refill failed", metadata: ["stamp.shard": "\(shard)", "stamp.error": "\(error.code.rawValue)"])
            }
        }
    }

    /// Takes IDs from the shard's buffer, asking `run()` for a refill when it runs low; `nil` on a miss.
    private func take(_ count: Int, shard: Int, above floor: StampID?) -> [StampID]? {
        let now = origin.duration(to: clock.now)
        let (ids, discarded, refill) = ledger.withLock { $0.take(count, shard: shard, above: floor, at: now, policy: policy) }
        recordTake(hits: ids.count, discarded: discarded, refill: refill, shard: shard)
        return ids.isEmpty ? nil : ids
    }

    /// What a call that found too few buffered IDs does next.
    private enum Turn {
        /// The buffer holds the IDs now.
        case taken([StampID])
        /// No fill was in flight: the caller has started one and must make it.
        case lead
        /// The caller waited for the fill in flight, which has ended.
        case waited(ShardLedger.FillOutcome)
    }

    /// Takes IDs from the shard's buffer as ``take(_:shard:above:)`` does; on a miss, in the same
    /// step, starts a fill when none is in flight, and otherwise waits until the fill in flight
    /// ends. A cancelled call starts no fill.
    private func takeOrAwaitFill(_ count: Int, shard: Int, above floor: StampID?) async -> Turn {
        let now = origin.duration(to: clock.now)
        let (ids, discarded, refill, leads) = ledger.withLock { ledger in
            let (ids, discarded, refill) = ledger.take(count, shard: shard, above: floor, at: now, policy: policy)
            return (ids, discarded, refill, ids.isEmpty && !Task.isCancelled && ledger.beginFill(shard: shard, floor: floor))
        }
        recordTake(hits: ids.count, discarded: discarded, refill: refill, shard: shard)
        if !ids.isEmpty { return .taken(ids) }
        if leads { return .lead }
        return .waited(await awaitFill(shard: shard, above: floor))
    }

    /// How a call's wait for a fill began.
    private enum WaiterRegistration {
        case cancelled, noFill, waiting
    }

    /// Waits until the shard's fill in flight ends; returns at once when none is in flight (it
    /// ended already), and with an error when the call is cancelled.
    private func awaitFill(shard: Int, above floor: StampID?) async -> ShardLedger.FillOutcome {
        let waiterID = lastWaiterID.wrappingAdd(1, ordering: .relaxed).newValue
        return await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                // Under the lock that the cancellation handler takes, so that a call cancelled
                // before it waits is answered here and never waits.
                let registration = ledger.withLock { ledger -> WaiterRegistration in
                    if Task.isCancelled { return .cancelled }
                    let waiter = ShardLedger.FillWaiter(id: waiterID, floor: floor, continuation: continuation)
                    return ledger.awaitFill(waiter, shard: shard) ? .waiting : .noFill
                }
                switch registration {
                case .cancelled: continuation.resume(returning: .failed(cancelled()))
                case .noFill: continuation.resume(returning: .takeAgain)
                case .waiting: break
                }
            }
        } onCancel: {
            let waiter = ledger.withLock { $0.cancelFillWaiter(waiterID, shard: shard) }
            waiter?.continuation.resume(returning: .failed(cancelled()))
        }
    }

    /// Fetches `count` IDs of `shard` above `floor` with the retry policy into the shard's buffer,
    /// as the fill the ledger has in flight for the shard, then ends that fill and answers the calls
    /// that waited for it.
    private func fill(shard: Int, count: Int, above floor: StampID?) async throws(StampClientError) {
        metrics.prefetchFills.increment()
        let result: Result<[StampID], StampClientError>
        do throws(StampClientError) {
            result = .success(try await requester.request(shard: shard, count: count, above: floor))
        } catch {
            result = .failure(error)
        }
        let fetchedAt = origin.duration(to: clock.now)
        let fill = ledger.withLock { ledger in
            switch result {
            case .success(let ids): ledger.buffer(ids, shard: shard, fetchedAt: fetchedAt)
            case .failure: ledger.refillFailed(shard: shard)
            }
            return ledger.endFill(shard: shard)
        }
        for waiter in fill.waiters {
            switch result {
            case .success:
                waiter.continuation.resume(returning: .takeAgain)
            case .failure(let error):
                waiter.continuation.resume(returning: Self.outcome(of: error, fillFloor: fill.floor, waiterFloor: waiter.floor))
            }
        }
        _ = try result.get()
    }

    /// What a call that waited for a fill that failed with `error` gets: the error, unless the fill
    /// was cancelled with its caller, or every attempt was refused because the fill asked too far
    /// ahead and the call's floor is lower than the fill's (the fill's floor may be to blame).
    private static func outcome(of error: StampClientError, fillFloor: StampID?, waiterFloor: StampID?) -> ShardLedger.FillOutcome {
        if error.code == .cancelled { return .takeAgain }
        let refusedAsTooFarAhead = !error.attempts.isEmpty && error.attempts.allSatisfy { $0.failure.kind == .afterTooFarAhead }
        if refusedAsTooFarAhead, let fillFloor, waiterFloor.map({ $0 < fillFloor }) ?? true { return .takeAgain }
        return .failed(error)
    }

    /// The error a cancelled call gets, counted as a failed call.
    private func cancelled() -> StampClientError {
        requester.fail(StampClientError(.cancelled, "the request was cancelled"))
    }

    /// Counts IDs handed out and discarded from a buffer, and asks `run()` for a refill when told to.
    private func recordTake(hits: Int, discarded: Int, refill: Bool, shard: Int) {
        if discarded > 0 {
            metrics.prefetchDiscarded.increment(by: discarded)
            counters.prefetchDiscarded.add(discarded, ordering: .relaxed)
        }
        if refill { refillContinuation.yield(shard) }
        if hits > 0 {
            metrics.prefetchHits.increment(by: hits)
            counters.prefetchHits.add(hits, ordering: .relaxed)
        }
    }
}
