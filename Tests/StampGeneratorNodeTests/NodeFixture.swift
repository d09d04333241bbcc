import Foundation
import Logging
import Metrics
import MetricsTestKit
@testable import StampGeneratorNode
import StampHTTP
import StampCoordination
import StampCore
import StampTesting
import Synchronization
import Testing

/// A generator node on an in-memory store, with every clock manual.
struct NodeFixture {
    static let start: Int64 = 1_767_225_600_000

    let store: InMemoryCoordinationStore
    let wallClock: ManualWallClock
    /// The node's view of ``wallClock``, through which a test can hold one reading back.
    let readings: PausingWallClock
    let clock: ManualClock
    let metrics: TestMetrics
    let node: GeneratorNode<ManualClock>

    init(store: InMemoryCoordinationStore? = nil, wallClock: ManualWallClock? = nil, configuration: NodeConfiguration = NodeConfiguration(), listening: ListeningAddress? = nil, logs: RecordingLogHandler.Records? = nil) {
        let wallClock = wallClock ?? ManualWallClock(unixMilliseconds: Self.start)
        self.wallClock = wallClock
        self.readings = PausingWallClock(wallClock)
        self.store = store ?? InMemoryCoordinationStore(clock: ManualWallClock(unixMilliseconds: Self.start))
        self.clock = ManualClock()
        self.metrics = TestMetrics()
        self.node = GeneratorNode(configuration: configuration, store: self.store, clock: clock, wallClock: readings, logger: logs?.logger() ?? Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }), metricsFactory: metrics, listening: listening)
    }

    /// Prepares the store, claims a node ID and persists the first reservation. When the node ID had
    /// no stored reservation, the node's and the store's wall clocks then move on to the floor that the
    /// node set instead (claim time + 2 × maximum lead + 1 ms), so that IDs follow the wall clock; the
    /// monotonic clock stays, so that the lease's times count from the claim.
    func start() async throws {
        try await node.prepare()
        _ = await node.step()
        let hadReservation = try #require(node.node.flatMap { store.lease(of: $0) }).reservedUntilUnixMilliseconds > 0
        _ = await node.step()
        if !hadReservation {
            let wait = 2 * node.configuration.maxLeadMilliseconds + 1
            wallClock.advance(milliseconds: wait)
            store.clock.advance(milliseconds: wait)
        }
    }

    /// Moves the node's wall clock, its monotonic clock and the store's clock forward together.
    func advance(milliseconds: Int64) {
        wallClock.advance(milliseconds: milliseconds)
        store.clock.advance(milliseconds: milliseconds)
        clock.advance(by: .milliseconds(milliseconds))
    }

    /// Last value of the gauge `label`, or `nil` when never recorded.
    func gauge(_ label: String) -> Double? {
        try? metrics.expectGauge(label).lastValue
    }

    /// Counter value for `label` with `dimensions`, or 0 when never made.
    func counter(_ label: String, _ dimensions: [(String, String)] = []) -> Int64 {
        (try? metrics.expectCounter(label, dimensions).totalValue) ?? 0
    }
}

/// A wall clock that can hold one reading back, as a thread preempted right after reading the clock
/// would: the read after ``pauseNextRead()`` takes the time of ``base``, then waits for ``resume()``
/// before it returns that time.
final class PausingWallClock: WallClock {
    let base: ManualWallClock
    private let armed = Atomic(false)
    private let pausedReads = Atomic(0)
    private let resumed = DispatchSemaphore(value: 0)

    init(_ base: ManualWallClock) {
        self.base = base
    }

    func unixMilliseconds() -> Int64 {
        let time = base.unixMilliseconds()
        if armed.exchange(false, ordering: .acquiringAndReleasing) {
            pausedReads.add(1, ordering: .releasing)
            resumed.wait()
        }
        return time
    }

    /// Makes the next read wait, after taking the time, until ``resume()``.
    func pauseNextRead() {
        armed.store(true, ordering: .releasing)
    }

    /// Returns once a read is held back.
    func waitUntilPaused() async {
        while pausedReads.load(ordering: .acquiring) == 0 { await Task.yield() }
    }

    /// Lets the held-back read return.
    func resume() {
        resumed.signal()
    }
}

/// Runs `body` on a thread of its own, which may block (as on a paused clock reading) without
/// holding up the tasks of the test; the result is read with ``value()``.
final class BlockingCall<Value: Sendable>: Sendable {
    private let result = Mutex<Result<Value, any Error>?>(nil)

    init(_ body: @escaping @Sendable () throws -> Value) {
        let thread = Thread { [self] in
            let outcome = Result { try body() }
            result.withLock { $0 = outcome }
        }
        thread.start()
    }

    /// The result, once `body` has returned.
    func value() async -> Result<Value, any Error> {
        while true {
            if let outcome = result.withLock({ $0 }) { return outcome }
            await Task.yield()
        }
    }
}
