import Logging

/// Brings failed nodes back into use: every `probeInterval` it probes each node whose cool-down has
/// ended with `GET /health/ready`, and the node table makes ready ones healthy again and cools the
/// others down anew.
///
/// A probe that gives no answer within the attempt timeout counts as not ready.
final class HealthProber<C: Clock<Duration>>: Sendable where C.Instant: Sendable {
    private let nodes: Locked<NodeTable<C.Instant>>
    private let transport: any StampTransport
    private let clock: C
    private let interval: Duration
    private let timeout: Duration
    private let logger: Logger

    init(nodes: Locked<NodeTable<C.Instant>>, transport: any StampTransport, clock: C, interval: Duration, timeout: Duration, logger: Logger) {
        self.nodes = nodes
        self.transport = transport
        self.clock = clock
        self.interval = interval
        self.timeout = timeout
        self.logger = logger
    }

    /// Probes the due nodes every interval until cancelled.
    func run() async {
        while !Task.isCancelled {
            await probeDueNodes()
            do {
                try await clock.sleep(for: interval)
            } catch {
                return
            }
        }
    }

    /// Probes, concurrently, every node whose cool-down has ended; returns when all have answered.
    func probeDueNodes() async {
        let due = nodes.withLock { $0.takeDueProbes(at: clock.now) }
        guard !due.isEmpty else { return }
        await withTaskGroup(of: (String, Bool).self) { group in
            for node in due {
                group.addTask { (node, await self.probe(node: node)) }
            }
            for await (node, ready) in group {
                nodes.withLock { $0.finishProbe(node, ready: ready, at: clock.now) }
                logger.log(level: ready ? .info : .debug, "probed node", metadata: ["stamp.node": "\(node)", "stamp.ready": "\(ready)"])
            }
        }
    }

    /// Whether `node` answers its readiness probe within the timeout.
    private func probe(node: String) async -> Bool {
        let transport = self.transport
        return await withTimeout(timeout, on: clock, timedOut: false, cancelled: false) {
            await transport.probe(node: node)
        }
    }
}
