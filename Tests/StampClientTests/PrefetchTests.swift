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
        let clock = ManualClock()
        var buffer = PrefetchBuffer<ManualClock.Instant>()
        let ids = { (values: [Int64]) in values.map { StampID(rawValue: $0)! } }
        buffer.insert(ids([10, 20, 30]), fetchedAt: clock.now, above: nil)
        buffer.insert(ids([15, 20, 40]), fetchedAt: clock.now, above: nil)
        buffer.insert(ids([5, 50]), fetchedAt: clock.now, above: StampID(rawValue: 9))
        #expect(buffer.take(6, at: clock.now, maximumAge: .seconds(1)).ids == ids([10, 15, 20, 30, 40, 50]))
        #expect(buffer.count == 0)
    }
}
