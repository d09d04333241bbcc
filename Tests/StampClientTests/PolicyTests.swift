import Logging
import MetricsTestKit
import StampCore
import StampTesting
import Testing
@testable import StampClient

/// The retry policy, timed by a manual clock against a fake transport: no test sleeps.
@Suite("Client policy")
struct PolicyTests {
    static let nodes = ["http://a", "http://b", "http://c"]

    static func client(_ transport: FakeTransport, clock: ManualClock, configuration: StampClientConfiguration = StampClientConfiguration(nodes: nodes, discoveryInterval: nil), metrics: TestMetrics = TestMetrics()) -> StampIDClient<ManualClock> {
        StampIDClient(configuration: configuration, transport: transport, clock: clock, logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }), metricsFactory: metrics)
    }

    /// Returns once the client has begun its `count`th retry delay and sleeps on the clock.
    static func waitForRetryDelay(_ client: StampIDClient<ManualClock>, clock: ManualClock, count: Int = 1) async {
        while client.retryDelaysStarted < count { await Task.yield() }
        await clock.waitForSleepers(count: 1)
    }

    @Test func firstAttemptSucceeds() async throws {
        let transport = FakeTransport()
        let client = Self.client(transport, clock: ManualClock())
        let first = try await client.nextID(shard: 3)
        let second = try await client.nextID(shard: 3)
        #expect(second > first)
        #expect(transport.calls.map(\.shard) == [3, 3])
        #expect(transport.calls[1].after == first, "each request sends the last ID returned")
        #expect(client.statistics.retries == 0)
    }

    @Test func timeoutThenFailoverAfterTheRetryDelay() async throws {
        let transport = FakeTransport()
        transport.set("http://a", .hang)
        let clock = ManualClock()
        let client = Self.client(transport, clock: clock)
        async let id = client.nextID()
        await transport.waitForCalls(1)
        await clock.waitForSleepers(count: 1)
        clock.advance(by: .milliseconds(1999))
        #expect(client.retryDelaysStarted == 0, "the attempt has not timed out yet")
        clock.advance(by: .milliseconds(1))
        await Self.waitForRetryDelay(client, clock: clock)
        #expect(transport.calls.count == 1, "the retry waits for its delay")
        clock.advance(by: .seconds(1))
        _ = try await id
        #expect(transport.calls.map(\.node) == ["http://a", "http://b"])
        #expect(client.statistics.failovers == 1)
        #expect(client.statistics.retries == 1)
    }

    /// Node b's counter runs behind the others' (see ``FakeTransport``): the IDs ascend across
    /// nodes and across a failover to it only because every attempt asks above the last ID returned.
    @Test func idsAscendAcrossAFailoverToANodeBehind() async throws {
        let transport = FakeTransport()
        let clock = ManualClock()
        let client = Self.client(transport, clock: clock)
        var ids: [StampID] = []
        for _ in Self.nodes { ids.append(try await client.nextID()) }
        transport.set("http://a", .fail(TransportFailure(.connection, detail: "reset")))
        async let failedOver = client.nextID()
        await Self.waitForRetryDelay(client, clock: clock)
        clock.advance(by: .seconds(1))
        ids.append(try await failedOver)
        #expect(transport.calls.map(\.node) == ["http://a", "http://b", "http://c", "http://a", "http://b"])
        #expect(client.statistics.failovers == 1)
        #expect(zip(ids, ids.dropFirst()).allSatisfy { $0 < $1 }, "IDs out of order: \(ids)")
    }

    @Test func retriesThreeTimesOneSecondApartThenFails() async throws {
        let transport = FakeTransport()
        for node in Self.nodes { transport.set(node, .fail(TransportFailure(.unavailable, status: 503, detail: "refused"))) }
        let clock = ManualClock()
        let client = Self.client(transport, clock: clock)
        let task = Task { () async throws(StampClientError) -> StampID in try await client.nextID() }
        for attempt in 1...3 {
            await Self.waitForRetryDelay(client, clock: clock, count: attempt)
            #expect(transport.calls.count == attempt)
            clock.advance(by: .milliseconds(999))
            #expect(transport.calls.count == attempt, "no retry before the delay has passed")
            clock.advance(by: .milliseconds(1))
        }
        let error = await #expect(throws: StampClientError.self) { try await task.value }
        #expect(error?.code == .allNodesFailed)
        #expect(error?.attempts.map(\.node) == ["http://a", "http://b", "http://c", "http://a"])
        #expect(error?.attempts.allSatisfy { $0.failure.kind == .unavailable } == true)
    }

    @Test func badRequestIsNotRetried() async throws {
        let transport = FakeTransport()
        transport.set("http://a", .fail(TransportFailure(.invalidRequest, status: 400, detail: "shard must be a whole number from 0 to 31")))
        let client = Self.client(transport, clock: ManualClock())
        let error = await #expect(throws: StampClientError.self) { try await client.nextID(shard: 99) }
        #expect(error?.code == .invalidRequest)
        #expect(error?.message.contains("shard") == true)
        #expect(transport.calls.count == 1)
    }

    @Test func afterTooFarAheadFailsOverWithoutCoolingTheNodeDown() async throws {
        let transport = FakeTransport()
        transport.set("http://a", .fail(TransportFailure(.afterTooFarAhead, status: 409, detail: "ahead")))
        let clock = ManualClock()
        let client = Self.client(transport, clock: clock)
        async let id = client.nextID()
        await Self.waitForRetryDelay(client, clock: clock)
        clock.advance(by: .seconds(1))
        _ = try await id
        #expect(transport.calls.map(\.node) == ["http://a", "http://b"])
    }

    @Test func budgetExhaustionStopsRetries() async throws {
        let transport = FakeTransport()
        for node in Self.nodes { transport.set(node, .fail(TransportFailure(.connection, detail: "refused"))) }
        let clock = ManualClock()
        let configuration = StampClientConfiguration(nodes: Self.nodes, retryBudget: .init(ratio: 0.5, minimumPerSecond: 0, capacity: 10), discoveryInterval: nil)
        let client = Self.client(transport, clock: clock, configuration: configuration)
        // The first request deposits half a token: not enough for one retry.
        let error = await #expect(throws: StampClientError.self) { try await client.nextID() }
        #expect(error?.code == .retryBudgetExhausted)
        #expect(transport.calls.count == 1)
        // The second brings the bucket to one token: one retry, then the budget is spent.
        let task = Task { () async throws(StampClientError) -> StampID in try await client.nextID() }
        await Self.waitForRetryDelay(client, clock: clock)
        clock.advance(by: .seconds(1))
        let second = await #expect(throws: StampClientError.self) { try await task.value }
        #expect(second?.code == .retryBudgetExhausted)
        #expect(transport.calls.count == 3)
    }

    @Test func bucketRefillsWithTheFloor() {
        let clock = ManualClock()
        var bucket = RetryBucket(budget: .init(ratio: 0.2, minimumPerSecond: 2, capacity: 5), now: clock.now)
        #expect(bucket.tokens == 5, "starts with ten seconds of the floor, capped")
        let granted = (0..<6).map { _ in bucket.withdraw(at: clock.now) }
        #expect(granted == [true, true, true, true, true, false])
        clock.advance(by: .milliseconds(500))
        let afterHalfSecond = bucket.withdraw(at: clock.now)
        #expect(afterHalfSecond, "half a second of a 2/s floor is one token")
        for _ in 0..<5 { bucket.recordRequest(at: clock.now) }
        let afterRequests = [bucket.withdraw(at: clock.now), bucket.withdraw(at: clock.now)]
        #expect(afterRequests == [true, false], "five requests at 0.2 are one token")
    }

    @Test func failedNodeCoolsDownAndIsProbedBeforeUse() async throws {
        let clock = ManualClock()
        var table = NodeTable<ManualClock.Instant>(addresses: ["http://a/", "http://b"], coolDown: .seconds(2))
        #expect(table.addresses == ["http://a", "http://b"])
        let first = table.choose(excluding: [])
        #expect(first == "http://a")
        table.finish("http://a", failed: true, at: clock.now)
        #expect(table.choose(excluding: []) == "http://b")
        table.finish("http://b", failed: false, at: clock.now)
        #expect(table.choose(excluding: []) == "http://b", "a cooling node is skipped")
        table.finish("http://b", failed: false, at: clock.now)
        clock.advance(by: .seconds(1))
        #expect(table.takeDueProbes(at: clock.now).isEmpty)
        clock.advance(by: .seconds(1))
        #expect(table.takeDueProbes(at: clock.now) == ["http://a"])
        #expect(table.health(of: "http://a") == .probing)
        #expect(table.choose(excluding: []) == "http://b", "a node being probed is not used")
        table.finish("http://b", failed: false, at: clock.now)
        table.finishProbe("http://a", ready: true, at: clock.now)
        #expect(table.health(of: "http://a") == .healthy)
    }

    @Test func probeLoopRestoresANodeThatIsReadyAgain() async throws {
        let transport = FakeTransport()
        transport.set("http://a", .fail(TransportFailure(.connection, detail: "reset")))
        let clock = ManualClock()
        let client = Self.client(transport, clock: clock)
        async let id = client.nextID()
        await Self.waitForRetryDelay(client, clock: clock)
        clock.advance(by: .seconds(1))
        _ = try await id
        transport.set("http://a", .issue)
        clock.advance(by: .seconds(2))
        await client.probeDueNodes()
        #expect(client.nodes == Self.nodes)
        _ = try await client.nextID()
        _ = try await client.nextID()
        #expect(transport.calls.suffix(2).map(\.node).contains("http://a"), "the probed node receives requests again")
    }

    @Test func hungNodeStopsReceivingNewRequests() async throws {
        let transport = FakeTransport()
        transport.set("http://a", .hang)
        let clock = ManualClock()
        let client = Self.client(transport, clock: clock)
        let hung = Task { try await client.nextID() }
        await transport.waitForCalls(1)
        for _ in 0..<10 { _ = try await client.nextID() }
        #expect(transport.calls.filter { $0.node == "http://a" }.count == 1, "the node with a request in flight is avoided")
        hung.cancel()
        _ = await hung.result
    }

    @Test func discoveryAddsAndRemovesNodes() async throws {
        let transport = FakeTransport()
        let clock = ManualClock()
        let client = Self.client(transport, clock: clock, configuration: StampClientConfiguration(nodes: ["http://a", "http://b"], discoveryInterval: .seconds(10)))
        transport.setCluster(["http://b", "http://d"])
        await client.discover()
        #expect(client.nodes == ["http://b", "http://d"])
        for _ in 0..<6 { _ = try await client.nextID() }
        let nodes = Set(transport.calls.map(\.node))
        #expect(nodes == ["http://b", "http://d"])
        transport.setCluster([])
        await client.discover()
        #expect(client.nodes == ["http://a", "http://b"], "with no listed node the static list is used")
    }

    @Test func metricsCountAttemptsRetriesAndFailovers() async throws {
        let transport = FakeTransport()
        transport.set("http://a", .fail(TransportFailure(.connection, detail: "reset")))
        let clock = ManualClock()
        let metrics = TestMetrics()
        let client = Self.client(transport, clock: clock, metrics: metrics)
        async let id = client.nextID()
        await Self.waitForRetryDelay(client, clock: clock)
        clock.advance(by: .seconds(1))
        _ = try await id
        #expect(try metrics.expectCounter("stamp_client_retries_total").totalValue == 1)
        #expect(try metrics.expectCounter("stamp_client_failovers_total").totalValue == 1)
        #expect(try metrics.expectCounter("stamp_client_attempts_total", [("outcome", "connection")]).totalValue == 1)
        #expect(try metrics.expectCounter("stamp_client_attempts_total", [("outcome", "ok")]).totalValue == 1)
    }
}
