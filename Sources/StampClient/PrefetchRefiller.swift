import Logging
import StampCore

/// Hands out IDs from the shards' prefetch buffers and keeps them filled: a call that finds too few
/// buffered IDs fetches a full buffer at once, and a take that leaves a buffer low asks ``run()``
/// for a refill in the background, one at a time.
///
/// The buffers are the shard ledger's, so that a take and the record of the ID as returned are one
/// step; this type decides when to fetch and counts hits, misses and discarded IDs.
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
    /// first (with at least `count` IDs) as often as it holds too few.
    func ids(shard: Int, count: Int, above floor: StampID?) async throws(StampClientError) -> [StampID] {
        while true {
            if let ids = take(count, shard: shard, above: floor) {
                return ids
            }
            metrics.prefetchMisses.increment()
            try await fill(shard: shard, count: max(count, policy.capacity), above: floor)
        }
    }

    /// Refills each shard whose buffer ran low, one refill at a time, until cancelled.
    func run() async {
        for await shard in refills {
            do throws(StampClientError) {
                try await fill(shard: shard, count: policy.capacity, above: nil)
            } catch {
                ledger.withLock { $0.refillFailed(shard: shard) }
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

    /// Fetches `count` IDs of `shard` above `floor` with the retry policy into the shard's buffer.
    private func fill(shard: Int, count: Int, above floor: StampID?) async throws(StampClientError) {
        let ids = try await requester.request(shard: shard, count: count, above: floor)
        let fetchedAt = origin.duration(to: clock.now)
        ledger.withLock { $0.buffer(ids, shard: shard, fetchedAt: fetchedAt) }
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
