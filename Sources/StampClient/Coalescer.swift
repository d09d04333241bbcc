import StampCore
import Synchronization

/// Sends a shard's concurrent calls together: a call goes out at once in a request of its own while
/// fewer than `requestsInFlight` requests are out for its shard; otherwise it waits in the shard's
/// ``CoalescingQueue`` and goes in the next batch, one request for the IDs of every call in it.
///
/// A batch asks above the highest floor among its calls, and each call gets its share of the
/// answer (or the error). Cancelling a call answers it at once; a batch whose every call was
/// cancelled has its request cancelled.
final class Coalescer<C: Clock<Duration>>: Sendable where C.Instant: Sendable {
    /// The policy: how many requests a shard may have out, and the most IDs in one.
    let policy: StampClientConfiguration.Coalescing
    private let requester: RetryingRequester<C>
    private let ledger: Locked<ShardLedger>
    private let state = Mutex(State())

    private struct State {
        /// For each shard, the calls waiting to be coalesced and the batches in flight.
        var queues: [Int: CoalescingQueue] = [:]
        /// The last number given to a coalesced call or batch.
        var lastCoalescingID: UInt64 = 0
    }

    init(policy: StampClientConfiguration.Coalescing, requester: RetryingRequester<C>, ledger: Locked<ShardLedger>) {
        self.policy = policy
        self.requester = requester
        self.ledger = ledger
    }

    /// How many calls for `shard` wait to be coalesced into the next request.
    func waitingCalls(shard: Int) -> Int {
        state.withLock { $0.queues[shard]?.waiting.count ?? 0 }
    }

    /// Gets the call's `count` IDs of `shard`, above `floor`, through the shard's queue.
    func ids(shard: Int, count: Int, above floor: StampID?) async throws(StampClientError) -> [StampID] {
        guard !Task.isCancelled else { throw requester.fail(StampClientError(.cancelled, "the request was cancelled")) }
        let waiterID = state.withLock { state in
            state.lastCoalescingID += 1
            return state.lastCoalescingID
        }
        let result = await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                // Checked under the lock that the cancellation handler takes, so a call cancelled
                // before it is queued is answered here and never queued.
                let queued = state.withLock { state in
                    guard !Task.isCancelled else { return false }
                    state.queues[shard, default: CoalescingQueue()].append(.init(id: waiterID, count: count, floor: floor, continuation: continuation))
                    startBatches(shard: shard, state: &state)
                    return true
                }
                if !queued { continuation.resume(returning: .failure(requester.fail(StampClientError(.cancelled, "the request was cancelled")))) }
            }
        } onCancel: {
            let cancelled = state.withLock { $0.queues[shard]?.cancel(waiterID) }
            cancelled?.abandonedBatch?.cancel()
            cancelled?.waiter.continuation.resume(returning: .failure(requester.fail(StampClientError(.cancelled, "the request was cancelled"))))
        }
        return try result.get()
    }

    /// Starts a request for every batch the shard's queue may send now; called under the lock.
    private func startBatches(shard: Int, state: inout State) {
        while true {
            state.lastCoalescingID += 1
            let batchID = state.lastCoalescingID
            guard let batch = state.queues[shard]!.nextBatch(id: batchID, requestsInFlight: max(1, policy.requestsInFlight), maximumCount: max(1, policy.maximumCount)) else { return }
            let task = Task { [self] in
                await send(batchID, shard: shard, count: batch.count, above: batch.floor)
            }
            state.queues[shard]!.setTask(task, of: batchID)
        }
    }

    /// Makes batch `batchID`'s request and hands each of its calls their share of the IDs (or the error).
    ///
    /// When every attempt failed because the batch's floor was further ahead than the nodes'
    /// maximum lead, one call's floor may be to blame, so each call is then tried again on its own,
    /// with its own floor: only a call whose floor is too far ahead fails, as it would without
    /// coalescing.
    private func send(_ batchID: UInt64, shard: Int, count: Int, above floor: StampID?) async {
        let result = await requestResult(shard: shard, count: count, above: floor)
        let waiters = state.withLock { state in
            defer { startBatches(shard: shard, state: &state) }
            return state.queues[shard]!.finish(batchID)
        }
        if case .failure(let error) = result, waiters.count > 1, !error.attempts.isEmpty,
           error.attempts.allSatisfy({ $0.failure.kind == .afterTooFarAhead }) {
            await withDiscardingTaskGroup { group in
                for waiter in waiters {
                    group.addTask { [self] in
                        waiter.continuation.resume(returning: await requestResult(shard: shard, count: waiter.count, above: waiter.floor))
                    }
                }
            }
            return
        }
        for waiter in waiters {
            waiter.continuation.resume(returning: result.map { Array($0[waiter.offset..<(waiter.offset + waiter.count)]) })
        }
    }

    /// One request with the retry policy, its IDs recorded as returned, as a result.
    private func requestResult(shard: Int, count: Int, above floor: StampID?) async -> Result<[StampID], StampClientError> {
        do throws(StampClientError) {
            let ids = try await requester.request(shard: shard, count: count, above: floor)
            ledger.withLock { $0.recordReturned(ids, shard: shard) }
            return .success(ids)
        } catch {
            return .failure(error)
        }
    }
}
