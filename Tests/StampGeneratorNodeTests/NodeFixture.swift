import Logging
import Metrics
import MetricsTestKit
@testable import StampGeneratorNode
import StampCoordination
import StampCore
import StampTesting

/// A generator node on an in-memory store, with every clock manual.
struct NodeFixture {
    static let start: Int64 = 1_767_225_600_000

    let store: InMemoryCoordinationStore
    let wallClock: ManualWallClock
    let clock: ManualClock
    let metrics: TestMetrics
    let node: GeneratorNode<ManualClock>

    init(store: InMemoryCoordinationStore? = nil, wallClock: ManualWallClock? = nil, configuration: NodeConfiguration = NodeConfiguration(), listening: ListeningAddress? = nil) {
        let wallClock = wallClock ?? ManualWallClock(unixMilliseconds: Self.start)
        self.wallClock = wallClock
        self.store = store ?? InMemoryCoordinationStore(clock: ManualWallClock(unixMilliseconds: Self.start))
        self.clock = ManualClock()
        self.metrics = TestMetrics()
        self.node = GeneratorNode(configuration: configuration, store: self.store, clock: clock, wallClock: wallClock, logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }), metricsFactory: metrics, listening: listening)
    }

    /// Prepares the store, claims a node ID and persists the first reservation.
    func start() async throws {
        try await node.prepare()
        _ = await node.step()
        _ = await node.step()
    }

    /// Moves the node's wall clock, its monotonic clock and the store's clock forward together.
    func advance(milliseconds: Int64) {
        wallClock.advance(milliseconds: milliseconds)
        store.clock.advance(milliseconds: milliseconds)
        clock.advance(by: .milliseconds(milliseconds))
    }

    /// Counter value for `label` with `dimensions`, or 0 when never made.
    func counter(_ label: String, _ dimensions: [(String, String)] = []) -> Int64 {
        (try? metrics.expectCounter(label, dimensions).totalValue) ?? 0
    }
}
