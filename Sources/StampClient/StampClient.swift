import Logging
import Metrics
import ServiceLifecycle
import StampCore
import Synchronization

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
    private let transport: any StampTransport
    private let clock: C
    private let logger: Logger
    private let metrics: ClientMetrics
    private let counters = StatisticsCounters()
    private let state: Mutex<State>
    /// When the client was made: prefetch buffers time their IDs from here.
    private let origin: C.Instant
    private let refills: AsyncStream<Int>
    private let refillContinuation: AsyncStream<Int>.Continuation

    private struct State {
        var table: NodeTable<C.Instant>
        var bucket: RetryBucket<C.Instant>
        /// How many retry delays have begun, so that tests know when a request waits to retry.
        var retryDelaysStarted = 0
        /// For each shard, the greatest ID returned.
        var lastReturned: [Int: StampID] = [:]
        var buffers: [Int: PrefetchBuffer] = [:]
        var refillPending: Set<Int> = []
        /// For each shard, the calls waiting to be coalesced and the batches in flight.
        var queues: [Int: CoalescingQueue] = [:]
        /// The last number given to a coalesced call or batch.
        var lastCoalescingID: UInt64 = 0
    }

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
        self.clock = clock
        self.logger = logger
        metrics = ClientMetrics(factory: metricsFactory)
        origin = clock.now
        state = Mutex(State(table: NodeTable(addresses: configuration.nodes, coolDown: configuration.coolDown), bucket: RetryBucket(budget: configuration.retryBudget, now: origin)))
        (refills, refillContinuation) = AsyncStream.makeStream(of: Int.self, bufferingPolicy: .unbounded)
    }

    /// The nodes the client knows now.
    public var nodes: [String] { state.withLock { $0.table.addresses } }

    /// The nodes the client takes as healthy now: not cooling down after a failure.
    public var healthyNodes: [String] {
        state.withLock { state in
            state.table.addresses.filter { address in
                if case .healthy = state.table.health(of: address) { return true }
                return false
            }
        }
    }

    /// How many retry delays have begun since the client was made.
    var retryDelaysStarted: Int {
        state.withLock { $0.retryDelaysStarted }
    }

    /// How many IDs of `shard` are buffered now, including any too old to be handed out.
    func buffered(shard: Int) -> Int {
        state.withLock { $0.buffers[shard]?.count ?? 0 }
    }

    /// How many calls for `shard` wait to be coalesced into the next request.
    func waitingCalls(shard: Int) -> Int {
        state.withLock { $0.queues[shard]?.waiting.count ?? 0 }
    }

    /// Running totals of requests, attempts, retries and failovers.
    public var statistics: StampClientStatistics { counters.snapshot }

    /// Returns one ID for `shard`, greater than `floor` when given.
    ///
    /// A floor orders IDs across clients: an application that knows the greatest ID of a record's
    /// history (written through any client) passes it, and the new ID sorts after it. Buffered
    /// IDs at or below the floor are skipped (they become gaps).
    public func nextID(shard: Int = 0, above floor: StampID? = nil) async throws(StampClientError) -> StampID {
        if configuration.prefetch != nil, shard >= 0, let id = takeOneFromBuffer(shard: shard, above: floor) {
            return id
        }
        return try await next(shard: shard, count: 1, above: floor)[0]
    }

    /// The fast path of ``nextID(shard:above:)`` with prefetch: one ID from the buffer, or `nil` on a miss.
    private func takeOneFromBuffer(shard: Int, above floor: StampID?) -> StampID? {
        guard let prefetch = configuration.prefetch else { return nil }
        let now = origin.duration(to: clock.now)
        let (id, discarded, refill) = state.withLock { state -> (StampID?, Int, Bool) in
            guard state.buffers[shard] != nil else { return (nil, 0, false) }
            let skipped = floor.map { state.buffers[shard]!.drop(through: $0) } ?? 0
            var (id, discarded) = state.buffers[shard]!.takeOne(at: now, maximumAge: prefetch.maximumAge)
            discarded += skipped
            guard let id else { return (nil, discarded, false) }
            state.lastReturned[shard] = id
            let refill = state.buffers[shard]!.count < prefetch.refillBelow && state.refillPending.insert(shard).inserted
            return (id, discarded, refill)
        }
        recordTake(hits: id == nil ? 0 : 1, discarded: discarded, refill: refill, shard: shard)
        return id
    }

    /// Counts IDs handed out and discarded from a buffer, and asks `run()` for a refill when told to.
    private func recordTake(hits: Int, discarded: Int, refill: Bool, shard: Int) {
        if discarded > 0 {
            metrics.prefetchDiscarded.increment(by: discarded)
            counters.prefetchDiscarded.add(discarded, ordering: .relaxed)
        }
        if refill { refillContinuation.yield(shard) }
        if hits > 0 {
            metrics.prefetchHits.increment(by: hits)
            counters.prefetchHits.add(hits, ordering: .relaxed)
        }
    }

    /// Returns `count` ascending IDs for `shard`.
    public func nextIDs(shard: Int = 0, count: Int) async throws(StampClientError) -> [StampID] {
        try await next(shard: shard, count: count, above: nil)
    }

    private func next(shard: Int, count: Int, above floor: StampID?) async throws(StampClientError) -> [StampID] {
        guard shard >= 0, count >= 1 else {
            throw StampClientError(.invalidRequest, "shard must be 0 or more and count 1 or more; got shard \(shard), count \(count)")
        }
        guard let prefetch = configuration.prefetch else {
            if let coalescing = configuration.coalescing, count <= coalescing.maximumCount {
                return try await coalesced(shard: shard, count: count, above: floor, policy: coalescing)
            }
            return try await request(shard: shard, count: count, above: floor, into: nil)
        }
        while true {
            if let ids = takeFromBuffer(shard: shard, count: count, above: floor, prefetch: prefetch) {
                return ids
            }
            metrics.prefetchMisses.increment()
            _ = try await request(shard: shard, count: max(count, prefetch.capacity), above: floor, into: prefetch)
        }
    }

    /// Takes IDs from the shard's buffer, asking `run()` for a refill when it runs low.
    private func takeFromBuffer(shard: Int, count: Int, above floor: StampID?, prefetch: StampClientConfiguration.Prefetch) -> [StampID]? {
        let now = origin.duration(to: clock.now)
        let (ids, discarded, refill) = state.withLock { state -> ([StampID], Int, Bool) in
            let skipped = floor.map { state.buffers[shard, default: PrefetchBuffer()].drop(through: $0) } ?? 0
            var (ids, discarded) = state.buffers[shard, default: PrefetchBuffer()].take(count, at: now, maximumAge: prefetch.maximumAge)
            discarded += skipped
            // A miss is filled by the caller's own fetch; a hit that leaves the buffer low asks run() for a refill.
            let refill = !ids.isEmpty && state.buffers[shard]!.count < prefetch.refillBelow && state.refillPending.insert(shard).inserted
            if let last = ids.last { state.lastReturned[shard] = last }
            return (ids, discarded, refill)
        }
        recordTake(hits: ids.count, discarded: discarded, refill: refill, shard: shard)
        return ids.isEmpty ? nil : ids
    }

    /// Gets the call's IDs through the shard's coalescing queue: at once in a request of its own when
    /// fewer than `policy.requestsInFlight` are out, else in the next batch. Cancelling the call
    /// answers it at once; a batch whose every call was cancelled has its request cancelled.
    private func coalesced(shard: Int, count: Int, above floor: StampID?, policy: StampClientConfiguration.Coalescing) async throws(StampClientError) -> [StampID] {
        guard !Task.isCancelled else { throw fail(StampClientError(.cancelled, "the request was cancelled")) }
        let waiterID = state.withLock { state in
            state.lastCoalescingID += 1
            return state.lastCoalescingID
        }
        let result = await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                // Checked under the lock that the cancellation handler takes, so a call cancelled
                // before it is queued is answered here and never queued.
                let queued = state.withLock { state in
                    guard !Task.isCancelled else { return false }
                    state.queues[shard, default: CoalescingQueue()].append(.init(id: waiterID, count: count, floor: floor, continuation: continuation))
                    startBatches(shard: shard, policy: policy, state: &state)
                    return true
                }
                if !queued { continuation.resume(returning: .failure(fail(StampClientError(.cancelled, "the request was cancelled")))) }
            }
        } onCancel: {
            let cancelled = state.withLock { $0.queues[shard]?.cancel(waiterID) }
            cancelled?.abandonedBatch?.cancel()
            cancelled?.waiter.continuation.resume(returning: .failure(fail(StampClientError(.cancelled, "the request was cancelled"))))
        }
        return try result.get()
    }

    /// Starts a request for every batch the shard's queue may send now; called under the lock.
    private func startBatches(shard: Int, policy: StampClientConfiguration.Coalescing, state: inout State) {
        while true {
            state.lastCoalescingID += 1
            let batchID = state.lastCoalescingID
            guard let batch = state.queues[shard]!.nextBatch(id: batchID, requestsInFlight: max(1, policy.requestsInFlight), maximumCount: max(1, policy.maximumCount)) else { return }
            let task = Task { [self] in
                await send(batchID, shard: shard, count: batch.count, above: batch.floor, policy: policy)
            }
            state.queues[shard]!.setTask(task, of: batchID)
        }
    }

    /// Makes batch `batchID`'s request and hands each of its calls their share of the IDs (or the error).
    ///
    /// A batch asks above the highest floor among its calls. When every attempt failed because that
    /// floor was further ahead than the nodes' maximum lead, one call's floor may be to blame, so each
    /// call is then tried again on its own, with its own floor: only a call whose floor is too far
    /// ahead fails, as it would without coalescing.
    private func send(_ batchID: UInt64, shard: Int, count: Int, above floor: StampID?, policy: StampClientConfiguration.Coalescing) async {
        let result = await requestResult(shard: shard, count: count, above: floor)
        let waiters = state.withLock { state in
            defer { startBatches(shard: shard, policy: policy, state: &state) }
            return state.queues[shard]!.finish(batchID)
        }
        if case .failure(let error) = result, waiters.count > 1, !error.attempts.isEmpty,
           error.attempts.allSatisfy({ $0.failure.kind == .afterTooFarAhead }) {
            await withDiscardingTaskGroup { group in
                for waiter in waiters {
                    group.addTask { [self] in
                        waiter.continuation.resume(returning: await requestResult(shard: shard, count: waiter.count, above: waiter.floor))
                    }
                }
            }
            return
        }
        for waiter in waiters {
            waiter.continuation.resume(returning: result.map { Array($0[waiter.offset..<(waiter.offset + waiter.count)]) })
        }
    }

    /// ``request(shard:count:above:into:)`` without prefetch, as a result.
    private func requestResult(shard: Int, count: Int, above floor: StampID?) async -> Result<[StampID], StampClientError> {
        do throws(StampClientError) {
            return .success(try await request(shard: shard, count: count, above: floor, into: nil))
        } catch {
            return .failure(error)
        }
    }

    /// Makes one request with the retry policy. Without `prefetch` it returns the IDs and records
    /// them as returned; with it, it adds them to the shard's buffer.
    private func request(shard: Int, count: Int, above floor: StampID?, into prefetch: StampClientConfiguration.Prefetch?) async throws(StampClientError) -> [StampID] {
        let started = clock.now
        metrics.requests.increment()
        counters.requests.add(1, ordering: .relaxed)
        state.withLock { $0.bucket.recordRequest(at: started) }
        defer { metrics.requestDuration.recordNanoseconds(Self.nanoseconds(started.duration(to: clock.now))) }
        var failures: [StampClientError.Attempt] = []
        var tried: Set<String> = []
        var previous: String?
        for attempt in 0...max(0, configuration.maximumRetries) {
            if attempt > 0 {
                guard state.withLock({ $0.bucket.withdraw(at: clock.now) }) else {
                    logger.warning("retry budget exhausted", metadata: ["stamp.shard": "\(shard)", "stamp.attempts": "\(attempt)"])
                    throw fail(StampClientError(.retryBudgetExhausted, "the retry budget is spent; the cluster is failing too many requests", attempts: failures))
                }
                state.withLock { $0.retryDelaysStarted += 1 }
                do {
                    try await clock.sleep(for: retryDelay())
                } catch {
                    throw fail(StampClientError(.cancelled, "the request was cancelled", attempts: failures))
                }
                metrics.retries.increment()
                counters.retries.add(1, ordering: .relaxed)
            }
            let (chosen, after) = state.withLock { state in
                (state.table.choose(excluding: tried), [state.lastReturned[shard], state.buffers[shard]?.last, floor].compactMap { $0 }.max())
            }
            guard let node = chosen else {
                throw fail(StampClientError(.noNodes, "the client knows no node", attempts: failures))
            }
            if let previous, previous != node {
                metrics.failovers.increment()
                counters.failovers.add(1, ordering: .relaxed)
            }
            previous = node
            tried.insert(node)
            counters.attempts.add(1, ordering: .relaxed)
            let attemptStarted = clock.now
            let outcome = await attemptWithTimeout(node: node, shard: shard, count: count, after: after)
            let now = clock.now
            metrics.attemptDuration.recordNanoseconds(Self.nanoseconds(attemptStarted.duration(to: now)))
            switch outcome {
            case .success(let ids):
                metrics.attempts["ok"]?.increment()
                return state.withLock { state in
                    state.table.finish(node, failed: false, at: now)
                    if prefetch != nil {
                        let floor = state.lastReturned[shard]
                        state.buffers[shard, default: PrefetchBuffer()].insert(ids, fetchedAt: origin.duration(to: now), above: floor)
                        state.refillPending.remove(shard)
                    } else if let last = ids.last, state.lastReturned[shard].map({ last > $0 }) ?? true {
                        state.lastReturned[shard] = last
                    }
                    return ids
                }
            case .failure(let failure):
                metrics.attempts[failure.kind.rawValue]?.increment()
                failures.append(StampClientError.Attempt(node: node, failure: failure))
                let sick = failure.kind != .invalidRequest && failure.kind != .afterTooFarAhead
                let (cooling, cancelled) = state.withLock { state in
                    state.table.finish(node, failed: sick, at: now)
                    return (sick, Task.isCancelled)
                }
                logger.debug("attempt failed", metadata: [
                    "stamp.node": "\(node)", "stamp.shard": "\(shard)", "stamp.attempt": "\(attempt + 1)",
                    "stamp.failure": "\(failure.kind.rawValue)", "stamp.detail": "\(failure.detail)", "stamp.cooling_down": "\(cooling)",
                ])
                if cancelled {
                    throw fail(StampClientError(.cancelled, "the request was cancelled", attempts: failures))
                }
                if !failure.isRetryable {
                    throw fail(StampClientError(.invalidRequest, failure.detail, attempts: failures))
                }
            }
        }
        logger.warning("all attempts failed", metadata: ["stamp.shard": "\(shard)", "stamp.attempts": "\(failures.count)"])
        throw fail(StampClientError(.allNodesFailed, "every attempt failed (\(failures.count) attempts)", attempts: failures))
    }

    private func fail(_ error: StampClientError) -> StampClientError {
        metrics.failures[error.code]?.increment()
        counters.failures.add(1, ordering: .relaxed)
        return error
    }

    /// The pause before a retry: the delay plus a random share of the jitter.
    private func retryDelay() -> Duration {
        guard configuration.retryJitter > .zero else { return configuration.retryDelay }
        return configuration.retryDelay + configuration.retryJitter * Double.random(in: 0...1)
    }

    /// One attempt, ended by the attempt timeout if the transport has not answered by then. The
    /// IDs must ascend and exceed `after`, or the answer counts as invalid.
    private func attemptWithTimeout(node: String, shard: Int, count: Int, after: StampID?) async -> Result<[StampID], TransportFailure> {
        let transport = self.transport
        let clock = self.clock
        let timeout = configuration.attemptTimeout
        let outcome = await withTaskGroup(of: Result<[StampID], TransportFailure>?.self) { group in
            group.addTask {
                do throws(TransportFailure) {
                    return .success(try await transport.fetchIDs(node: node, shard: shard, count: count, after: after))
                } catch {
                    return .failure(error)
                }
            }
            group.addTask {
                do {
                    try await clock.sleep(for: timeout)
                    return .failure(TransportFailure(.timeout, detail: "no answer within \(timeout)"))
                } catch {
                    return nil
                }
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            return first ?? .failure(TransportFailure(.connection, detail: "cancelled"))
        }
        guard case .success(let ids) = outcome else { return outcome }
        guard ids.count == count else {
            return .failure(TransportFailure(.invalidResponse, detail: "asked for \(count) IDs, got \(ids.count)"))
        }
        var floor = after
        for id in ids {
            if let floor, id <= floor {
                return .failure(TransportFailure(.invalidResponse, detail: "IDs out of order: \(id) is not above \(floor)"))
            }
            floor = id
        }
        return outcome
    }

    /// Runs discovery, health probes and prefetch refills until cancelled or shut down gracefully,
    /// then closes the transport's connections.
    public func run() async throws {
        await cancelWhenGracefulShutdown {
            await withTaskGroup(of: Void.self) { group in
                group.addTask { await self.probeLoop() }
                if let interval = self.configuration.discoveryInterval {
                    group.addTask { await self.discoveryLoop(every: interval) }
                }
                if self.configuration.prefetch != nil {
                    group.addTask { await self.refillLoop() }
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

    /// Probes each cooled-down node with `GET /health/ready`, making ready ones healthy again.
    private func probeLoop() async {
        while !Task.isCancelled {
            await probeDueNodes()
            do {
                try await clock.sleep(for: configuration.probeInterval)
            } catch {
                return
            }
        }
    }

    /// Probes, concurrently, every node whose cool-down has ended; returns when all have answered.
    func probeDueNodes() async {
        let due = state.withLock { $0.table.takeDueProbes(at: clock.now) }
        guard !due.isEmpty else { return }
        await withTaskGroup(of: (String, Bool).self) { group in
            for node in due {
                group.addTask { (node, await self.probeWithTimeout(node: node)) }
            }
            for await (node, ready) in group {
                state.withLock { $0.table.finishProbe(node, ready: ready, at: clock.now) }
                logger.log(level: ready ? .info : .debug, "probed node", metadata: ["stamp.node": "\(node)", "stamp.ready": "\(ready)"])
            }
        }
    }

    /// Whether `node` answers its readiness probe within the attempt timeout.
    private func probeWithTimeout(node: String) async -> Bool {
        let transport = self.transport
        let clock = self.clock
        let timeout = configuration.attemptTimeout
        return await withTaskGroup(of: Bool.self) { group in
            group.addTask { await transport.probe(node: node) }
            group.addTask {
                try? await clock.sleep(for: timeout)
                return false
            }
            let ready = await group.next() ?? false
            group.cancelAll()
            return ready
        }
    }

    /// Reads `GET /v1/cluster` every `interval` and replaces the node list with what it says.
    private func discoveryLoop(every interval: Duration) async {
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
        let candidates = state.withLock { state in
            state.table.nodes.filter { $0.health == .healthy }.map(\.address) + state.table.nodes.filter { $0.health != .healthy }.map(\.address)
        }
        for node in candidates + configuration.nodes where !Task.isCancelled {
            let addresses: [String]
            do throws(TransportFailure) {
                addresses = try await transport.fetchCluster(node: node)
            } catch {
                logger.debug("discovery failed", metadata: ["stamp.node": "\(node)", "stamp.failure": "\(error)"])
                continue
            }
            let (added, removed) = state.withLock { $0.table.replace(with: addresses.isEmpty ? configuration.nodes : addresses) }
            if !added.isEmpty || !removed.isEmpty {
                logger.info("nodes changed", metadata: ["stamp.added": "\(added)", "stamp.removed": "\(removed)"])
            }
            return
        }
    }

    /// Refills each shard whose buffer ran low, one refill at a time.
    private func refillLoop() async {
        guard let prefetch = configuration.prefetch else { return }
        for await shard in refills {
            do throws(StampClientError) {
                _ = try await request(shard: shard, count: prefetch.capacity, above: nil, into: prefetch)
            } catch {
                state.withLock { _ = $0.refillPending.remove(shard) }
                logger.warning("prefetch refill failed", metadata: ["stamp.shard": "\(shard)", "stamp.error": "\(error.code.rawValue)"])
            }
        }
    }

    private static func nanoseconds(_ duration: Duration) -> Int64 {
        duration.components.seconds * 1_000_000_000 + duration.components.attoseconds / 1_000_000_000
    }
}

extension StampIDClient where C == ContinuousClock {
    /// Makes a client that talks HTTP to the configured nodes, timed by the continuous clock.
    public convenience init(configuration: StampClientConfiguration, logger: Logger, metricsFactory: any MetricsFactory = MetricsSystem.factory) {
        self.init(
            configuration: configuration,
            transport: HTTPTransport(connectionsPerNode: configuration.connectionsPerNode),
            clock: ContinuousClock(),
            logger: logger,
            metricsFactory: metricsFactory
        )
    }
}
