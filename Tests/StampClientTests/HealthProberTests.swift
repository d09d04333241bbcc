import Logging
import StampCore
import StampTesting
import Testing
@testable import StampClient

/// The health prober alone, on a node table and a manual clock.
@Suite("Client health prober")
struct HealthProberTests {
    static func prober(_ transport: FakeTransport, clock: ManualClock, nodes: Locked<NodeTable<ManualClock.Instant>>) -> HealthProber<ManualClock> {
        HealthProber(nodes: nodes, transport: transport, clock: clock, interval: .milliseconds(250), timeout: .seconds(2), logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }))
    }

    /// A table of two nodes whose first has just failed.
    static func tableWithAFailedNode(clock: ManualClock) -> Locked<NodeTable<ManualClock.Instant>> {
        let nodes = Locked(NodeTable<ManualClock.Instant>(addresses: ["http://a", "http://b"], coolDown: .seconds(2)))
        nodes.withLock { table in
            _ = table.choose(excluding: [])
            table.finish("http://a", failed: true, at: clock.now)
        }
        return nodes
    }

    @Test func aNodeNotReadyCoolsDownAnewAndAReadyOneIsHealthy() async {
        let clock = ManualClock()
        let nodes = Self.tableWithAFailedNode(clock: clock)
        let transport = FakeTransport()
        transport.set("http://a", .fail(TransportFailure(.unavailable, status: 503, detail: "not ready")))
        let prober = Self.prober(transport, clock: clock, nodes: nodes)
        let health = { nodes.withLock { $0.health(of: "http://a") } }
        clock.advance(by: .seconds(1))
        await prober.probeDueNodes()
        #expect(health() == .coolingDown(until: ManualClock.Instant(offset: .seconds(2))), "not probed before its cool-down ends")
        clock.advance(by: .seconds(1))
        await prober.probeDueNodes()
        #expect(health() == .coolingDown(until: ManualClock.Instant(offset: .seconds(4))), "cooling down again from the probe")
        transport.set("http://a", .issue)
        clock.advance(by: .seconds(2))
        await prober.probeDueNodes()
        #expect(health() == .healthy)
    }

    @Test(.timeLimit(.minutes(1))) func runProbesEveryInterval() async throws {
        let clock = ManualClock()
        let nodes = Self.tableWithAFailedNode(clock: clock)
        let transport = FakeTransport()
        let prober = Self.prober(transport, clock: clock, nodes: nodes)
        let running = Task { await prober.run() }
        await clock.waitForSleepers(count: 1)
        #expect(nodes.withLock { $0.health(of: "http://a") } != .healthy, "the first round finds no node due")
        clock.advance(by: .seconds(2))
        // The round after the interval probes the node whose cool-down has ended.
        while nodes.withLock({ $0.health(of: "http://a") }) != .healthy { await Task.yield() }
        running.cancel()
        await running.value
        #expect(transport.calls.isEmpty, "probes send no ID request")
    }
}
