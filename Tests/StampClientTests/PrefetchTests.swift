import Logging
import MetricsTestKit
import StampCore
import StampTesting
import Testing
@testable import StampClient

/// Prefetch: buffers refilled in the background before they run dry, old IDs discarded, no ID twice.
@Suite("Client prefetch")
struct PrefetchTests {
    static let nodes = ["http://a", "http://b"]

    static func client(_ transport: FakeTransport, clock: ManualClock, prefetch: StampClientConfiguration.Prefetch, maximumRetries: Int = 3, metrics: TestMetrics = TestMetrics()) -> StampIDClient<ManualClock> {
        StampIDClient(
            configuration: StampClientConfiguration(nodes: nodes, maximumRetries: maximumRetries, discoveryInterval: nil, prefetch: prefetch),
            transport: transport,
            clock: clock,
            logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }),
            metricsFactory: metrics
        )
    }

    /// Sets what every node does.
    static func setNodes(_ transport: FakeTransport, _ behavior: FakeTransport.Behavior) {
        for node in nodes { transport.set(node, behavior) }
    }

    /// Returns once `count` calls for shard 0 have each sent a request or wait for a fill in flight.
    static func waitForRequestsOrWaiters(_ client: StampIDClient<ManualClock>, _ transport: FakeTransport, _ count: Int) async {
        while transport.calls.count + client.waitingForFill(shard: 0) < count { await Task.yield() }
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

    @Test func concurrentMissesShareOneFill() async throws {
        let transport = FakeTransport()
        Self.setNodes(transport, .gated)
        let metrics = TestMetrics()
        let client = Self.client(transport, clock: ManualClock(), prefetch: .init(capacity: 64, maximumAge: .seconds(10)), metrics: metrics)
        let calls = (0..<32).map { index in
            Task { index.isMultiple(of: 2) ? [try await client.nextID()] : try await client.nextIDs(count: 2) }
        }
        await Self.waitForRequestsOrWaiters(client, transport, 32)
        #expect(transport.calls.count == 1, "the calls that missed wait for the fill in flight")
        transport.openGate()
        var answers: [[StampID]] = []
        for call in calls { answers.append(try await call.value) }
        let ids = answers.flatMap { $0 }
        #expect(transport.calls.count == 1, "32 misses, one fetch")
        #expect(transport.calls.first?.count == 64)
        #expect(ids.sorted() == (1000..<1048).map { StampID(rawValue: $0)! }, "each ID once, the smallest of the one fill")
        #expect(answers.allSatisfy { zip($0, $0.dropFirst()).allSatisfy { $0 < $1 } })
        #expect(try metrics.expectCounter("stamp_client_prefetch_fills_total").totalValue == 1)
        #expect(try metrics.expectCounter("stamp_client_prefetch_misses_total").totalValue == 32)
    }

    @Test func aFailedFillFailsEveryWaiterAfterOneRetryCycle() async throws {
        let transport = FakeTransport()
        Self.setNodes(transport, .fail(TransportFailure(.unavailable, status: 503, detail: "refused")))
        let clock = ManualClock()
        let client = Self.client(transport, clock: clock, prefetch: .init(capacity: 64, maximumAge: .seconds(10)))
        let outcomes = await withTaskGroup(of: Result<StampID, StampClientError>?.self) { group in
            for _ in 0..<32 {
                group.addTask {
                    do throws(StampClientError) { return .success(try await client.nextID()) } catch { return .failure(error) }
                }
            }
            // The fill sleeps on the clock (its attempt's timeout or its retry delay) while the others wait.
            while clock.sleeperCount + client.waitingForFill(shard: 0) < 32 { await Task.yield() }
            #expect(transport.calls.count == 1, "the calls that missed wait for the fill in flight")
            group.addTask {
                while !Task.isCancelled {
                    if clock.sleeperCount > 0 { clock.advance(by: .seconds(1)) }
                    await Task.yield()
                }
                return nil
            }
            var outcomes: [Result<StampID, StampClientError>] = []
            while outcomes.count < 32, let next = await group.next() {
                if let next { outcomes.append(next) }
            }
            group.cancelAll()
            return outcomes
        }
        #expect(transport.calls.count == 4, "one request: the first attempt and three retries")
        #expect(client.statistics.requests == 1)
        let errors = outcomes.compactMap { outcome -> StampClientError? in
            guard case .failure(let error) = outcome else { return nil }
            return error
        }
        #expect(errors.count == 32)
        #expect(errors.allSatisfy { $0.code == .allNodesFailed && $0.attempts.count == 4 }, "every waiter gets the fill's error")
        Self.setNodes(transport, .issue)
        _ = try await client.nextID()
        #expect(transport.calls.count == 5, "the failed fill has ended: the next miss fills again")
    }

    @Test func aWaiterGetsIDsAboveItsOwnFloor() async throws {
        let transport = FakeTransport()
        Self.setNodes(transport, .gated)
        let client = Self.client(transport, clock: ManualClock(), prefetch: .init(capacity: 64, maximumAge: .seconds(10)))
        let leader = Task { try await client.nextID() }
        await transport.waitForCalls(1)
        let withinFill = StampID(rawValue: 1010)!
        let beyondFill = StampID(rawValue: 5000)!
        let within = Task { try await client.nextID(above: withinFill) }
        let beyond = Task { try await client.nextID(above: beyondFill) }
        await Self.waitForRequestsOrWaiters(client, transport, 3)
        #expect(transport.calls.count == 1, "the calls with floors wait for the fill in flight")
        transport.openGate()
        let ids = [try await leader.value, try await within.value, try await beyond.value]
        #expect(ids[1] > withinFill)
        #expect(ids[2] > beyondFill)
        #expect(Set(ids).count == 3)
        #expect(transport.calls.count == 2, "the fill (1,000 to 1,063) serves a floor of 1,010; a floor of 5,000 fills again")
        #expect(transport.calls.last?.after == beyondFill, "the second fill asks above the higher floor")
    }

    @Test func aFillRefusedForItsFloorFailsOnlyTheWaitersWhoseFloorIsAsHigh() async throws {
        let transport = FakeTransport()
        Self.setNodes(transport, .refuseAfterAbove(StampID(rawValue: 10_000)!))
        let clock = ManualClock()
        let client = Self.client(transport, clock: clock, prefetch: .init(capacity: 64, maximumAge: .seconds(10)), maximumRetries: 1)
        let leader = Task { try await client.nextID(above: StampID(rawValue: 20_000)!) }
        await PolicyTests.waitForRetryDelay(client, clock: clock)
        let higher = Task { try await client.nextID(above: StampID(rawValue: 30_000)!) }
        let plain = Task { try await client.nextID() }
        await Self.waitForRequestsOrWaiters(client, transport, 3)
        clock.advance(by: .seconds(1))
        let leaderError = await #expect(throws: StampClientError.self) { try await leader.value }
        #expect(leaderError?.attempts.map(\.failure.kind) == [.afterTooFarAhead, .afterTooFarAhead])
        let higherError = await #expect(throws: StampClientError.self) { try await higher.value }
        #expect(higherError?.attempts.count == 2, "a floor above the refused one gets the fill's error")
        _ = try await plain.value
        #expect(transport.calls.map(\.after) == [StampID(rawValue: 20_000), StampID(rawValue: 20_000), nil], "the call with no floor filled again, without one")
    }

    @Test func aCancelledWaiterLeavesTheFillToTheOthers() async throws {
        let transport = FakeTransport()
        Self.setNodes(transport, .gated)
        let client = Self.client(transport, clock: ManualClock(), prefetch: .init(capacity: 64, maximumAge: .seconds(10)))
        let leader = Task { try await client.nextID() }
        await transport.waitForCalls(1)
        let cancelled = Task { try await client.nextID() }
        let other = Task { try await client.nextID() }
        await Self.waitForRequestsOrWaiters(client, transport, 3)
        cancelled.cancel()
        while client.waitingForFill(shard: 0) > 1 { await Task.yield() }
        try #require(transport.calls.count == 1, "the calls that missed wait for the fill in flight")
        let error = await #expect(throws: StampClientError.self) { try await cancelled.value }
        #expect(error?.code == .cancelled, "a cancelled waiter is answered at once, before the fill ends")
        transport.openGate()
        let ids = [try await leader.value, try await other.value]
        #expect(ids[0] != ids[1])
        #expect(transport.calls.count == 1, "the fill went on for the others")
    }

    @Test func aCancelledFillerHandsTheFillToAWaiter() async throws {
        let transport = FakeTransport()
        Self.setNodes(transport, .hang)
        let client = Self.client(transport, clock: ManualClock(), prefetch: .init(capacity: 64, maximumAge: .seconds(10)))
        let leader = Task { try await client.nextID() }
        await transport.waitForCalls(1)
        Self.setNodes(transport, .issue)
        let waiter = Task { try await client.nextID() }
        await Self.waitForRequestsOrWaiters(client, transport, 2)
        #expect(transport.calls.count == 1, "the call that missed waits for the fill in flight")
        leader.cancel()
        let error = await #expect(throws: StampClientError.self) { try await leader.value }
        #expect(error?.code == .cancelled)
        _ = try await waiter.value
        #expect(transport.calls.count == 2, "the waiter filled the buffer itself once the filler was cancelled")
    }

    @Test func missesWaitForTheBackgroundRefillInFlight() async throws {
        let transport = FakeTransport()
        let client = Self.client(transport, clock: ManualClock(), prefetch: .init(capacity: 4, refillBelow: 2, maximumAge: .seconds(10)))
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await client.run() }
            _ = try await client.nextID()
            Self.setNodes(transport, .gated)
            for _ in 0..<3 { _ = try await client.nextID() }
            // The take that left one ID asked for a refill, which is out; the buffer is empty now.
            await transport.waitForCalls(2)
            let calls = (0..<3).map { _ in Task { try await client.nextIDs(count: 2) } }
            await Self.waitForRequestsOrWaiters(client, transport, 5)
            #expect(transport.calls.count == 2, "the calls that missed wait for the refill in flight")
            transport.openGate()
            var ids: [StampID] = []
            for call in calls { ids += try await call.value }
            #expect(Set(ids).count == 6)
            #expect(transport.calls.count == 3, "after the refill of four, the one call still short filled again")
            group.cancelAll()
        }
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
