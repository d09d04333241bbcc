import StampCore

/// One shard's calls that wait to be sent to the nodes together, and the batches in flight: how
/// concurrent single-ID calls become one request for many IDs, as TiDB's PD client batches the
/// timestamp requests of many goroutines into one. A value the ``Coalescer`` holds under its lock.
struct CoalescingQueue {
    typealias Continuation = CheckedContinuation<Result<[StampID], StampClientError>, Never>

    /// One call waiting for `count` IDs above `floor`.
    struct Waiter {
        let id: UInt64
        let count: Int
        let floor: StampID?
        let continuation: Continuation
        /// Where the call's IDs start in its batch's answer.
        var offset = 0
    }

    /// Calls sent as one request for `count` IDs above `floor`.
    struct Batch {
        /// The calls still waiting for their IDs (a cancelled one leaves).
        var waiters: [Waiter]
        let count: Int
        let floor: StampID?
        /// The task making the request, cancelled when every call of the batch has been cancelled.
        var task: Task<Void, Never>?
    }

    private(set) var waiting: [Waiter] = []
    private(set) var batches: [UInt64: Batch] = [:]

    mutating func append(_ waiter: Waiter) {
        waiting.append(waiter)
    }

    /// Forms the next batch from the waiting calls in arrival order, up to `maximumCount` IDs (but
    /// always at least one call), registered as `batchID`; `nil` when no call waits or
    /// `requestsInFlight` batches are in flight already.
    mutating func nextBatch(id batchID: UInt64, requestsInFlight: Int, maximumCount: Int) -> Batch? {
        guard !waiting.isEmpty, batches.count < requestsInFlight else { return nil }
        var end = 0
        var count = 0
        while end < waiting.count, end == 0 || count + waiting[end].count <= maximumCount {
            waiting[end].offset = count
            count += waiting[end].count
            end += 1
        }
        let taken = Array(waiting[..<end])
        waiting.removeFirst(end)
        let batch = Batch(waiters: taken, count: count, floor: taken.compactMap(\.floor).max(), task: nil)
        batches[batchID] = batch
        return batch
    }

    /// Records the task that makes batch `batchID`'s request.
    mutating func setTask(_ task: Task<Void, Never>, of batchID: UInt64) {
        batches[batchID]?.task = task
    }

    /// Ends batch `batchID`, returning the calls still waiting for its IDs.
    mutating func finish(_ batchID: UInt64) -> [Waiter] {
        batches.removeValue(forKey: batchID)?.waiters ?? []
    }

    /// Takes call `waiterID` out, whether it waits or is in a batch, and returns it to be answered,
    /// with the task of its batch when no call is left in it: the caller cancels that task once it
    /// has let go of the lock.
    mutating func cancel(_ waiterID: UInt64) -> (waiter: Waiter, abandonedBatch: Task<Void, Never>?)? {
        if let index = waiting.firstIndex(where: { $0.id == waiterID }) {
            return (waiting.remove(at: index), nil)
        }
        for (batchID, batch) in batches {
            guard let index = batch.waiters.firstIndex(where: { $0.id == waiterID }) else { continue }
            let waiter = batches[batchID]!.waiters.remove(at: index)
            return (waiter, batches[batchID]!.waiters.isEmpty ? batch.task : nil)
        }
        return nil
    }
}
