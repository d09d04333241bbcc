import StampCore

/// One shard's prefetched IDs in ascending order, each with the time it was fetched. A pure
/// value: the client holds it under its lock and passes the time in.
struct PrefetchBuffer<Instant: InstantProtocol> where Instant.Duration == Swift.Duration {
    private var ids: [StampID] = []
    private var fetchedAt: [Instant] = []
    private var head = 0

    /// How many IDs are buffered, including any too old that the next take discards.
    var count: Int { ids.count - head }

    /// The greatest buffered ID.
    var last: StampID? { head < ids.count ? ids.last : nil }

    /// Adds IDs fetched at `now`, keeping the buffer ascending and each ID once; IDs not above
    /// `floor` (the last ID handed out) are dropped, since handing them out would break the order.
    mutating func insert(_ batch: [StampID], fetchedAt now: Instant, above floor: StampID?) {
        let fresh = batch.filter { floor == nil || $0 > floor! }
        guard !fresh.isEmpty else { return }
        compact()
        if let last = ids.last, fresh.first! <= last {
            let merged = zip(ids, fetchedAt).map { ($0, $1) } + fresh.map { ($0, now) }
            var seen = Set<StampID>()
            let ordered = merged.sorted { $0.0 < $1.0 }.filter { seen.insert($0.0).inserted }
            ids = ordered.map(\.0)
            fetchedAt = ordered.map(\.1)
        } else {
            ids += fresh
            fetchedAt += repeatElement(now, count: fresh.count)
        }
    }

    /// Takes the smallest ID fetched no longer than `maximumAge` before `now`, without allocating.
    mutating func takeOne(at now: Instant, maximumAge: Duration) -> (id: StampID?, discarded: Int) {
        let discarded = discardOld(at: now, maximumAge: maximumAge)
        guard head < ids.count else { return (nil, discarded) }
        let id = ids[head]
        head += 1
        if head > 4096, head * 2 > ids.count { compact() }
        return (id, discarded)
    }

    /// Takes the `count` smallest IDs fetched no longer than `maximumAge` before `now`, or none
    /// when fewer are left. Returns the IDs and how many old ones were discarded on the way.
    mutating func take(_ count: Int, at now: Instant, maximumAge: Duration) -> (ids: [StampID], discarded: Int) {
        let discarded = discardOld(at: now, maximumAge: maximumAge)
        guard self.count >= count else { return ([], discarded) }
        let taken = Array(ids[head..<(head + count)])
        head += count
        if head > 4096, head * 2 > ids.count { compact() }
        return (taken, discarded)
    }

    /// Drops the IDs at or below `floor`; returns how many.
    mutating func drop(through floor: StampID) -> Int {
        let start = head
        while head < ids.count, ids[head] <= floor {
            head += 1
        }
        return head - start
    }

    /// Drops IDs fetched longer than `maximumAge` before `now`; returns how many.
    private mutating func discardOld(at now: Instant, maximumAge: Duration) -> Int {
        var discarded = 0
        while head < ids.count, fetchedAt[head].advanced(by: maximumAge) < now {
            head += 1
            discarded += 1
        }
        return discarded
    }

    private mutating func compact() {
        guard head > 0 else { return }
        ids.removeFirst(head)
        fetchedAt.removeFirst(head)
        head = 0
    }
}
