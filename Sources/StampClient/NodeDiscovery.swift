import Logging

/// Keeps the client's node list current from `GET /v1/cluster`: asks one node (healthy ones first,
/// then the rest, then the static list) for the cluster's members and replaces the node table's
/// list with those that have an address, or with the static list when none has.
///
/// Nodes still listed keep their health; new ones start healthy; missing ones are dropped.
final class NodeDiscovery<C: Clock<Duration>>: Sendable where C.Instant: Sendable {
    private let nodes: Locked<NodeTable<C.Instant>>
    private let staticNodes: [String]
    private let transport: any StampTransport
    private let clock: C
    private let logger: Logger

    init(nodes: Locked<NodeTable<C.Instant>>, staticNodes: [String], transport: any StampTransport, clock: C, logger: Logger) {
        self.nodes = nodes
        self.staticNodes = staticNodes
        self.transport = transport
        self.clock = clock
        self.logger = logger
    }

    /// Discovers the nodes every `interval` until cancelled.
    func run(every interval: Duration) async {
        while !Task.isCancelled {
            do {
                try await clock.sleep(for: interval)
            } catch {
                return
            }
            await discover()
        }
    }

    /// Asks one node for the cluster's members and adopts them; the static list when none has an address.
    func discover() async {
        let candidates = nodes.withLock { table in
            table.nodes.filter { $0.health == .healthy }.map(\.address) + table.nodes.filter { $0.health != .healthy }.map(\.address)
        }
        for node in candidates + staticNodes where !Task.isCancelled {
            let addresses: [String]
            do throws(TransportFailure) {
                addresses = try await transport.fetchCluster(node: node)
            } catch {
                logger.debug("discovery failed", metadata: ["stamp.node": "\(node)", "stamp.failure": "\(error)"])
                continue
            }
            let (added, removed) = nodes.withLock { $0.replace(with: addresses.isEmpty ? staticNodes : addresses) }
            if !added.isEmpty || !removed.isEmpty {
                logger.info("nodes changed", metadata: ["stamp.added": "\(added)", "stamp.removed": "\(removed)"])
            }
            return
        }
    }
}
