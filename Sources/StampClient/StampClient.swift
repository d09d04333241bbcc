import Logging
import Metrics
import ServiceLifecycle
import StampCore

/// Gets IDs from a cluster of generator nodes, hiding every failure it can: it retries, fails
/// over, keeps per-shard order and can prefetch.
///
/// Run the client as a `Service` (or call ``run()`` in a task of your own) so that discovery,
/// health probes and prefetch refills happen; requests work without it, on the static nodes.
///
/// Order: for each shard, every ID the client returns is greater than every ID of that shard it
/// had returned when the request started (each attempt sends `after=<last ID returned>`), so a
/// client used by one task at a time sees strictly increasing IDs per shard, across failover.
///
/// The timing policy runs on the clock `C`; tests use a manual clock and never sleep.
public final class StampIDClient<C: Clock<Duration>>: Service, Sendable where C.Instant: Sendable {
    public let configuration: StampClientConfiguration
    // One part per job: the requester makes each request (attempts, timeouts, retries, failover),
    // the coalescer sends concurrent calls together, the prefetch refiller serves IDs from buffers
    // and refills them, the prober brings failed nodes back and discovery follows the cluster's
    // membership. They share the node table and the shard ledger.
    private let transport: any StampTransport
    private let counters: StatisticsCounters
    private let nodeTable: Locked<NodeTable<C.Instant>>
    private let ledger: Locked<ShardLedger>
    private let requester: RetryingRequester<C>
    /// Set when coalescing is on and prefetch off (prefetched calls are served from buffers instead).
    private let coalescer: Coalescer<C>?
    private let prefetcher: PrefetchRefiller<C>?
    private let prober: HealthProber<C>
    private let discovery: NodeDiscovery<C>

    /// Makes a client on `transport`, timing its policy with `clock`.
    ///
    /// - Parameters:
    ///   - configuration: The nodes and the policy.
    ///   - transport: How requests reach nodes; ``HTTPTransport`` in production.
    ///   - clock: Times attempts, retry delays, cool-downs and prefetch ages.
    ///   - logger: The application's logger; the client adds `stamp.*` metadata.
    ///   - metricsFactory: Where the client's metrics go.
    public init(configuration: StampClientConfiguration, transport: some StampTransport, clock: C, logger: Logger, metricsFactory: any MetricsFactory = MetricsSystem.factory) {
        self.configuration = configuration
        self.transport = transport
        let metrics = ClientMetrics(factory: metricsFactory)
        let nodeTable = Locked(NodeTable<C.Instant>(addresses: configuration.nodes, coolDown: configuration.coolDown))
        let ledger = Locked(ShardLedger())
        let counters = StatisticsCounters()
        let requester = RetryingRequester(configuration: configuration, transport: transport, clock: clock, nodes: nodeTable, ledger: ledger, logger: logger, metrics: metrics, counters: counters)
        self.nodeTable = nodeTable
        self.ledger = ledger
        self.counters = counters
        self.requester = requester
        prefetcher = configuration.prefetch.map { policy in
            PrefetchRefiller(policy: policy, requester: requester, ledger: ledger, clock: clock, logger: logger, metrics: metrics, counters: counters)
        }
        coalescer = configuration.prefetch == nil ? configuration.coalescing.map { Coalescer(policy: $0, requester: requester, ledger: ledger) } : nil
        prober = HealthProber(nodes: nodeTable, transport: transport, clock: clock, interval: configuration.probeInterval, timeout: configuration.attemptTimeout, logger: logger)
        discovery = NodeDiscovery(nodes: nodeTable, staticNodes: configuration.nodes, transport: transport, clock: clock, logger: logger)
    }

    /// The nodes the client knows now.
    public var nodes: [String] { nodeTable.withLock { $0.addresses } }

    /// The nodes the client takes as healthy now: not cooling down after a failure.
    public var healthyNodes: [String] {
        nodeTable.withLock { table in
            table.addresses.filter { address in
                if case .healthy = table.health(of: address) { return true }
                return false
            }
        }
    }

    /// How many retry delays have begun since the client was made.
    var retryDelaysStarted: Int { requester.retryDelaysStarted }

    /// How many IDs of `shard` are buffered now, including any too old to be handed out.
    func buffered(shard: Int) -> Int {
        ledger.withLock { $0.buffered(shard: shard) }
    }

    /// How many calls for `shard` wait for the prefetch fill in flight.
    func waitingForFill(shard: Int) -> Int {
        ledger.withLock { $0.waitingForFill(shard: shard) }
    }

    /// How many calls for `shard` wait to be coalesced into the next request.
    func waitingCalls(shard: Int) -> Int {
        coalescer?.waitingCalls(shard: shard) ?? 0
    }

    /// Running totals of requests, attempts, retries and failovers.
    public var statistics: StampClientStatistics { counters.snapshot }

    /// Returns one ID for `shard`, greater than `floor` when given.
    ///
    /// A floor orders IDs across clients: an application that knows the greatest ID of a record's
    /// history (written through any client) passes it, and the new ID sorts after it. Buffered
    /// IDs at or below the floor are skipped (they become gaps).
    public func nextID(shard: Int = 0, above floor: StampID? = nil) async throws(StampClientError) -> StampID {
        if let prefetcher, shard >= 0, let id = prefetcher.takeOne(shard: shard, above: floor) {
            return id
        }
        return try await next(shard: shard, count: 1, above: floor)[0]
    }

    /// One ID for `shard` from the prefetch buffer without waiting, or `nil` when the buffer holds
    /// none (or prefetch is off); a take that leaves the buffer low starts a refill, as
    /// ``nextID(shard:above:)`` does.
    public func bufferedID(shard: Int = 0) -> StampID? {
        guard let prefetcher, shard >= 0 else { return nil }
        return prefetcher.takeOne(shard: shard, above: nil)
    }

    /// Returns `count` ascending IDs for `shard`.
    public func nextIDs(shard: Int = 0, count: Int) async throws(StampClientError) -> [StampID] {
        try await next(shard: shard, count: count, above: nil)
    }

    /// Sends the call the way the configuration says: from the prefetch buffers, coalesced with
    /// other calls, or as a request of its own.
    private func next(shard: Int, count: Int, above floor: StampID?) async throws(StampClientError) -> [StampID] {
        guard shard >= 0, count >= 1 else {
            throw StampClientError(.invalidRequest, "shard must be 0 or more and count 1 or more; got shard \(shard), count \(count)")
        }
        if let prefetcher {
            return try await prefetcher.ids(shard: shard, count: count, above: floor)
        }
        if let coalescer, count <= coalescer.policy.maximumCount {
            return try await coalescer.ids(shard: shard, count: count, above: floor)
        }
        let ids = try await requester.request(shard: shard, count: count, above: floor)
        ledger.withLock { $0.recordReturned(ids, shard: shard) }
        return ids
    }

    /// Runs discovery, health probes and prefetch refills until cancelled or shut down gracefully,
    /// then closes the transport's connections.
    public func run() async throws {
        await cancelWhenGracefulShutdown {
            await withTaskGroup(of: Void.self) { group in
                group.addTask { await self.prober.run() }
                if let interval = self.configuration.discoveryInterval {
                    group.addTask { await self.discovery.run(every: interval) }
                }
                if let prefetcher = self.prefetcher {
                    group.addTask { await prefetcher.run() }
                }
                await group.waitForAll()
            }
        }
        await transport.shutdown()
    }

    /// Closes the transport's connections; for clients whose ``run()`` was never started.
    public func shutdown() async {
        await transport.shutdown()
    }

    /// Probes, concurrently, every node whose cool-down has ended; returns when all have answered.
    func probeDueNodes() async {
        await prober.probeDueNodes()
    }

    /// Asks one node for the cluster's members and adopts them; the static list when none has an address.
    func discover() async {
        await discovery.discover()
    }
}

extension StampIDClient where C == ContinuousClock {
    /// Makes a client that talks HTTP to the configured nodes, timed by the continuous clock.
    public convenience init(configuration: StampClientConfiguration, logger: Logger, metricsFactory: any MetricsFactory = MetricsSystem.factory) {
        self.init(
            configuration: configuration,
            transport: HTTPTransport(connectionsPerNode: configuration.connectionsPerNode, token: configuration.token),
            clock: ContinuousClock(),
            logger: logger,
            metricsFactory: metricsFactory
        )
    }
}
