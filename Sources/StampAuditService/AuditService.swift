import Logging
import Metrics
import StampAudit
import StampClient
import StampCore
import StampShardMap

/// Where the audit service gets IDs: the generator cluster through ``StampIDClient`` in production.
public protocol AuditIDSource: Sendable {
    /// One ID for `shard`, greater than `floor` when given.
    func nextID(shard: Int, above floor: StampID?) async throws -> StampID
    /// One ID for `shard` at once, from IDs fetched before, or `nil` when none is at hand.
    func bufferedID(shard: Int) -> StampID?
    /// Whether some generator node is taken as reachable now.
    var isReachable: Bool { get }
}

extension AuditIDSource {
    public func bufferedID(shard: Int) -> StampID? { nil }
}

extension StampIDClient: AuditIDSource {
    public var isReachable: Bool { !healthyNodes.isEmpty }
}

/// The audit log's operations: record a change, read a user's history, its latest change of a
/// field, one event. Stateless apart from connections: any number of servers can run it.
///
/// Its operations throw ``AuditServiceError``; the HTTP layer maps them to problems. Inputs are
/// checked before (``AuditLimits``).
public struct AuditService<C: Clock<Duration>>: Sendable {
    public let layout: IDLayout
    public let shardMap: ShardMapSource<C>
    public let shards: ShardSet
    let ids: any AuditIDSource
    let sealer: ValueSealer
    let logger: Logger
    let metrics: AuditMetrics

    public init(layout: IDLayout, shardMap: ShardMapSource<C>, shards: ShardSet, ids: any AuditIDSource, sealer: ValueSealer, logger: Logger, metricsFactory: any MetricsFactory = MetricsSystem.factory) {
        self.layout = layout
        self.shardMap = shardMap
        self.shards = shards
        self.ids = ids
        self.sealer = sealer
        self.logger = logger
        metrics = AuditMetrics(factory: metricsFactory)
    }

    /// Records a change of `user`'s data under the client's `idempotencyKey`.
    ///
    /// Returns the stored event and whether it was stored by an earlier request with the same key
    /// (a retry: nothing new is stored). The same key with a different request is refused.
    public func record(user: String, idempotencyKey: String, event: AuditEventInput) async throws(AuditServiceError) -> (row: AuditRow, replayed: Bool) {
        let started = ContinuousClock.now
        defer { metrics.writeDuration.recordNanoseconds(started.duration(to: .now).wholeNanoseconds) }
        let write = try prepare(user: user, idempotencyKey: idempotencyKey, event: event)
        // A user whose slots moved may have a key and later rows in a former shard, which takes
        // no more writes of theirs: look there before the write.
        var floor: StampID?
        for former in write.placement.read.dropFirst() {
            let store = try open(former).store
            if let earlier = try await Self.storeCall({ () async throws(AuditStoreError) in try await store.row(user: user, idempotencyKey: idempotencyKey) }) {
                return try replay(earlier, digest: write.digest)
            }
            if let latest = try await Self.storeCall({ () async throws(AuditStoreError) in try await store.latestID(user: user) }), floor.map({ latest > $0 }) ?? true {
                floor = latest
            }
        }
        return try await insert(write, above: floor, attempts: Self.orderAttempts)
    }

    /// Inserts the write's row with a new ID above `floor`, up to `attempts` times.
    ///
    /// The new ID must sort after every event of the user, written through whichever server.
    /// The write shard checks that in the commit itself; a row that lost the race to a newer one
    /// gets an ID above it and goes again.
    private func insert(_ write: PreparedWrite, above floor: StampID?, attempts: Int) async throws(AuditServiceError) -> (row: AuditRow, replayed: Bool) {
        var floor = floor
        for _ in 0..<attempts {
            let id: StampID
            do {
                id = try await ids.nextID(shard: write.placement.write, above: floor)
            } catch {
                metrics.writes["failed"]?.increment()
                logger.warning("no ID for a write", metadata: ["stamp.shard": "\(write.placement.write)", "stamp.error": "\(error)"])
                throw AuditServiceError(.noID, "no ID could be had from the generator nodes; retry with the same Idempotency-Key", cause: error)
            }
            let row = write.row(id: id, sealer: sealer)
            let outcome = try await Self.storeCall { () async throws(AuditStoreError) in try await write.target.committer.insert(row) }
            if let settled = try await settle(outcome, of: row, write, floor: &floor) {
                return settled
            }
        }
        metrics.writes["failed"]?.increment()
        throw AuditServiceError(.userOrderContended, "the user's newest event kept moving while this write was tried \(Self.orderAttempts) times; retry with the same Idempotency-Key")
    }

    /// Records a change like ``record(user:idempotencyKey:event:)`` and calls `completion` with
    /// the same answer; returns at once. The common write - its user's slots never moved, an ID
    /// at hand in the prefetch buffer - goes to its shard's group commit without a task of its
    /// own: an HTTP handler on an event loop calls this directly. Every other write runs
    /// ``record(user:idempotencyKey:event:)`` in a task.
    public func record(user: String, idempotencyKey: String, event: AuditEventInput, completion: @escaping @Sendable (Result<(row: AuditRow, replayed: Bool), AuditServiceError>) -> Void) {
        let write: PreparedWrite
        do {
            write = try prepare(user: user, idempotencyKey: idempotencyKey, event: event)
        } catch {
            completion(.failure(error))
            return
        }
        guard write.placement.read.count == 1, let id = ids.bufferedID(shard: write.placement.write) else {
            Task { completion(await Self.result { () async throws(AuditServiceError) in try await record(user: user, idempotencyKey: idempotencyKey, event: event) }) }
            return
        }
        let started = ContinuousClock.now
        let row = write.row(id: id, sealer: sealer)
        write.target.committer.submit(row) { result in
            if case .success(.stored) = result {
                metrics.writeDuration.recordNanoseconds(started.duration(to: .now).wholeNanoseconds)
                completion(.success(stored(row)))
                return
            }
            // A repeated key or a newer row of the user: settle it as the waiting path does.
            Task {
                completion(await Self.result { () async throws(AuditServiceError) in
                    defer { metrics.writeDuration.recordNanoseconds(started.duration(to: .now).wholeNanoseconds) }
                    let outcome = try await Self.storeCall { () async throws(AuditStoreError) in try result.get() }
                    var floor: StampID?
                    if let settled = try await settle(outcome, of: row, write, floor: &floor) {
                        return settled
                    }
                    return try await insert(write, above: floor, attempts: Self.orderAttempts - 1)
                })
            }
        }
    }

    /// What every write works out before it has an ID.
    private struct PreparedWrite {
        let user: String
        let idempotencyKey: String
        let event: AuditEventInput
        let placement: ShardMap.Placement
        let digest: [UInt8]
        let target: ShardSet.OpenShard

        func row(id: StampID, sealer: ValueSealer) -> AuditRow {
            AuditRow(
                id: id, user: user, field: event.field, actor: event.actor, reason: event.reason,
                before: event.before.map { sealer.seal($0, id: id, slot: .before) },
                after: event.after.map { sealer.seal($0, id: id, slot: .after) },
                idempotencyKey: idempotencyKey, requestDigest: digest
            )
        }
    }

    private func prepare(user: String, idempotencyKey: String, event: AuditEventInput) throws(AuditServiceError) -> PreparedWrite {
        let placement = shardMap.current.placement(ofUser: user)
        return PreparedWrite(
            user: user, idempotencyKey: idempotencyKey, event: event, placement: placement,
            digest: sealer.digest(of: event, user: user), target: try open(placement.write)
        )
    }

    /// The answer to a write whose row came out of its commit as `outcome`, or `nil` when it must
    /// go again with a new ID above `floor` (raised here).
    private func settle(_ outcome: AuditInsertOutcome, of row: AuditRow, _ write: PreparedWrite, floor: inout StampID?) async throws(AuditServiceError) -> (row: AuditRow, replayed: Bool)? {
        switch outcome {
        case .stored:
            return stored(row)
        case .repeated:
            let store = write.target.store
            if let earlier = try await Self.storeCall({ () async throws(AuditStoreError) in try await store.row(user: write.user, idempotencyKey: write.idempotencyKey) }) {
                return try replay(earlier, digest: write.digest)
            }
            // The key's first row came in the same commit and was itself refused: go again.
            metrics.orderRetries.increment()
            return nil
        case .belowLatest(let latest):
            metrics.orderRetries.increment()
            floor = max(floor ?? latest, latest)
            return nil
        }
    }

    /// The answer to a write whose row is stored.
    private func stored(_ row: AuditRow) -> (row: AuditRow, replayed: Bool) {
        metrics.writes["stored"]?.increment()
        return (row, false)
    }

    /// How many IDs a write tries before giving up when newer rows of its user keep arriving.
    static var orderAttempts: Int { 4 }

    private func replay(_ earlier: AuditRow, digest: [UInt8]) throws(AuditServiceError) -> (row: AuditRow, replayed: Bool) {
        guard earlier.requestDigest == digest else {
            metrics.writes["key_reused"]?.increment()
            throw AuditServiceError(.idempotencyKeyReused, "this Idempotency-Key was used for a different request of this user")
        }
        metrics.writes["replayed"]?.increment()
        return (earlier, true)
    }

    /// Up to `limit` events of `user`, newest first, below `before` and of `field` when given,
    /// from every shard that may hold them.
    public func history(user: String, field: String?, before: StampID?, limit: Int) async throws(AuditServiceError) -> [AuditRow] {
        var rows: [AuditRow] = []
        for shard in shardMap.current.placement(ofUser: user).read {
            let store = try open(shard).store
            rows += try await Self.storeCall { () async throws(AuditStoreError) in try await store.history(user: user, field: field, before: before, limit: limit) }
        }
        return Array(rows.sorted { $0.id > $1.id }.prefix(limit))
    }

    /// The event with `id`, read from the shard written in the ID.
    public func event(id: StampID) async throws(AuditServiceError) -> AuditRow? {
        let shard = id.fields(in: layout).shard
        guard shardMap.current.knows(shard: shard) else {
            throw AuditServiceError(.unknownShard, "the ID names shard \(shard), which the shard map does not list")
        }
        let store = try open(shard).store
        return try await Self.storeCall { () async throws(AuditStoreError) in try await store.row(id: id) }
    }

    /// Opens the values of `row` for a reader.
    public func open(_ row: AuditRow) throws(AuditServiceError) -> (before: String?, after: String?) {
        do {
            return (try row.before.map { try sealer.open($0, id: row.id, slot: .before) }, try row.after.map { try sealer.open($0, id: row.id, slot: .after) })
        } catch {
            logger.error("stored value unreadable", metadata: ["stamp.event": "\(row.id)", "stamp.error": "\(error)"])
            throw AuditServiceError(.sealedValueUnreadable, "a stored value of event \(row.id) cannot be opened with the configured data key", cause: error)
        }
    }

    /// Why the server cannot serve now, or `nil` when it can: every shard of the map open and
    /// answering, and a generator node reachable.
    public func unreadiness() async -> String? {
        let map = shardMap.current
        for shard in map.shards {
            guard let open = shards.shard(shard.id) else { return "shard \(shard.id) is not open" }
            do {
                try await open.store.ping()
            } catch {
                return "shard \(shard.id) does not answer"
            }
        }
        return ids.isReachable ? nil : "no generator node is reachable"
    }

    private func open(_ shard: Int) throws(AuditServiceError) -> ShardSet.OpenShard {
        guard let open = shards.shard(shard) else {
            throw AuditServiceError(.shardNotOpen, "shard \(shard) is not open on this server yet")
        }
        return open
    }

    /// The outcome of `body` as a result.
    private static func result<T>(_ body: () async throws(AuditServiceError) -> T) async -> Result<T, AuditServiceError> {
        do {
            return .success(try await body())
        } catch {
            return .failure(error)
        }
    }

    /// Runs a store operation, turning its errors into the service's.
    private static func storeCall<T>(_ body: () async throws(AuditStoreError) -> T) async throws(AuditServiceError) -> T {
        do {
            return try await body()
        } catch {
            switch error.code {
            case .unavailable, .invalidConfiguration:
                throw AuditServiceError(.databaseUnavailable, "the shard's database is unavailable: \(error.message)", cause: error)
            case .rejected:
                throw AuditServiceError(.databaseRefused, "the shard's database refused the operation", cause: error)
            }
        }
    }
}

/// The audit service's metrics. Labels carry outcomes and shard IDs only, never user data.
struct AuditMetrics: Sendable {
    let writes: [String: Counter]
    /// Writes that went again with a new ID: a newer row of their user was stored first.
    let orderRetries: Counter
    let writeDuration: Timer

    init(factory: any MetricsFactory) {
        var writes: [String: Counter] = [:]
        for outcome in ["stored", "replayed", "key_reused", "failed"] {
            writes[outcome] = Counter(label: "stamp_audit_writes_total", dimensions: [("outcome", outcome)], factory: factory)
        }
        self.writes = writes
        orderRetries = Counter(label: "stamp_audit_order_retries_total", factory: factory)
        writeDuration = Timer(label: "stamp_audit_write_duration_seconds", factory: factory)
    }
}

/// Why the audit service could not do what was asked.
public struct AuditServiceError: Error, Sendable, CustomStringConvertible {
    /// Stable codes for the service's errors.
    public enum Code: String, Sendable {
        /// The generator nodes gave no ID; the write may be retried with the same key.
        case noID = "no-id"
        /// The shard is in the map but not open on this server yet; retry shortly.
        case shardNotOpen = "shard-not-open"
        /// The shard's database cannot be reached or did not answer; retry shortly.
        case databaseUnavailable = "database-unavailable"
        /// The shard's database refused the operation.
        case databaseRefused = "database-refused"
        /// The idempotency key was used for a different request of the user.
        case idempotencyKeyReused = "idempotency-key-reused"
        /// The ID names a shard the shard map does not list.
        case unknownShard = "unknown-shard"
        /// A stored value cannot be opened with the configured data key.
        case sealedValueUnreadable = "sealed-value-unreadable"
        /// Newer events of the user kept arriving while a write was tried; it may be retried with the same key.
        case userOrderContended = "user-order-contended"
        /// The configuration cannot work: the shard map, a secret, a bound.
        case invalidConfiguration = "invalid-configuration"
    }

    public let code: Code
    /// A message safe to show and log: it never holds personal data.
    public let message: String
    /// The error that led to this one, if any.
    public let cause: (any Error)?

    public init(_ code: Code, _ message: String, cause: (any Error)? = nil) {
        self.code = code
        self.message = message
        self.cause = cause
    }

    public var description: String { "\(code.rawValue): \(message)" }
}
