import StampCore

/// For each shard, the greatest ID the client has returned and the prefetched IDs it holds: what
/// every attempt asks above, so that a shard's IDs keep rising across requests, nodes and buffers.
///
/// It also holds each shard's fill in flight, one at most, with the calls that wait for it: a call
/// that finds the buffer short either starts the fill or waits, in the same step as its take.
///
/// A value that the client's parts share under one lock (``Locked``), so that taking an ID from a
/// buffer and recording it as returned is one step, and no fetched ID is buffered at or below one
/// already returned. Times are durations from the client's start.
struct ShardLedger {
    /// What a call that waited for a fill does once the fill has ended.
    enum FillOutcome: Sendable {
        /// Take from the buffer again (and start the next fill if it is still short).
        case takeAgain
        /// Fail with this error: the fill's, or the call's own cancellation.
        case failed(StampClientError)
    }

    /// A call waiting for the fill of its shard's buffer in flight.
    struct FillWaiter: Sendable {
        let id: UInt64
        let floor: StampID?
        let continuation: CheckedContinuation<FillOutcome, Never>
    }

    /// A fill of one shard's buffer in flight: the floor it asks above, and the calls waiting for it.
    struct Fill: Sendable {
        let floor: StampID?
        var waiters: [FillWaiter] = []
    }

    /// For each shard, the greatest ID returned.
    private var lastReturned: [Int: StampID] = [:]
    private var buffers: [Int: PrefetchBuffer] = [:]
    /// The shards whose refill has been asked for and not yet made.
    private var refillPending: Set<Int> = []
    /// The shards whose buffer a fill is being fetched for.
    private var fills: [Int: Fill] = [:]

    /// The ID an attempt for `shard` asks above: the greatest of the last ID returned, the last ID
    /// buffered and `floor`.
    func after(shard: Int, floor: StampID?) -> StampID? {
        [lastReturned[shard], buffers[shard]?.last, floor].compactMap { $0 }.max()
    }

    /// Records IDs that a request hands straight to its caller, without a buffer.
    mutating func recordReturned(_ ids: [StampID], shard: Int) {
        if let last = ids.last, lastReturned[shard].map({ last > $0 }) ?? true {
            lastReturned[shard] = last
        }
    }

    /// Buffers IDs fetched at `now`, keeping only those above the last ID returned, and ends the
    /// shard's pending refill.
    mutating func buffer(_ ids: [StampID], shard: Int, fetchedAt now: Duration) {
        buffers[shard, default: PrefetchBuffer()].insert(ids, fetchedAt: now, above: lastReturned[shard])
        refillPending.remove(shard)
    }

    /// Takes the smallest buffered ID of `shard` above `floor` and young enough for `policy`, and
    /// records it as returned. Says how many IDs were skipped or discarded on the way, and whether a
    /// refill should start: the take left the buffer below `policy.refillBelow` and no refill is
    /// pending yet.
    mutating func takeOne(shard: Int, above floor: StampID?, at now: Duration, policy: StampClientConfiguration.Prefetch) -> (id: StampID?, discarded: Int, refill: Bool) {
        guard buffers[shard] != nil else { return (nil, 0, false) }
        let skipped = floor.map { buffers[shard]!.drop(through: $0) } ?? 0
        var (id, discarded) = buffers[shard]!.takeOne(at: now, maximumAge: policy.maximumAge)
        discarded += skipped
        guard let id else { return (nil, discarded, false) }
        lastReturned[shard] = id
        let refill = buffers[shard]!.count < policy.refillBelow && refillPending.insert(shard).inserted
        return (id, discarded, refill)
    }

    /// Takes the `count` smallest buffered IDs of `shard` above `floor`, or none when fewer are
    /// left, as ``takeOne(shard:above:at:policy:)`` does. A miss asks for no refill: its caller
    /// fills the buffer at once, or waits for the fill in flight.
    mutating func take(_ count: Int, shard: Int, above floor: StampID?, at now: Duration, policy: StampClientConfiguration.Prefetch) -> (ids: [StampID], discarded: Int, refill: Bool) {
        let skipped = floor.map { buffers[shard, default: PrefetchBuffer()].drop(through: $0) } ?? 0
        var (ids, discarded) = buffers[shard, default: PrefetchBuffer()].take(count, at: now, maximumAge: policy.maximumAge)
        discarded += skipped
        let refill = !ids.isEmpty && buffers[shard]!.count < policy.refillBelow && refillPending.insert(shard).inserted
        if let last = ids.last { lastReturned[shard] = last }
        return (ids, discarded, refill)
    }

    /// Forgets the shard's pending refill after a fill failed, so that the next low take asks again.
    mutating func refillFailed(shard: Int) {
        refillPending.remove(shard)
    }

    /// Starts a fill of `shard` that asks above `floor`, unless one is in flight already; says
    /// whether it started.
    mutating func beginFill(shard: Int, floor: StampID?) -> Bool {
        guard fills[shard] == nil else { return false }
        fills[shard] = Fill(floor: floor)
        return true
    }

    /// Starts the refill of `shard` that a low take asked for, unless it is no longer pending (a fill
    /// has ended since) or a fill is in flight already (its end ends the pending refill); says whether
    /// it started.
    mutating func beginRefill(shard: Int) -> Bool {
        refillPending.contains(shard) && beginFill(shard: shard, floor: nil)
    }

    /// Queues `waiter` for the fill of `shard` in flight; says whether there is one to wait for.
    mutating func awaitFill(_ waiter: FillWaiter, shard: Int) -> Bool {
        guard fills[shard] != nil else { return false }
        fills[shard]!.waiters.append(waiter)
        return true
    }

    /// Takes waiter `id` out of the shard's fill, to be answered by its caller; `nil` when the fill
    /// has ended, and so answered the waiter, already.
    mutating func cancelFillWaiter(_ id: UInt64, shard: Int) -> FillWaiter? {
        guard let index = fills[shard]?.waiters.firstIndex(where: { $0.id == id }) else { return nil }
        return fills[shard]!.waiters.remove(at: index)
    }

    /// Ends the shard's fill in flight, which must exist, and returns it with the calls that waited for it.
    mutating func endFill(shard: Int) -> Fill {
        fills.removeValue(forKey: shard)!
    }

    /// How many calls wait for the fill of `shard` in flight.
    func waitingForFill(shard: Int) -> Int {
        fills[shard]?.waiters.count ?? 0
    }

    /// How many IDs of `shard` are buffered, including any too old to be handed out.
    func buffered(shard: Int) -> Int {
        buffers[shard]?.count ?? 0
    }
}
