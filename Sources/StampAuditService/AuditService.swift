import Foundation
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
    /// A write's answer: the stored event, and whether an earlier request with the same key stored it.
    public typealias Answer = (row: AuditRow, replayed: Bool)

    public let layout: IDLayout
    public let shardMap: ShardMapSource<C>
    public let shards: ShardSet
    let ids: any AuditIDSource
    let sealer: ValueSealer
    /// When and with which key checkpoints of the shards' chains are signed; `nil`: never.
    let checkpoints: CheckpointPolicy?
    /// How long a read of a shard's database may take (commits are bounded by their committer).
    let storeTimeout: Duration
    /// How long readiness waits for a shard's answer.
    let readinessTimeout: Duration
    let logger: Logger
    let metrics: AuditMetrics
    /// The data keys writes were sealed with lately.
    let sealingKeys: SealingKeyCache<C.Instant>
    /// The committers of users' first data keys, by shard.
    let firstKeyCommitters = FirstKeyCommitters()

    /// - Parameter sealingKeyLifetime: How long a user's data key is kept for sealing their writes
    ///   (see ``SealingKeyCache``): a write through this server after another server erased the
    ///   user may be sealed with the destroyed key, and read as erased, for that long.
    public init(
        layout: IDLayout, shardMap: ShardMapSource<C>, shards: ShardSet, ids: any AuditIDSource, sealer: ValueSealer, checkpoints: CheckpointPolicy? = nil,
        storeTimeout: Duration = .seconds(5), readinessTimeout: Duration = .seconds(1), sealingKeyLifetime: Duration = .seconds(60),
        logger: Logger, metricsFactory: any MetricsFactory = MetricsSystem.factory
    ) {
        self.layout = layout
        self.shardMap = shardMap
        self.shards = shards
        self.ids = ids
        self.sealer = sealer
        self.checkpoints = checkpoints
        self.storeTimeout = storeTimeout
        self.readinessTimeout = readinessTimeout
        self.logger = logger
        metrics = AuditMetrics(factory: metricsFactory)
        sealingKeys = SealingKeyCache(lifetime: sealingKeyLifetime, capacity: 100_000)
    }

    /// Records a change of `user`'s data under the client's `idempotencyKey`.
    ///
    /// Returns the stored event and whether it was stored by an earlier request with the same key
    /// (a retry: nothing new is stored). The same key with a different request is refused.
    public func record(user: String, idempotencyKey: String, event: AuditEventInput) async throws(AuditServiceError) -> Answer {
        let started = ContinuousClock.now
        defer { metrics.writeDuration.recordNanoseconds(started.duration(to: .now).wholeNanoseconds) }
        return try await record(prepare(user: user, idempotencyKey: idempotencyKey, event: event))
    }

    /// Records a prepared write; when its shard holds a newer shard map, moves to that map and
    /// records the write again under it.
    func record(_ first: PreparedWrite) async throws(AuditServiceError) -> Answer {
        var write = first
        for _ in 0..<Self.mapAttempts {
            try await fillSealingKey(&write)
            // A user whose slots moved may have a key and later rows in a former shard, which takes
            // no more writes of theirs: look there before the write. (Every former shard holds this
            // map's version: a server still on an older one can no longer write there.)
            var floor: StampID?
            let (user, key) = (write.user, write.idempotencyKey)
            for former in write.placement.read.dropFirst() {
                let store = try open(former).store
                if let earlier = try await storeRead({ () async throws(AuditStoreError) in try await store.row(user: user, idempotencyKey: key) }) {
                    return try replay(earlier, digest: write.digest)
                }
                if let latest = try await storeRead({ () async throws(AuditStoreError) in try await store.latestID(user: user) }), floor.map({ latest > $0 }) ?? true {
                    floor = latest
                }
            }
            switch try await insert(write, above: floor, attempts: Self.orderAttempts) {
            case .answered(let answer): return answer
            case .newerMap(let version): write = try await rewrite(write, underMap: version)
            }
        }
        metrics.writes["failed"]?.increment()
        throw AuditServiceError(.shardMapStale, "the shard map kept changing while this write was tried; retry with the same Idempotency-Key")
    }

    /// Inserts the write's row with a new ID above `floor`, up to `attempts` times.
    ///
    /// The new ID must sort after every event of the user, written through whichever server.
    /// The write shard checks that in the commit itself; a row that lost the race to a newer one
    /// gets an ID above it and goes again.
    private func insert(_ write: PreparedWrite, above floor: StampID?, attempts: Int) async throws(AuditServiceError) -> Inserted {
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
            let row = try write.row(id: id, sealer: sealer)
            let outcome = try await Self.storeCall { () async throws(AuditStoreError) in try await write.target.committer.insert(row, mapVersion: write.mapVersion) }
            switch try await settle(outcome, of: row, write, floor: &floor) {
            case .answered(let answer): return .answered(answer)
            case .newerMap(let version): return .newerMap(version)
            case .again: continue
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
    public func record(user: String, idempotencyKey: String, event: AuditEventInput, completion: @escaping @Sendable (Result<Answer, AuditServiceError>) -> Void) {
        let write: PreparedWrite
        do {
            write = try prepare(user: user, idempotencyKey: idempotencyKey, event: event)
        } catch {
            completion(.failure(error))
            return
        }
        guard write.placement.read.count == 1, !write.needsKey, let id = ids.bufferedID(shard: write.placement.write) else {
            Task { completion(await Self.result { () async throws(AuditServiceError) in try await record(user: user, idempotencyKey: idempotencyKey, event: event) }) }
            return
        }
        let started = ContinuousClock.now
        let row: AuditRow
        do {
            row = try write.row(id: id, sealer: sealer)
        } catch {
            completion(.failure(error))
            return
        }
        write.target.committer.submit(row, mapVersion: write.mapVersion) { result in
            if case .success(.stored) = result {
                metrics.writeDuration.recordNanoseconds(started.duration(to: .now).wholeNanoseconds)
                completion(.success(stored(row)))
                return
            }
            // Anything else: settle it as the waiting path does.
            Task {
                completion(await Self.result { () async throws(AuditServiceError) in
                    defer { metrics.writeDuration.recordNanoseconds(started.duration(to: .now).wholeNanoseconds) }
                    let outcome = try await Self.storeCall { () async throws(AuditStoreError) in try result.get() }
                    var floor: StampID?
                    switch try await settle(outcome, of: row, write, floor: &floor) {
                    case .answered(let answer):
                        return answer
                    case .newerMap(let version):
                        return try await record(rewrite(write, underMap: version))
                    case .again:
                        switch try await insert(write, above: floor, attempts: Self.orderAttempts - 1) {
                        case .answered(let answer): return answer
                        case .newerMap(let version): return try await record(rewrite(write, underMap: version))
                        }
                    }
                })
            }
        }
    }

    /// What every write works out before it has an ID.
    struct PreparedWrite {
        let user: String
        let idempotencyKey: String
        let event: AuditEventInput
        /// The version of the shard map the placement comes from.
        let mapVersion: Int
        let placement: ShardMap.Placement
        let digest: [UInt8]
        let target: ShardSet.OpenShard
        /// The user's data key the values are sealed with, stored in the write shard; `nil` until
        /// it is found, and for a write without values.
        var key: UserDataKey?

        /// Whether the write has values but no key to seal them with yet.
        var needsKey: Bool { key == nil && (event.before != nil || event.after != nil) }

        func row(id: StampID, sealer: ValueSealer) throws(AuditServiceError) -> AuditRow {
            guard !needsKey else {
                throw AuditServiceError(.invalidConfiguration, "a write with values was about to be stored without its user's data key")
            }
            return AuditRow(
                id: id, user: user, field: event.field, actor: event.actor, reason: event.reason,
                before: event.before.map { sealer.seal($0, id: id, slot: .before, key: key!) },
                after: event.after.map { sealer.seal($0, id: id, slot: .after, key: key!) },
                idempotencyKey: idempotencyKey, requestDigest: digest
            )
        }
    }

    func prepare(user: String, idempotencyKey: String, event: AuditEventInput) throws(AuditServiceError) -> PreparedWrite {
        let map = shardMap.current
        let placement = map.placement(ofUser: user)
        var write = PreparedWrite(
            user: user, idempotencyKey: idempotencyKey, event: event, mapVersion: map.version, placement: placement,
            digest: sealer.digest(of: event, user: user), target: try open(placement.write)
        )
        if write.needsKey {
            write.key = sealingKeys.key(user: user, shard: placement.write, now: shardMap.clock.now)
        }
        return write
    }

    /// Moves to version `version` of the shard map, which the write's shard holds, and prepares
    /// the write again under the map in use then.
    private func rewrite(_ write: PreparedWrite, underMap version: Int) async throws(AuditServiceError) -> PreparedWrite {
        if shardMap.current.version < version {
            let store = write.target.store
            let held = try await storeRead { () async throws(AuditStoreError) in try await store.storedMap() }
            let map: ShardMap
            do {
                map = try ShardMap.decode(Data(held.document), layout: layout)
            } catch {
                throw AuditServiceError(.invalidConfiguration, "shard \(write.placement.write) holds shard map version \(held.version), which does not decode: \(error.message)", cause: error)
            }
            guard await shardMap.offer(map).version >= version else {
                throw AuditServiceError(.shardMapStale, "shard map version \(version) is in use on the shards but cannot be applied on this server yet; retry with the same Idempotency-Key")
            }
        }
        return try prepare(user: write.user, idempotencyKey: write.idempotencyKey, event: write.event)
    }

    /// How an insert of a write ended.
    private enum Inserted {
        /// The write is answered.
        case answered(Answer)
        /// The shard holds version `version` of the shard map, newer than the write's: the write
        /// goes again under it.
        case newerMap(Int)
    }

    /// What a write does after its row came out of a commit.
    private enum Settlement {
        /// The write is answered.
        case answered(Answer)
        /// The write goes again with a new ID.
        case again
        /// The shard holds version `version` of the shard map, newer than the write's: the write
        /// goes again under it.
        case newerMap(Int)
    }

    /// What a write whose row came out of its commit as `outcome` does next; raises `floor` when it
    /// must go again above a newer row.
    private func settle(_ outcome: AuditInsertOutcome, of row: AuditRow, _ write: PreparedWrite, floor: inout StampID?) async throws(AuditServiceError) -> Settlement {
        switch outcome {
        case .stored:
            return .answered(stored(row))
        case .repeated:
            let store = write.target.store
            if let earlier = try await storeRead({ () async throws(AuditStoreError) in try await store.row(user: write.user, idempotencyKey: write.idempotencyKey) }) {
                return .answered(try replay(earlier, digest: write.digest))
            }
            // The key's first row came in the same commit and was itself refused: go again.
            metrics.orderRetries.increment()
            return .again
        case .belowLatest(let latest):
            metrics.orderRetries.increment()
            floor = max(floor ?? latest, latest)
            return .again
        case .idTaken:
            logger.warning("an ID from the generators was taken by another row; two nodes may share a node ID", metadata: ["stamp.event": "\(row.id)"])
            return .again
        case .staleMap(let version):
            return .newerMap(version)
        }
    }

    /// The answer to a write whose row is stored.
    private func stored(_ row: AuditRow) -> Answer {
        metrics.writes["stored"]?.increment()
        return (row, false)
    }

    /// How many IDs a write tries before giving up when newer rows of its user keep arriving.
    static var orderAttempts: Int { 4 }

    /// How many shard map versions a write tries before giving up when the map keeps changing.
    static var mapAttempts: Int { 3 }

    private func replay(_ earlier: AuditRow, digest: [UInt8]) throws(AuditServiceError) -> Answer {
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
            rows += try await storeRead { () async throws(AuditStoreError) in try await store.history(user: user, field: field, before: before, limit: limit) }
        }
        return Array(rows.sorted { $0.id > $1.id }.prefix(limit))
    }

    /// The latest event of each field `user` has changed, by field name, from every shard that
    /// may hold them: each shard's newest of each field, the newest of those where a field is in
    /// several shards.
    public func latestOfEachField(user: String) async throws(AuditServiceError) -> [AuditRow] {
        var latest: [String: AuditRow] = [:]
        for shard in shardMap.current.placement(ofUser: user).read {
            let store = try open(shard).store
            for row in try await storeRead({ () async throws(AuditStoreError) in try await store.latestOfEachField(user: user) }) {
                if let held = latest[row.field], held.id > row.id { continue }
                latest[row.field] = row
            }
        }
        return latest.values.sorted { $0.field < $1.field }
    }

    /// The event with `id`, read from the shard written in the ID.
    public func event(id: StampID) async throws(AuditServiceError) -> AuditRow? {
        let shard = id.fields(in: layout).shard
        guard shardMap.current.knows(shard: shard) else {
            throw AuditServiceError(.unknownShard, "the ID names shard \(shard), which the shard map does not list")
        }
        let store = try open(shard).store
        return try await storeRead { () async throws(AuditStoreError) in try await store.row(id: id) }
    }

    /// Why the server cannot serve now, or `nil` when it can: every shard of the map open and
    /// answering within the readiness timeout (asked all at once), and a generator node reachable.
    public func unreadiness() async -> String? {
        let map = shardMap.current
        let ids = map.shards.map(\.id).sorted()
        for id in ids where shards.shard(id) == nil {
            return "shard \(id) is not open"
        }
        let silent = await withTaskGroup(of: Int?.self) { group in
            for id in ids {
                guard let store = shards.shard(id)?.store else { continue }
                group.addTask {
                    do {
                        try await withDeadline(readinessTimeout, on: shardMap.clock, timedOut: { Self.noAnswer(within: readinessTimeout) }) { () async throws(AuditStoreError) in try await store.ping() }
                        return nil
                    } catch {
                        return id
                    }
                }
            }
            var silent: [Int] = []
            for await id in group {
                if let id { silent.append(id) }
            }
            return silent.sorted()
        }
        if let first = silent.first {
            return "shard \(first) does not answer within \(readinessTimeout)"
        }
        return self.ids.isReachable ? nil : "no generator node is reachable"
    }

    func open(_ shard: Int) throws(AuditServiceError) -> ShardSet.OpenShard {
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

    /// Runs a store read against the store timeout, turning its errors into the service's.
    func storeRead<T: Sendable>(_ body: @escaping @Sendable () async throws(AuditStoreError) -> T) async throws(AuditServiceError) -> T {
        try await Self.storeCall { () async throws(AuditStoreError) in try await withDeadline(storeTimeout, on: shardMap.clock, timedOut: { [storeTimeout] in Self.noAnswer(within: storeTimeout) }, body) }
    }

    /// The error of a database call that did not answer within `timeout`.
    static func noAnswer(within timeout: Duration) -> AuditStoreError {
        AuditStoreError(.unavailable, "the database did not answer within \(timeout)")
    }

    /// Runs a store operation, turning its errors into the service's.
    static func storeCall<T>(_ body: () async throws(AuditStoreError) -> T) async throws(AuditServiceError) -> T {
        do {
            return try await body()
        } catch {
            switch error.code {
            case .unavailable, .invalidConfiguration:
                throw AuditServiceError(.databaseUnavailable, "the shard's database is unavailable: \(error.message)", cause: error)
            case .rejected:
                throw AuditServiceError(.databaseRefused, "the shard's database refused the operation", cause: error)
            case .overloaded:
                throw AuditServiceError(.shardBusy, "the shard has too many writes waiting: \(error.message); retry with the same Idempotency-Key", cause: error)
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
        /// Too many writes wait for the shard; retry shortly.
        case shardBusy = "shard-busy"
        /// Other servers write under a newer shard map, which this one cannot apply yet; retry shortly.
        case shardMapStale = "shard-map-stale"
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
        /// The user's data keys were destroyed while a write of theirs was sealed; it may be retried with the same key.
        case erasureInProgress = "erasure-in-progress"
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
