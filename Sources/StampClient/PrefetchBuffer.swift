import StampCore

/// One shard's prefetched IDs in ascending order, kept as the batches they were fetched in, each
/// with the time it was fetched (measured from the client's start). A pure value: the
/// ``ShardLedger`` holds one per shard and passes the time in.
struct PrefetchBuffer {
    private struct Chunk {
        var ids: [StampID]
        var head = 0
        let fetchedAt: Duration

        var remaining: Int { ids.count - head }
    }

    /// Ascending and disjoint: every ID of a chunk is below every ID of the next; none is empty.
    private var chunks: [Chunk] = []

    /// How many IDs are buffered, including any too old that the next take discards.
    private(set) var count = 0

    /// The greatest buffered ID.
    var last: StampID? { chunks.last?.ids.last }

    /// Adds IDs fetched at `now`, ascending as the nodes return them, keeping the buffer ascending and
    /// each ID once; IDs not above `floor` (the last ID handed out) are dropped, since handing them out
    /// would break the order. A batch that overlaps the buffer (two requests answered out of order) is
    /// merged into one chunk that keeps the older fetch time.
    mutating func insert(_ batch: [StampID], fetchedAt now: Duration, above floor: StampID?) {
        let fresh = floor.map { floor in Array(batch.drop { $0 <= floor }) } ?? batch
        guard let first = fresh.first else { return }
        guard let last, first <= last else {
            chunks.append(Chunk(ids: fresh, fetchedAt: now))
            count += fresh.count
            return
        }
        let buffered = chunks.flatMap { $0.ids[$0.head...] }
        let merged = Array(Set(buffered + fresh)).sorted()
        chunks = [Chunk(ids: merged, fetchedAt: chunks.map(\.fetchedAt).reduce(now, min))]
        count = merged.count
    }

    /// Takes the smallest ID fetched no longer than `maximumAge` before `now`.
    mutating func takeOne(at now: Duration, maximumAge: Duration) -> (id: StampID?, discarded: Int) {
        let discarded = discardOld(at: now, maximumAge: maximumAge)
        guard !chunks.isEmpty else { return (nil, discarded) }
        let id = chunks[0].ids[chunks[0].head]
        chunks[0].head += 1
        count -= 1
        if chunks[0].remaining == 0 { chunks.removeFirst() }
        return (id, discarded)
    }

    /// Takes the `count` smallest IDs fetched no longer than `maximumAge` before `now`, or none
    /// when fewer are left. Returns the IDs and how many old ones were discarded on the way.
    mutating func take(_ wanted: Int, at now: Duration, maximumAge: Duration) -> (ids: [StampID], discarded: Int) {
        let discarded = discardOld(at: now, maximumAge: maximumAge)
        guard count >= wanted else { return ([], discarded) }
        var taken: [StampID] = []
        taken.reserveCapacity(wanted)
        while taken.count < wanted {
            let share = min(wanted - taken.count, chunks[0].remaining)
            taken += chunks[0].ids[chunks[0].head..<(chunks[0].head + share)]
            chunks[0].head += share
            if chunks[0].remaining == 0 { chunks.removeFirst() }
        }
        count -= wanted
        return (taken, discarded)
    }

    /// Drops the IDs at or below `floor`; returns how many.
    mutating func drop(through floor: StampID) -> Int {
        var dropped = 0
        while !chunks.isEmpty, chunks[0].ids[chunks[0].head] <= floor {
            if chunks[0].ids.last! <= floor {
                dropped += chunks[0].remaining
                chunks.removeFirst()
            } else {
                chunks[0].head += 1
                dropped += 1
            }
        }
        count -= dropped
        return dropped
    }

    /// Drops the chunks fetched longer than `maximumAge` before `now`; returns how many IDs that was.
    private mutating func discardOld(at now: Duration, maximumAge: Duration) -> Int {
        guard let oldest = chunks.first?.fetchedAt, oldest < now - maximumAge else { return 0 }
        let cutoff = now - maximumAge
        var discarded = 0
        while let chunk = chunks.first, chunk.fetchedAt < cutoff {
            discarded += chunk.remaining
            chunks.removeFirst()
        }
        count -= discarded
        return discarded
    }
}
