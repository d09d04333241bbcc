import Logging
import StampCore
import StampTesting
import Testing
@testable import StampClient

/// Request coalescing, against a fake transport whose node answers when the test opens a gate.
@Suite("Client coalescing")
struct CoalescingTests {
    static func client(_ transport: FakeTransport, requestsInFlight: Int = 1, maximumCount: Int = 100) -> StampIDClient<ManualClock> {
        let configuration = StampClientConfiguration(nodes: ["http://a"], discoveryInterval: nil, coalescing: .init(requestsInFlight: requestsInFlight, maximumCount: maximumCount))
        return PolicyTests.client(transport, clock: ManualClock(), configuration: configuration)
    }

    /// Returns once `count` calls for shard 0 wait to be coalesced.
    static func waitForWaitingCalls(_ client: StampIDClient<ManualClock>, _ count: Int) async {
        while client.waitingCalls(shard: 0) < count { await Task.yield() }
    }

    @Test func callsMadeWhileARequestIsOutGoTogetherInTheNext() async throws {
        let transport = FakeTransport()
        transport.set("http://a", .gated)
        let client = Self.client(transport)
        async let first = client.nextID(shard: 0)
        await transport.waitForCalls(1)
        let floor = StampID(rawValue: 5_000)!
        let calls = Task {
            try await withThrowingTaskGroup(of: [StampID].self) { group in
                for index in 0..<10 {
                    group.addTask { [try await client.nextID(shard: 0, above: index == 7 ? floor : nil)] }
                }
                group.addTask { try await client.nextIDs(shard: 0, count: 5) }
                return try await group.reduce(into: []) { $0.append($1) }
            }
        }
        await Self.waitForWaitingCalls(client, 11)
        #expect(transport.calls.count == 1, "the waiting calls send nothing while the request is out")
        transport.openGate()
        let firstID = try await first
        let answers = try await calls.value
        let ids = answers.flatMap { $0 }

        #expect(transport.calls.map(\.count) == [1, 15], "eleven calls, one request for their fifteen IDs")
        #expect(transport.calls[1].after == floor, "the batch asks above the highest floor among its calls")
        #expect(Set(ids).count == 15)
        #expect(ids.allSatisfy { $0 > floor && $0 > firstID })
        let batch = try #require(answers.first { $0.count == 5 })
        #expect(zip(batch, batch.dropFirst()).allSatisfy { $0 < $1 })
        #expect(client.statistics.requests == 2)
    }

    @Test func batchesStayWithinTheMaximumCount() async throws {
        let transport = FakeTransport()
        transport.set("http://a", .gated)
        let client = Self.client(transport, maximumCount: 4)
        async let first = client.nextID(shard: 0)
        await transport.waitForCalls(1)
        let calls = (0..<10).map { _ in Task { try await client.nextID(shard: 0) } }
        await Self.waitForWaitingCalls(client, 10)
        transport.openGate()
        _ = try await first
        var ids: Set<StampID> = []
        for call in calls { ids.insert(try await call.value) }
        #expect(ids.count == 10)
        #expect(transport.calls.map(\.count) == [1, 4, 4, 2])
    }

    @Test func aFailedBatchFailsEachOfItsCalls() async throws {
        let transport = FakeTransport()
        transport.set("http://a", .gated)
        let client = Self.client(transport)
        async let first = client.nextID(shard: 0)
        await transport.waitForCalls(1)
        let calls = (0..<3).map { _ in Task { try await client.nextID(shard: 0) } }
        await Self.waitForWaitingCalls(client, 3)
        transport.set("http://a", .fail(TransportFailure(.invalidRequest, detail: "shard out of range")))
        transport.openGate()
        _ = try await first
        for call in calls {
            await #expect(throws: StampClientError.self) { try await call.value }
        }
        #expect(transport.calls.map(\.count) == [1, 3])
        #expect(client.statistics.failures == 1)
    }

    @Test func cancellingACallAnswersItAtOnceAndSparesTheOthers() async throws {
        let transport = FakeTransport()
        transport.set("http://a", .hang)
        let client = Self.client(transport)
        let hung = Task { try await client.nextID(shard: 0) }
        await transport.waitForCalls(1)
        let waiting = Task { try await client.nextID(shard: 0) }
        let kept = Task { try await client.nextID(shard: 0) }
        await Self.waitForWaitingCalls(client, 2)

        waiting.cancel()
        let cancelled = await waiting.result
        #expect(throws: StampClientError.self) { try cancelled.get() }
        #expect(client.waitingCalls(shard: 0) == 1)

        transport.set("http://a", .issue)
        hung.cancel()
        let hungResult = await hung.result
        #expect(throws: StampClientError.self) { try hungResult.get() }
        let id = try await kept.value
        #expect(transport.calls.map(\.count) == [1, 1], "the cancelled waiting call was never sent")
        #expect(id.rawValue >= 1000)
    }

    @Test func withoutCoalescingEveryCallIsItsOwnRequest() async throws {
        let transport = FakeTransport()
        transport.set("http://a", .gated)
        let configuration = StampClientConfiguration(nodes: ["http://a"], discoveryInterval: nil, coalescing: nil)
        let client = PolicyTests.client(transport, clock: ManualClock(), configuration: configuration)
        let calls = (0..<5).map { _ in Task { try await client.nextID(shard: 0) } }
        await transport.waitForCalls(5)
        transport.openGate()
        for call in calls { _ = try await call.value }
        #expect(transport.calls.map(\.count) == [1, 1, 1, 1, 1])
    }

    /// A floor too far ahead for the nodes fails only its own call: the batch it made fail is split
    /// and each call is asked for again with its own floor.
    @Test func aFloorTooFarAheadFailsOnlyItsOwnCall() async throws {
        let transport = FakeTransport()
        transport.set("http://a", .gated)
        let configuration = StampClientConfiguration(nodes: ["http://a"], maximumRetries: 0, discoveryInterval: nil, coalescing: .init(requestsInFlight: 1))
        let client = PolicyTests.client(transport, clock: ManualClock(), configuration: configuration)
        async let first = client.nextID(shard: 0)
        await transport.waitForCalls(1)
        let limit = StampID(rawValue: 1_000_000)!
        let plain = (0..<3).map { _ in Task { try await client.nextID(shard: 0) } }
        let ahead = Task { try await client.nextID(shard: 0, above: StampID(rawValue: 5_000_000)!) }
        await Self.waitForWaitingCalls(client, 4)
        transport.set("http://a", .refuseAfterAbove(limit))
        transport.openGate()
        _ = try await first
        var ids: Set<StampID> = []
        for call in plain { ids.insert(try await call.value) }
        #expect(ids.count == 3)
        let refused = await ahead.result
        #expect(throws: StampClientError.self) { try refused.get() }
        #expect(transport.calls.map(\.count) == [1, 4, 1, 1, 1, 1], "the batch of four, then each call alone")
    }

    @Test func aPolicyBelowOneRequestInFlightStillSends() async throws {
        #expect(StampClientConfiguration.Coalescing(requestsInFlight: 0, maximumCount: -5) == .init(requestsInFlight: 1, maximumCount: 1))
        let transport = FakeTransport()
        var configuration = StampClientConfiguration(nodes: ["http://a"], discoveryInterval: nil)
        configuration.coalescing?.requestsInFlight = 0
        let client = PolicyTests.client(transport, clock: ManualClock(), configuration: configuration)
        _ = try await client.nextID(shard: 0)
        #expect(transport.calls.count == 1)
    }
}
