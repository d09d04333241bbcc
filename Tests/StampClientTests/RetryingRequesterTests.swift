import Logging
import MetricsTestKit
import StampCore
import StampTesting
import Testing
@testable import StampClient

/// The retry and failover loop alone, against a fake transport and a manual clock, with the shard
/// ledger it asks above in the test's hands.
@Suite("Client retrying requester")
struct RetryingRequesterTests {
    static func requester(_ transport: FakeTransport, clock: ManualClock, nodes: [String] = PolicyTests.nodes, table: Locked<NodeTable<ManualClock.Instant>>? = nil, maximumRetries: Int = 3, ledger: Locked<ShardLedger> = Locked(ShardLedger()), metrics: TestMetrics = TestMetrics(), counters: StatisticsCounters = StatisticsCounters()) -> RetryingRequester<ManualClock> {
        RetryingRequester(
            configuration: StampClientConfiguration(nodes: nodes, maximumRetries: maximumRetries, discoveryInterval: nil),
            transport: transport,
            clock: clock,
            nodes: table ?? Locked(NodeTable(addresses: nodes, coolDown: .seconds(2))),
            ledger: ledger,
            logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }),
            metrics: ClientMetrics(factory: metrics),
            counters: counters
        )
    }

    /// Returns once the requester has begun its `count`th retry delay and sleeps on the clock.
    static func waitForRetryDelay(_ requester: RetryingRequester<ManualClock>, clock: ManualClock, count: Int = 1) async {
        while requester.retryDelaysStarted < count { await Task.yield() }
        await clock.waitForSleepers(count: 1)
    }

    @Test func everyAttemptAsksAboveTheLedgerAndTheFloor() async throws {
        let transport = FakeTransport()
        let ledger = Locked(ShardLedger())
        ledger.withLock { $0.recordReturned([StampID(rawValue: 5_000)!], shard: 2) }
        let requester = Self.requester(transport, clock: ManualClock(), ledger: ledger)
        let ids = try await requester.request(shard: 2, count: 3, above: nil)
        let aboveFloor = try await requester.request(shard: 2, count: 1, above: StampID(rawValue: 9_000)!)
        #expect(transport.calls.map(\.after) == [StampID(rawValue: 5_000), StampID(rawValue: 9_000)])
        #expect(ids.allSatisfy { $0.rawValue > 5_000 } && aboveFloor[0].rawValue > 9_000)
        #expect(ledger.withLock { $0.after(shard: 2, floor: nil) } == StampID(rawValue: 5_000), "recording the IDs is the caller's")
    }

    @Test func anAnswerNotAboveTheShardsLastIDIsInvalidAndRetriedElsewhere() async throws {
        let transport = FakeTransport()
        transport.set("http://a", .answer([StampID(rawValue: 10)!]))
        let clock = ManualClock()
        let ledger = Locked(ShardLedger())
        ledger.withLock { $0.recordReturned([StampID(rawValue: 5_000)!], shard: 0) }
        let metrics = TestMetrics()
        let requester = Self.requester(transport, clock: clock, ledger: ledger, metrics: metrics)
        let task = Task { () async throws(StampClientError) -> [StampID] in try await requester.request(shard: 0, count: 1, above: nil) }
        await Self.waitForRetryDelay(requester, clock: clock)
        clock.advance(by: .seconds(1))
        let ids = try await task.value
        #expect(ids[0].rawValue > 5_000)
        #expect(transport.calls.map(\.node) == ["http://a", "http://b"])
        #expect(try metrics.expectCounter("stamp_client_attempts_total", [("outcome", "invalid-response")]).totalValue == 1)
    }

    @Test func anAnswerWithTheWrongCountIsInvalid() async throws {
        let transport = FakeTransport()
        transport.set("http://a", .answer([StampID(rawValue: 10)!, StampID(rawValue: 11)!]))
        let requester = Self.requester(transport, clock: ManualClock(), nodes: ["http://a"], maximumRetries: 0)
        let error = await #expect(throws: StampClientError.self) { try await requester.request(shard: 0, count: 1, above: nil) }
        #expect(error?.code == .allNodesFailed)
        #expect(error?.attempts.map(\.failure.kind) == [.invalidResponse])
    }

    @Test func withoutNodesARequestFailsAtOnceAndCounts() async throws {
        let transport = FakeTransport()
        let counters = StatisticsCounters()
        let requester = Self.requester(transport, clock: ManualClock(), nodes: [], counters: counters)
        let error = await #expect(throws: StampClientError.self) { try await requester.request(shard: 0, count: 1, above: nil) }
        #expect(error?.code == .noNodes)
        #expect(transport.calls.isEmpty)
        #expect(counters.snapshot.requests == 1)
        #expect(counters.snapshot.failures == 1)
    }

    @Test func cancellingDuringTheRetryDelayFailsAsCancelledWithTheAttemptsSoFar() async throws {
        let transport = FakeTransport()
        for node in PolicyTests.nodes { transport.set(node, .fail(TransportFailure(.connection, detail: "refused"))) }
        let clock = ManualClock()
        let requester = Self.requester(transport, clock: clock)
        let task = Task { () async throws(StampClientError) -> [StampID] in try await requester.request(shard: 0, count: 1, above: nil) }
        await Self.waitForRetryDelay(requester, clock: clock)
        task.cancel()
        let error = await #expect(throws: StampClientError.self) { try await task.value }
        #expect(error?.code == .cancelled)
        #expect(error?.attempts.map(\.node) == ["http://a"])
        #expect(transport.calls.count == 1, "no attempt after the cancelled delay")
    }

    @Test func aCallCancelledByItsCallerLeavesTheNodeHealthy() async throws {
        let transport = FakeTransport()
        transport.set("http://a", .hang)
        let clock = ManualClock()
        let table = Locked(NodeTable<ManualClock.Instant>(addresses: PolicyTests.nodes, coolDown: .seconds(2)))
        let requester = Self.requester(transport, clock: clock, table: table)
        let task = Task { () async throws(StampClientError) -> [StampID] in try await requester.request(shard: 0, count: 1, above: nil) }
        await transport.waitForCalls(1)
        task.cancel()
        let error = await #expect(throws: StampClientError.self) { try await task.value }
        #expect(error?.code == .cancelled)
        #expect(table.withLock { $0.health(of: "http://a") } == .healthy, "the caller gave up; the node did not fail")
        #expect(table.withLock { $0.nodes.map(\.inFlight) } == [0, 0, 0])
        #expect(transport.calls.map(\.node) == ["http://a"])
    }
}

/// The race of an operation against a deadline on the client's clock.
@Suite("Client timeouts")
struct WithTimeoutTests {
    @Test func anAnswerBeforeTheDeadlineWins() async {
        let answer = await withTimeout(.seconds(1), on: ManualClock(), timedOut: "timed out", cancelled: "cancelled") { "answered" }
        #expect(answer == "answered")
    }

    @Test func theDeadlineEndsAnOperationThatDoesNotAnswer() async {
        let clock = ManualClock()
        let task = Task {
            await withTimeout(.seconds(1), on: clock, timedOut: "timed out", cancelled: "cancelled") { () async -> String in
                try? await ManualClock.waitForCancellation()
                return Task.isCancelled ? "cancelled by the deadline" : "answered"
            }
        }
        await clock.waitForSleepers(count: 1)
        clock.advance(by: .milliseconds(999))
        #expect(clock.sleeperCount == 1, "the deadline has not passed yet")
        clock.advance(by: .milliseconds(1))
        #expect(await task.value == "timed out")
    }
}
