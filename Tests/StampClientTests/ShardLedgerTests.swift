import StampCore
import Testing
@testable import StampClient

/// The shard ledger: what attempts ask above, what buffers keep, and when a refill is asked for.
@Suite("Client shard ledger")
struct ShardLedgerTests {
    static let policy = StampClientConfiguration.Prefetch(capacity: 4, refillBelow: 2, maximumAge: .seconds(1))
    static func ids(_ values: [Int64]) -> [StampID] { values.map { StampID(rawValue: $0)! } }

    @Test func attemptsAskAboveTheGreatestOfReturnedBufferedAndFloor() {
        var ledger = ShardLedger()
        #expect(ledger.after(shard: 0, floor: nil) == nil)
        ledger.recordReturned(Self.ids([10, 20]), shard: 0)
        ledger.recordReturned(Self.ids([15]), shard: 0)
        #expect(ledger.after(shard: 0, floor: nil) == StampID(rawValue: 20), "an older answer does not lower the last ID returned")
        #expect(ledger.after(shard: 0, floor: StampID(rawValue: 25)) == StampID(rawValue: 25))
        ledger.buffer(Self.ids([30, 31]), shard: 0, fetchedAt: .zero)
        #expect(ledger.after(shard: 0, floor: StampID(rawValue: 25)) == StampID(rawValue: 31))
        #expect(ledger.after(shard: 1, floor: nil) == nil, "shards are apart")
    }

    @Test func aBufferKeepsOnlyIDsAboveTheLastReturned() {
        var ledger = ShardLedger()
        ledger.buffer(Self.ids([1, 2, 3, 4]), shard: 0, fetchedAt: .zero)
        #expect(ledger.take(2, shard: 0, above: nil, at: .zero, policy: Self.policy).ids == Self.ids([1, 2]))
        ledger.buffer(Self.ids([2, 3, 5]), shard: 0, fetchedAt: .zero)
        #expect(ledger.buffered(shard: 0) == 3, "2 was returned already; 3 was buffered once")
        #expect(ledger.take(3, shard: 0, above: nil, at: .zero, policy: Self.policy).ids == Self.ids([3, 4, 5]))
    }

    @Test func aLowBufferAsksForOneRefillUntilItIsFilledOrTheRefillFails() {
        let policy = StampClientConfiguration.Prefetch(capacity: 6, refillBelow: 4, maximumAge: .seconds(1))
        var ledger = ShardLedger()
        ledger.buffer(Self.ids([1, 2, 3, 4, 5, 6]), shard: 0, fetchedAt: .zero)
        let takes = (0..<4).map { _ in ledger.takeOne(shard: 0, above: nil, at: .zero, policy: policy) }
        #expect(takes.map { $0.id } == Self.ids([1, 2, 3, 4]))
        #expect(takes.map { $0.refill } == [false, false, true, false], "the take that leaves fewer than four asks for a refill, once")
        ledger.refillFailed(shard: 0)
        #expect(ledger.takeOne(shard: 0, above: nil, at: .zero, policy: policy) == (StampID(rawValue: 5), 0, true), "after a failed refill the next low take asks again")
        ledger.buffer(Self.ids([7, 8]), shard: 0, fetchedAt: .zero)
        #expect(ledger.takeOne(shard: 0, above: nil, at: .zero, policy: policy) == (StampID(rawValue: 6), 0, true), "buffered IDs end the pending refill")
    }

    @Test func takesSkipIDsAtOrBelowTheFloorAndDiscardOldOnes() {
        var ledger = ShardLedger()
        #expect(ledger.takeOne(shard: 0, above: nil, at: .zero, policy: Self.policy) == (nil, 0, false), "no buffer yet")
        ledger.buffer(Self.ids([1, 2, 3]), shard: 0, fetchedAt: .zero)
        ledger.buffer(Self.ids([4, 5, 6]), shard: 0, fetchedAt: .milliseconds(500))
        #expect(ledger.takeOne(shard: 0, above: StampID(rawValue: 1), at: .zero, policy: Self.policy) == (StampID(rawValue: 2), 1, false))
        let late = ledger.take(2, shard: 0, above: nil, at: .milliseconds(1200), policy: Self.policy)
        #expect(late.ids == Self.ids([4, 5]) && late.discarded == 1, "the batch fetched at zero is too old at 1.2 s")
        #expect(ledger.after(shard: 0, floor: nil) == StampID(rawValue: 6))
    }

    @Test func aShardHasOneFillInFlightAndARefillOnlyWhilePending() {
        let policy = StampClientConfiguration.Prefetch(capacity: 4, refillBelow: 2, maximumAge: .seconds(1))
        var ledger = ShardLedger()
        let unasked = ledger.beginRefill(shard: 0)
        #expect(!unasked, "no refill was asked for")
        let first = ledger.beginFill(shard: 0, floor: nil)
        let second = ledger.beginFill(shard: 0, floor: StampID(rawValue: 5))
        let otherShard = ledger.beginFill(shard: 1, floor: nil)
        #expect(first && !second, "one fill of a shard at a time")
        #expect(otherShard, "shards are apart")
        ledger.buffer(Self.ids([1, 2, 3]), shard: 0, fetchedAt: .zero)
        #expect(ledger.endFill(shard: 0).waiters.isEmpty)

        let low = ledger.take(2, shard: 0, above: nil, at: .zero, policy: policy)
        #expect(low.refill, "one ID left: a refill is asked for")
        let miss = ledger.beginFill(shard: 0, floor: nil)
        let refillDuringMiss = ledger.beginRefill(shard: 0)
        #expect(miss && !refillDuringMiss, "the refill is not made while a fill is in flight")
        ledger.buffer(Self.ids([4, 5, 6, 7]), shard: 0, fetchedAt: .zero)
        _ = ledger.endFill(shard: 0)
        let refillAfterMiss = ledger.beginRefill(shard: 0)
        #expect(!refillAfterMiss, "the fill that ended ended the pending refill")

        let lowAgain = ledger.take(4, shard: 0, above: nil, at: .zero, policy: policy)
        let refill = ledger.beginRefill(shard: 0)
        let missDuringRefill = ledger.beginFill(shard: 0, floor: nil)
        #expect(lowAgain.refill && refill)
        #expect(!missDuringRefill, "a miss waits for the refill in flight")
    }
}
