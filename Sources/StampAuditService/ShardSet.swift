import Logging
import Metrics
import ServiceLifecycle
import StampAudit
import StampAuditStore
import StampShardMap
import Synchronization

/// The open shards of an audit server: one store and one group committer per shard of the map.
///
/// ``prepare(_:)`` opens (and migrates) every shard of a map that is not open yet; it is the
/// shard-map source's `prepare` hook, so a new map is only published once its shards work.
/// ``run()`` opens the first map's shards (retrying each second until they open), runs the
/// stores' background work, and closes them when it ends.
public final class ShardSet: Service, Sendable {
    /// Opens the store of a shard of the map.
    public typealias OpenStore = @Sendable (ShardMap.Shard) throws -> any AuditStore

    /// One open shard.
    public struct OpenShard: Sendable {
        public let store: any AuditStore
        public let committer: GroupCommitter
    }

    private let open: OpenStore
    private let initial: ShardMap
    private let maxBatch: Int
    private let commitsPerShard: @Sendable (ShardMap.Shard) -> Int
    private let logger: Logger
    private let metricsFactory: any MetricsFactory
    private let shards = Mutex<[Int: OpenShard]>([:])
    private let started: AsyncStream<any AuditStore>
    private let startedContinuation: AsyncStream<any AuditStore>.Continuation

    /// - Parameters:
    ///   - maxBatch: Most rows in one commit.
    ///   - commitsPerShard: Most commits running at once on a shard (see ``AuditServiceConfiguration/CommitPolicy``).
    ///   - initial: The map whose shards ``run()`` opens first.
    ///   - metricsFactory: Where each shard's commit time and committed rows are counted.
    ///   - open: Makes the store of a shard.
    public init(initial: ShardMap, maxBatch: Int = 512, commitsPerShard: @escaping @Sendable (ShardMap.Shard) -> Int, logger: Logger, metricsFactory: any MetricsFactory = MetricsSystem.factory, open: @escaping OpenStore) {
        self.open = open
        self.metricsFactory = metricsFactory
        self.initial = initial
        self.maxBatch = maxBatch
        self.commitsPerShard = commitsPerShard
        self.logger = logger
        (started, startedContinuation) = AsyncStream.makeStream(of: (any AuditStore).self, bufferingPolicy: .unbounded)
    }

    /// The open shard `id`, if any.
    public func shard(_ id: Int) -> OpenShard? {
        shards.withLock { $0[id] }
    }

    /// Opens and migrates every shard of `map` not open yet. Idempotent.
    public func prepare(_ map: ShardMap) async throws {
        for shard in map.shards where self.shard(shard.id) == nil {
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
            let committer = GroupCommitter(maxBatch: maxBatch, maxConcurrentCommits: commitsPerShard(shard)) { rows throws(AuditStoreError) in
                let started = ContinuousClock.now
                defer {
                    commits.record(duration: started.duration(to: .now))
                    committedRows.increment(by: rows.count)
                }
                return try await store.insert(rows)
            }
            let added = shards.withLock { open in
                guard open[shard.id] == nil else { return false }
                open[shard.id] = OpenShard(store: store, committer: committer)
                return true
            }
            if added {
                logger.notice("shard opened", metadata: ["stamp.shard": "\(shard.id)", "stamp.shard.state": "\(shard.state.rawValue)"])
            } else {
                await store.close()
            }
        }
    }

    private func openInitial() async {
        while !Task.isCancelled {
            do {
                try await prepare(initial)
                return
            } catch {
                try? await Task.sleep(for: .seconds(1))
            }
        }
    }

    /// Runs every store's background work until cancelled or shut down gracefully, then closes them.
    public func run() async throws {
        await cancelWhenGracefulShutdown {
            await withDiscardingTaskGroup { group in
                group.addTask { await self.openInitial() }
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
