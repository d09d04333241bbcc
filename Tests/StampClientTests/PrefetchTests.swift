import Logging
import StampCore
import StampTesting
import Testing
@testable import StampClient

/// Prefetch: buffers refilled in the background before they run dry, old IDs discarded, no ID twice.
@Suite("Client prefetch")
struct PrefetchTests {
    static func client(_ transport: FakeTransport, clock: ManualClock, prefetch: StampClientConfiguration.Prefetch) -> StampIDClient<ManualClock> {
        StampIDClient(
            configuration: StampClientConfiguration(nodes: ["http://a", "http://b"], discoveryInterval: nil, prefetch: prefetch),
            transport: transport,
            clock: clock,
            logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })
        )
    }

    @Test func refillsBeforeTheBufferIsEmpty() async throws {
        let transport = FakeTransport()
        let clock = ManualClock()
        let client = Self.client(transport, clock: clock, prefetch: .init(capacity: 8, refillBelow: 4, maximumAge: .seconds(10)))
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await client.run() }
            var ids: [StampID] = []
            for _ in 0..<5 { ids.append(try await client.nextID()) }
            #expect(transport.calls.count == 1, "one fetch fills the buffer")
            // Three IDs are left, below the threshold of four: run() refills now.
            await transport.waitForCalls(2)
            while client.buffered(shard: 0) < 11 { await Task.yield() }
            for _ in 0..<3 { ids.append(try await client.nextID()) }
            #expect(transport.calls.count == 2, "the buffer never ran dry")
            #expect(transport.calls.allSatisfy { $0.count == 8 })
            #expect(transport.calls[1].after != nil && transport.calls[1].after! >= ids[4], "a refill asks above what the buffer holds")
            #expect(zip(ids, ids.dropFirst()).allSatisfy { $0 < $1 })
            group.cancelAll()
        }
    }

    @Test func discardsIDsOlderThanTheMaximumAge() async throws {
        let transport = FakeTransport()
        let clock = ManualClock()
        let client = Self.client(transport, clock: clock, prefetch: .init(capacity: 8, refillBelow: 0, maximumAge: .seconds(1)))
        let first = try await client.nextID()
        clock.advance(by: .milliseconds(1001))
        let second = try await client.nextID()
        #expect(second > first)
        #expect(client.statistics.prefetchDiscarded == 7)
        #expect(transport.calls.count == 2, "the old buffer was replaced by a fresh fetch")
        #expect(transport.calls[1].after == first)
    }

    @Test func keepsIDsYoungerThanTheMaximumAge() async throws {
        let transport = FakeTransport()
        let clock = ManualClock()
        let client = Self.client(transport, clock: clock, prefetch: .init(capacity: 8, refillBelow: 0, maximumAge: .seconds(1)))
        _ = try await client.nextID()
        clock.advance(by: .milliseconds(1000))
        _ = try await client.nextID()
        #expect(client.statistics.prefetchDiscarded == 0)
        #expect(transport.calls.count == 1)
    }

    @Test func noIDIsHandedOutTwiceUnderConcurrency() async throws {
        let transport = FakeTransport()
        let clock = ManualClock()
        let client = Self.client(transport, clock: clock, prefetch: .init(capacity: 64, maximumAge: .seconds(10)))
        let ids = try await withThrowingTaskGroup(of: [StampID].self) { group in
            group.addTask { try await client.run(); return [] }
            for _ in 0..<8 {
                group.addTask {
                    var ids: [StampID] = []
                    for index in 0..<500 { ids += index % 5 == 0 ? try await client.nextIDs(count: 3) : [try await client.nextID()] }
                    #expect(zip(ids, ids.dropFirst()).allSatisfy { $0 < $1 }, "each task sees its IDs rise")
                    return ids
                }
            }
            var all: [StampID] = []
            for _ in 0..<8 { all += try await group.next()! }
            group.cancelAll()
            return all
        }
        #expect(ids.count == 8 * (400 + 100 * 3))
        #expect(Set(ids).count == ids.count)
    }

    @Test func bufferMergesOverlappingBatchesInOrder() {
        var buffer = PrefetchBuffer()
        let ids = { (values: [Int64]) in values.map { StampID(rawValue: $0)! } }
        buffer.insert(ids([10, 20, 30]), fetchedAt: .zero, above: nil)
        buffer.insert(ids([15, 20, 40]), fetchedAt: .zero, above: nil)
        buffer.insert(ids([5, 50]), fetchedAt: .zero, above: StampID(rawValue: 9))
        #expect(buffer.take(6, at: .zero, maximumAge: .seconds(1)).ids == ids([10, 15, 20, 30, 40, 50]))
        #expect(buffer.count == 0)
    }

    @Test func bufferTakesAcrossBatchesDropsBelowAFloorAndDiscardsOldBatches() {
        var buffer = PrefetchBuffer()
        let ids = { (values: [Int64]) in values.map { StampID(rawValue: $0)! } }
        buffer.insert(ids([1, 2, 3]), fetchedAt: .zero, above: nil)
        buffer.insert(ids([4, 5, 6]), fetchedAt: .milliseconds(500), above: nil)
        buffer.insert(ids([7, 8, 9]), fetchedAt: .milliseconds(900), above: nil)
        #expect(buffer.takeOne(at: .milliseconds(100), maximumAge: .seconds(1)) == (StampID(rawValue: 1), 0))
        #expect(buffer.take(3, at: .milliseconds(100), maximumAge: .seconds(1)).ids == ids([2, 3, 4]))
        #expect(buffer.drop(through: StampID(rawValue: 5)!) == 1)
        #expect(buffer.count == 4)
        let late = buffer.takeOne(at: .milliseconds(1600), maximumAge: .seconds(1))
        #expect(late == (StampID(rawValue: 7), 1), "the batch fetched at 500 ms is too old at 1.6 s; its last ID is discarded")
        #expect(buffer.take(3, at: .milliseconds(1600), maximumAge: .seconds(1)).ids.isEmpty, "only two are left")
        #expect(buffer.last == StampID(rawValue: 9))
        #expect(buffer.take(2, at: .seconds(2), maximumAge: .seconds(1)) == ([], 2))
    }
}
