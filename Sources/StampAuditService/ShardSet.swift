import Foundation
import Logging
import Metrics
import ServiceLifecycle
import StampAudit
import StampAuditStore
import StampCore
import StampDatabase
import StampShardMap
import Synchronization

/// The open shards of an audit server: one store and one group committer per shard of the map.
///
/// ``prepare(_:)`` opens (and migrates) every shard of a map that is not open yet and records the
/// map's version in every open shard; it is the shard-map source's `prepare` hook, so a new map is
/// only published once its shards work and once no shard takes a write made under an older
/// version. ``run()`` runs the stores' background work and closes them when it ends.
public final class ShardSet: Service, Sendable {
    /// Opens the store of a shard of the map.
    public typealias OpenStore = @Sendable (ShardMap.Shard) throws -> any AuditStore

    /// One open shard.
    public struct OpenShard: Sendable {
        public let store: any AuditStore
        public let committer: GroupCommitter
        /// The database the store was opened on.
        public let database: DatabaseLocation
    }

    /// How each shard's group committer is bounded.
    public struct CommitLimits: Sendable {
        /// Most rows in one commit.
        public var maxBatch: Int
        /// Most rows waiting for a commit per shard.
        public var maxWaiting: Int
        /// How long a commit may take before its rows fail.
        public var commitTimeout: Duration

        public init(maxBatch: Int = 512, maxWaiting: Int = 8192, commitTimeout: Duration = .seconds(5)) {
            self.maxBatch = maxBatch
            self.maxWaiting = maxWaiting
            self.commitTimeout = commitTimeout
        }
    }

    private let open: OpenStore
    private let layout: IDLayout
    private let limits: CommitLimits
    private let commitsPerShard: @Sendable (ShardMap.Shard) -> Int
    private let logger: Logger
    private let metricsFactory: any MetricsFactory
    private let refusedMaps: Counter
    private let shards = Mutex<[Int: OpenShard]>([:])
    private let started: AsyncStream<any AuditStore>
    private let startedContinuation: AsyncStream<any AuditStore>.Continuation

    /// - Parameters:
    ///   - layout: The ID layout maps are checked against.
    ///   - limits: How each shard's group committer is bounded.
    ///   - commitsPerShard: Most commits running at once on a shard (see ``AuditServiceConfiguration/CommitPolicy``).
    ///   - metricsFactory: Where each shard's commit time and committed rows are counted.
    ///   - open: Makes the store of a shard.
    public init(layout: IDLayout, limits: CommitLimits = CommitLimits(), commitsPerShard: @escaping @Sendable (ShardMap.Shard) -> Int, logger: Logger, metricsFactory: any MetricsFactory = MetricsSystem.factory, open: @escaping OpenStore) {
        self.open = open
        self.layout = layout
        self.metricsFactory = metricsFactory
        self.limits = limits
        self.commitsPerShard = commitsPerShard
        self.logger = logger
        refusedMaps = Counter(label: "stamp_audit_shard_map_refusals_total", factory: metricsFactory)
        (started, startedContinuation) = AsyncStream.makeStream(of: (any AuditStore).self, bufferingPolicy: .unbounded)
    }

    /// The IDs of the open shards, ascending.
    public var openShardIDs: [Int] {
        shards.withLock { $0.keys.sorted() }
    }

    /// The open shard `id`, if any.
    public func shard(_ id: Int) -> OpenShard? {
        shards.withLock { $0[id] }
    }

    /// Opens and migrates every shard of `map` not open yet, then records the map's version in
    /// every open shard. Idempotent.
    ///
    /// Throws ``NewerShardMapFound`` when a shard holds a newer version, and refuses a map that
    /// moves an open shard to another database or that differs from the one a shard holds under
    /// the same version.
    public func prepare(_ map: ShardMap) async throws {
        for shard in map.shards {
            if let open = self.shard(shard.id), open.database != shard.database {
                refusedMaps.increment()
                throw AuditStoreError(.invalidConfiguration, "version \(map.version) of the shard map moves shard \(shard.id) to another database; a shard's database never changes (give the new database a new shard ID)")
            }
        }
        for shard in map.shards where self.shard(shard.id) == nil {
            try await openShard(shard)
        }
        let recorded = StoredShardMap(version: map.version, document: Array(map.encoded()))
        for (id, open) in shards.withLock({ $0.sorted { $0.key < $1.key } }) {
            let held = try await open.store.recordMap(recorded)
            guard held != recorded else { continue }
            let stored: ShardMap
            do {
                stored = try ShardMap.decode(Data(held.document), layout: layout)
            } catch {
                refusedMaps.increment()
                throw AuditStoreError(.invalidConfiguration, "shard \(id) holds shard map version \(held.version), which does not decode: \(error.message)")
            }
            if held.version > map.version {
                throw NewerShardMapFound(map: stored, shard: id)
            }
            if stored != map {
                refusedMaps.increment()
                throw AuditStoreError(.invalidConfiguration, "shard \(id) holds another shard map under version \(map.version); versions only rise")
            }
        }
    }

    private func openShard(_ shard: ShardMap.Shard) async throws {
        let store = try open(shard)
        startedContinuation.yield(store)
        do {
            try await store.migrate()
        } catch {
            logger.error("shard unavailable", metadata: ["stamp.shard": "\(shard.id)", "stamp.error": "\(error)"])
            throw error
        }
        let dimensions = [("shard", "\(shard.id)")]
        let commits = Timer(label: "stamp_audit_commit_duration_seconds", dimensions: dimensions, factory: metricsFactory)
        let committedRows = Counter(label: "stamp_audit_committed_rows_total", dimensions: dimensions, factory: metricsFactory)
        let committer = GroupCommitter(
            maxBatch: limits.maxBatch, maxConcurrentCommits: commitsPerShard(shard), maxWaiting: limits.maxWaiting, commitTimeout: limits.commitTimeout
        ) { rows, mapVersion throws(AuditStoreError) in
            let started = ContinuousClock.now
            defer {
                commits.record(duration: started.duration(to: .now))
                committedRows.increment(by: rows.count)
            }
            return try await store.insert(rows, mapVersion: mapVersion)
        }
        let added = shards.withLock { open in
            guard open[shard.id] == nil else { return false }
            open[shard.id] = OpenShard(store: store, committer: committer, database: shard.database)
            return true
        }
        if added {
            logger.notice("shard opened", metadata: ["stamp.shard": "\(shard.id)", "stamp.shard.state": "\(shard.state.rawValue)"])
        } else {
            await store.close()
        }
    }

    /// Runs every store's background work until cancelled or shut down gracefully, then closes them.
    public func run() async throws {
        await cancelWhenGracefulShutdown {
            await withDiscardingTaskGroup { group in
                for await store in self.started {
                    group.addTask { try? await store.run() }
                }
            }
        }
        startedContinuation.finish()
        let open = shards.withLock { $0.values.map(\.store) }
        for store in open {
            await store.close()
        }
    }
}

/// The stores the shard map's database locations name.
public enum AuditStores {
    /// Makes the store of `shard`: SQLite for `sqlite:PATH` (a relative path taken from `folder`,
    /// the map file's folder), PostgreSQL for `postgres://...`.
    public static func open(_ shard: ShardMap.Shard, folder: String, logger: Logger) throws -> any AuditStore {
        switch shard.database.resolvingRelativePath(from: folder) {
        case .sqlite(let path):
            SQLiteAuditStore(path: path, logger: logger)
        case .postgres(let url):
            PostgresAuditStore(configuration: try PostgresAuditStore.configuration(url: url), logger: logger)
        }
    }
}
