import Foundation
import Logging
import Metrics
import ServiceLifecycle
import StampAPI
import StampCore
import StampCoordination
import StampHTTP
import Synchronization

/// A generator node: holds a node ID under a lease, keeps its reservation ahead of need, and
/// issues IDs only while both are valid.
///
/// ``run()`` is the thin shell around ``LeaseKeeper``: it asks for the next action, performs it
/// against the store, reports the outcome, and sleeps on the injected clock. Request handlers call
/// ``issue(shard:count:after:_:)``, which never waits on the store.
public final class GeneratorNode<C: Clock<Duration>>: Service, Sendable where C.Instant: Sendable {
    /// The node's configuration.
    public let configuration: NodeConfiguration
    /// This process's owner identity in the store; new for every start.
    public let owner: String
    private let store: any CoordinationStore
    private let clock: C
    private let wallClock: any WallClock
    private let logger: Logger
    private let metrics: NodeMetrics
    private let listening: ListeningAddress?
    private let state: Mutex<State>
    /// Requests refused since the start, as `stamp_refusals_total` counts them.
    private let refusedTotal = Atomic<UInt64>(0)

    private struct State: @unchecked Sendable {
        var keeper: LeaseKeeper<C.Instant>
        private(set) var generator: IDGenerator?
        var reportedBackwardSteps: UInt64 = 0
        var storeReady = false
        /// Whether "issuing IDs" was logged since the node last could not issue.
        var announcedIssuing = false
        /// IDs issued by the generators of earlier claims.
        private var issuedBefore: UInt64 = 0
        /// Issued and refused totals over the last minute, for ``GeneratorNode/status()``.
        var activity = ActivityWindow<C.Instant>()

        init(keeper: LeaseKeeper<C.Instant>) {
            self.keeper = keeper
        }

        /// Replaces the generator (`nil` when the node stops issuing), keeping the count of IDs the
        /// one replaced issued.
        mutating func replaceGenerator(with new: IDGenerator?) {
            if let generator, generator !== new { issuedBefore += generator.statistics.issued }
            generator = new
        }

        /// IDs issued since the start, by every generator.
        var issuedTotal: UInt64 { issuedBefore + (generator?.statistics.issued ?? 0) }
    }

    /// - Parameter listening: Where the node's HTTP server listens, once it does: without an
    ///   ``NodeConfiguration/advertisedAddress``, the node waits for it and advertises it.
    public init(configuration: NodeConfiguration, store: any CoordinationStore, clock: C, wallClock: any WallClock = SystemWallClock(), logger: Logger, metricsFactory: any MetricsFactory = MetricsSystem.factory, listening: ListeningAddress? = nil) {
        self.configuration = configuration
        self.listening = listening
        self.owner = UUID().uuidString.lowercased()
        self.store = store
        self.clock = clock
        self.wallClock = wallClock
        var logger = logger
        logger[metadataKey: "stamp.owner"] = .string(owner)
        self.logger = logger
        self.metrics = NodeMetrics(layout: configuration.layout, factory: metricsFactory)
        self.state = Mutex(State(keeper: LeaseKeeper(configuration: configuration.lease, maxLeadMilliseconds: configuration.maxLeadMilliseconds)))
    }

    /// Prepares the store, then keeps the lease until graceful shutdown, and releases it.
    public func run() async throws {
        try await prepare()
        do {
            try await cancelWhenGracefulShutdown {
                while !Task.isCancelled {
                    if let until = await self.step() {
                        try await self.clock.sleep(until: until, tolerance: nil)
                    }
                }
            }
        } catch is CancellationError {
            // Shutting down: the sleep was cut short. Release the lease below either way.
        }
        await release()
    }

    /// Checks the configuration and the layout's lifetime, and records or checks the layout in the store.
    func prepare() async throws {
        let layout = configuration.layout
        try layout.checkLifetime(at: wallClock.unixMilliseconds(), minimumLifetimeMilliseconds: configuration.minimumLifetime.wholeMilliseconds)
        try configuration.validate()
        try await store.prepare(layout: layout)
        state.withLock { $0.storeReady = true }
        logger.info("coordination store ready", metadata: ["stamp.layout": "\(layout)"])
    }

    /// Performs one action of the lease keeper, or returns until when there is nothing to do.
    func step() async -> C.Instant? {
        defer { announceIssuing() }
        let action = state.withLock { state in
            let action = state.keeper.nextAction(now: clock.now, logicalUnixMilliseconds: logicalUnixMilliseconds(state))
            state.activity.record(at: clock.now, issued: state.issuedTotal, refused: refusedTotal.load(ordering: .relaxed))
            if state.keeper.lease == nil, state.generator != nil {
                state.replaceGenerator(with: nil)
                metrics.leaseHeld.record(0)
                logger.error("lease not confirmed within ttl - margin; stopped issuing", metadata: ["stamp.monotonic_us": "\(MonotonicTime.microseconds())"])
            }
            return action
        }
        switch action {
        case .claim:
            await claim()
            return nil
        case .renew(let node, let reservedUntil):
            await renew(node: node, reservedUntilUnixMilliseconds: reservedUntil)
            return nil
        case .wait(let until):
            // While the first IDs wait for the wall clock (above a floor ahead of it), wake when they can
            // be issued, so that readiness and the "issuing IDs" line follow at once.
            let excessLead = state.withLock { $0.generator?.statistics.leadMilliseconds ?? 0 } - configuration.maxLeadMilliseconds
            return excessLead > 0 ? min(until, clock.now.advanced(by: .milliseconds(excessLead))) : until
        }
    }

    private func claim() async {
        let address: String?
        if let advertised = configuration.advertisedAddress {
            address = advertised
        } else if let listening {
            // Shutting down before the server listened: there is nothing to advertise.
            guard let bound = await listening.value() else { return }
            address = bound.url
        } else {
            address = nil
        }
        let sentAt = clock.now
        let wallBefore = wallClock.unixMilliseconds()
        do {
            let (store, owner, ttl, nodeCount) = (store, owner, configuration.lease.ttl, configuration.layout.nodeCount)
            guard let lease = try await boundedStoreCall({ () async throws(CoordinationError) in try await store.claim(owner: owner, address: address, ttl: ttl, nodeCount: nodeCount) }) else {
                state.withLock { $0.keeper.claimFailed(at: clock.now) }
                metrics.claims["none-free"]?.increment()
                logger.warning("every node ID is held; retrying", metadata: ["stamp.node_count": "\(configuration.layout.nodeCount)"])
                return
            }
            let wallAfter = wallClock.unixMilliseconds()
            let generator = try IDGenerator(layout: configuration.layout, node: lease.node, maxLeadMilliseconds: configuration.maxLeadMilliseconds, wallClock: wallClock)
            let floorUnixMilliseconds: Int64
            if lease.reservedUntilUnixMilliseconds > 0 {
                floorUnixMilliseconds = lease.reservedUntilUnixMilliseconds
            } else {
                // No reservation: a new or wiped store. The previous owner of this node ID, such as this
                // process before a restart, may have issued IDs up to the maximum lead ahead of its clock,
                // which was within the skew bound (below the maximum lead) of the store's. The claim time
                // is the store's, so that a skewed clock here sets no floor far ahead. The generator borrows
                // up to the maximum lead, so a floor of the claim time plus twice the lead makes the first ID
                // wait until the wall clock has passed the claim time plus the lead.
                let claimedAt = lease.expiresAtUnixMilliseconds - configuration.lease.ttl.wholeMilliseconds
                floorUnixMilliseconds = claimedAt + 2 * configuration.maxLeadMilliseconds + 1
                logger.notice("the node ID has no stored reservation; issuing waits until the wall clock passes the claim time plus the maximum lead", metadata: [
                    "stamp.node_id": "\(lease.node)",
                    "stamp.issuing_from": "\(RFC3339.format(unixMilliseconds: claimedAt + configuration.maxLeadMilliseconds + 1))",
                    "stamp.monotonic_us": "\(MonotonicTime.microseconds())",
                ])
            }
            let floor = floorUnixMilliseconds - configuration.layout.epochUnixMilliseconds
            generator.withState { generatorState in
                generatorState.advance(toTimeAtLeast: floor)
                generatorState.timeLimit = floor
            }
            let validUntil = state.withLock { state in
                state.keeper.claimSucceeded(lease, sentAt: sentAt)
                state.replaceGenerator(with: generator)
                state.reportedBackwardSteps = 0
                return state.keeper.validUntil
            }
            measureClockSkew(against: lease, wallBefore: wallBefore, wallAfter: wallAfter)
            metrics.claims["ok"]?.increment()
            metrics.leaseHeld.record(1)
            logger.info("claimed node ID", metadata: [
                "stamp.node_id": "\(lease.node)",
                "stamp.floor": "\(RFC3339.format(unixMilliseconds: floorUnixMilliseconds))",
            ].merging(validityMetadata(sentAt: sentAt, validUntil: validUntil)) { first, _ in first })
        } catch {
            state.withLock { $0.keeper.claimFailed(at: clock.now) }
            metrics.claims["error"]?.increment()
            logger.warning("claim failed; retrying", metadata: ["stamp.error": "\(error)"])
        }
    }

    /// Runs a claim or renewal, which fails once it has not answered within one renewal interval:
    /// a call that hangs (a connection the store dropped, say) must not hold the lease keeper, which
    /// tries again after it, on time for the next renewal. Giving up on a call is safe whatever the
    /// store did with it: the node only takes its lease for less than it may be.
    private func boundedStoreCall(_ call: @escaping @Sendable () async throws(CoordinationError) -> NodeLease?) async throws(CoordinationError) -> NodeLease? {
        let timeout = configuration.lease.renewInterval
        return try await withDeadline(timeout, on: clock, timedOut: { CoordinationError(.unavailable, "the coordination store did not answer within \(timeout)") }, call)
    }

    private func renew(node: Int, reservedUntilUnixMilliseconds: Int64) async {
        let sentAt = clock.now
        let wallBefore = wallClock.unixMilliseconds()
        do {
            let (store, owner, ttl) = (store, owner, configuration.lease.ttl)
            if let lease = try await boundedStoreCall({ () async throws(CoordinationError) in
                try await store.renew(node: node, owner: owner, ttl: ttl, reservedUntilUnixMilliseconds: reservedUntilUnixMilliseconds)
            }) {
                let wallAfter = wallClock.unixMilliseconds()
                let validUntil = state.withLock { state in
                    state.keeper.renewSucceeded(lease, sentAt: sentAt)
                    let limit = state.keeper.reservedUntilUnixMilliseconds - configuration.layout.epochUnixMilliseconds
                    state.generator?.withState { $0.timeLimit = limit }
                    return state.keeper.validUntil
                }
                measureClockSkew(against: lease, wallBefore: wallBefore, wallAfter: wallAfter)
                metrics.renewals["ok"]?.increment()
                logger.debug("renewed lease", metadata: [
                    "stamp.node_id": "\(node)",
                    "stamp.reserved_until": "\(reservedUntilUnixMilliseconds)",
                ].merging(validityMetadata(sentAt: sentAt, validUntil: validUntil)) { first, _ in first })
            } else {
                state.withLock { state in
                    state.keeper.ownershipLost()
                    state.replaceGenerator(with: nil)
                }
                metrics.renewals["lost"]?.increment()
                metrics.leaseHeld.record(0)
                logger.error("another process holds the node ID; stopped issuing", metadata: ["stamp.node_id": "\(node)", "stamp.monotonic_us": "\(MonotonicTime.microseconds())"])
            }
        } catch {
            state.withLock { $0.keeper.renewFailed(at: clock.now) }
            metrics.renewals["error"]?.increment()
            logger.warning("lease renewal failed; retrying", metadata: ["stamp.node_id": "\(node)", "stamp.error": "\(error)"])
        }
    }

    /// Compares the wall clock, read at `wallBefore` and `wallAfter` around the store call that
    /// returned `lease`, with the store's clock at that call; tells the lease keeper, records the
    /// metric, and logs when the skew goes beyond its bound or comes back within it.
    private func measureClockSkew(against lease: NodeLease, wallBefore: Int64, wallAfter: Int64) {
        let storeNow = lease.expiresAtUnixMilliseconds - configuration.lease.ttl.wholeMilliseconds
        let skew = LeaseKeeper<C.Instant>.clockSkew(storeUnixMilliseconds: storeNow, wallBefore: wallBefore, wallAfter: wallAfter)
        let (wasSkewed, isSkewed) = state.withLock { state in
            let wasSkewed = state.keeper.isClockSkewed
            state.keeper.clockSkewMeasured(skew)
            return (wasSkewed, state.keeper.isClockSkewed)
        }
        metrics.clockSkew.record(skew)
        let metadata: Logger.Metadata = [
            "stamp.node_id": "\(lease.node)",
            "stamp.clock_skew_ms": "\(skew)",
            "stamp.max_clock_skew_ms": "\(configuration.lease.maxClockSkew.wholeMilliseconds)",
            "stamp.monotonic_us": "\(MonotonicTime.microseconds())",
        ]
        if isSkewed, !wasSkewed {
            logger.error("the wall clock differs from the coordination store's beyond the bound; stopped issuing until it is back", metadata: metadata)
        } else if wasSkewed, !isSkewed {
            logger.notice("the wall clock is back within the bound of the coordination store's", metadata: metadata)
        }
    }

    /// Logs "issuing IDs" once each time the node becomes ready (see ``readiness()``): the sign an
    /// operator, or a test that started the process, waits for.
    private func announceIssuing() {
        let node = state.withLock { state -> Int? in
            let isReady = readiness(state).isReady
            defer { state.announcedIssuing = isReady }
            return isReady && !state.announcedIssuing ? state.keeper.lease?.node : nil
        }
        if let node { logger.notice("issuing IDs", metadata: ["stamp.node_id": "\(node)", "stamp.monotonic_us": "\(MonotonicTime.microseconds())"]) }
    }

    /// The metadata of a confirmed claim or renewal: when it was sent and until when the lease may be
    /// used, as readings of the machine's monotonic clock (``MonotonicTime``), so that a checker can
    /// tell whether an ID was received while the lease was valid.
    private func validityMetadata(sentAt: C.Instant, validUntil: C.Instant?) -> Logger.Metadata {
        var metadata: Logger.Metadata = ["stamp.sent_at_us": "\(MonotonicTime.microseconds(at: sentAt, of: clock))"]
        if let validUntil { metadata["stamp.valid_until_us"] = "\(MonotonicTime.microseconds(at: validUntil, of: clock))" }
        return metadata
    }

    /// Ends the lease in the store, keeping its reservation, and stops issuing.
    func release() async {
        let held = state.withLock { state -> NodeLease? in
            let lease = state.keeper.lease
            state.keeper.released()
            state.replaceGenerator(with: nil)
            return lease
        }
        metrics.leaseHeld.record(0)
        guard let held else { return }
        do {
            try await store.release(node: held.node, owner: owner)
            logger.info("released lease", metadata: ["stamp.node_id": "\(held.node)"])
        } catch {
            logger.warning("could not release lease; it will expire", metadata: ["stamp.node_id": "\(held.node)", "stamp.error": "\(error)"])
        }
    }

    private func logicalUnixMilliseconds(_ state: State) -> Int64 {
        let wall = wallClock.unixMilliseconds()
        guard let generator = state.generator else { return wall }
        let lastTime = generator.withState { $0.lastTime }
        return max(wall, lastTime + configuration.layout.epochUnixMilliseconds)
    }

    /// Issues `count` IDs for `shard`, each greater than `after`, or throws why not.
    ///
    /// Throws ``IssueRefusal`` when the lease is not held, or the generator's ``GeneratorError``.
    public func issue(shard: Int, count: Int, after: StampID?) throws -> IssuedIDs {
        // Only the lease checks need the node's lock. The generator, which has its own, issues outside it.
        guard let generator = state.withLock({ $0.keeper.canIssue(at: clock.now) ? $0.generator : nil }) else {
            throw refusal()
        }
        var issued: IssuedIDs?
        do {
            try generator.next(shard: shard, count: count, after: after) { issued = $0 }
        } catch {
            metrics.refusals[error.code.rawValue]?.increment()
            refusedTotal.add(1, ordering: .relaxed)
            throw error
        }
        // Validity is checked again where the IDs were taken: a request preempted after the first check
        // could otherwise hand out IDs taken after the lease's deadline, or from the generator of a lease
        // since lost, below the IDs that the generator of a new claim of the node ID has issued. The
        // clock is read after the generator took the IDs, so they were taken while the lease was valid;
        // refused ones are gaps.
        let now = clock.now
        guard state.withLock({ $0.generator === generator && $0.keeper.canIssue(at: now) }) else {
            throw refusal()
        }
        metrics.issuedByShard[shard].increment(by: count)
        return issued!
    }

    /// Counts a refusal for want of a valid lease or of a clock within the skew bound, and returns it.
    private func refusal() -> IssueRefusal {
        let skewed = state.withLock { $0.keeper.lease != nil && $0.keeper.isClockSkewed }
        let reason: IssueRefusal.Reason = skewed ? .clockSkewed : .leaseNotHeld
        metrics.refusals[reason.rawValue]?.increment()
        refusedTotal.add(1, ordering: .relaxed)
        return IssueRefusal(reason: reason, retryAfterMilliseconds: configuration.lease.retryInterval.wholeMilliseconds)
    }

    /// Whether the node can issue now, and if not, why.
    public func readiness() -> Readiness {
        state.withLock { readiness($0) }
    }

    private func readiness(_ state: State) -> Readiness {
        guard state.storeReady else { return Readiness(isReady: false, reason: "coordination store not prepared", node: nil) }
        if state.keeper.lease != nil, state.keeper.isClockSkewed {
            let skew = state.keeper.clockSkewMilliseconds
            return Readiness(isReady: false, reason: "wall clock is \(abs(skew)) ms \(skew > 0 ? "ahead of" : "behind") the coordination store's, beyond the bound of \(configuration.lease.maxClockSkew.wholeMilliseconds) ms", node: state.keeper.lease?.node)
        }
        guard state.keeper.canIssue(at: clock.now), let generator = state.generator else {
            return Readiness(isReady: false, reason: state.keeper.lease == nil ? "no node ID held" : "lease or reservation not confirmed", node: state.keeper.lease?.node)
        }
        let lead = generator.statistics.leadMilliseconds
        guard lead <= configuration.maxLeadMilliseconds else {
            return Readiness(isReady: false, reason: "wall clock is \(lead) ms behind logical time, beyond the maximum lead of \(configuration.maxLeadMilliseconds) ms", node: generator.node)
        }
        return Readiness(isReady: true, reason: nil, node: generator.node)
    }

    /// The node ID held now, if any.
    public var node: Int? {
        state.withLock { $0.keeper.lease?.node }
    }

    /// The live leases of the cluster.
    public func liveLeases() async throws -> [NodeLease] {
        try await store.liveLeases()
    }

    /// How the node is doing: its lease, reservation, clocks, and the IDs issued and requests
    /// refused over the last minute.
    public func status() -> NodeStatus {
        let readiness = readiness()
        return state.withLock { state in
            let now = clock.now
            let (issued, refused) = (state.issuedTotal, refusedTotal.load(ordering: .relaxed))
            state.activity.record(at: now, issued: issued, refused: refused)
            let rates = state.activity.rates(at: now, issued: issued, refused: refused)
            let lease = state.keeper.lease
            let held = lease != nil && state.generator != nil
            return NodeStatus(
                node: lease?.node, ready: readiness.isReady, reason: readiness.reason,
                leaseExpiresAt: lease.map { RFC3339.format(unixMilliseconds: $0.expiresAtUnixMilliseconds) },
                reservedUntil: lease.map { _ in RFC3339.format(unixMilliseconds: state.keeper.reservedUntilUnixMilliseconds) },
                reservationHeadroomMilliseconds: held ? state.keeper.reservedUntilUnixMilliseconds - logicalUnixMilliseconds(state) : 0,
                clockLeadMilliseconds: state.generator?.statistics.leadMilliseconds ?? 0,
                clockSkewMilliseconds: state.keeper.clockSkewMilliseconds,
                idsPerSecond: rates.idsPerSecond, refusals: Int64(rates.refusals), windowSeconds: rates.seconds
            )
        }
    }

    /// Brings gauges and the backward-step counter up to date; called before metrics are exported.
    public func refreshMetrics() {
        state.withLock { state in
            guard let generator = state.generator else {
                metrics.lead.record(0)
                metrics.reservationHeadroom.record(0)
                return
            }
            let statistics = generator.statistics
            metrics.lead.record(statistics.leadMilliseconds)
            if statistics.backwardSteps > state.reportedBackwardSteps {
                metrics.backwardSteps.increment(by: Int(statistics.backwardSteps - state.reportedBackwardSteps))
                state.reportedBackwardSteps = statistics.backwardSteps
            }
            metrics.reservationHeadroom.record(state.keeper.reservedUntilUnixMilliseconds - logicalUnixMilliseconds(state))
        }
    }
}

/// Whether a node can issue IDs.
public struct Readiness: Sendable, Equatable {
    public let isReady: Bool
    /// Why not, safe to show.
    public let reason: String?
    /// The node ID held, if any.
    public let node: Int?
}

/// The node holds no valid lease, or its clock is too far from the store's, so it issues nothing;
/// clients go to another node.
public struct IssueRefusal: Error, Sendable {
    /// Why the node cannot issue.
    public enum Reason: String, Sendable {
        case leaseNotHeld = "lease-not-held"
        case clockSkewed = "clock-skewed"
    }

    public let reason: Reason
    /// When to try again, in milliseconds.
    public let retryAfterMilliseconds: Int64

    /// Why, safe to show.
    public var message: String {
        switch reason {
        case .leaseNotHeld: "this node holds no valid lease"
        case .clockSkewed: "this node's wall clock is too far from the coordination store's"
        }
    }
}
