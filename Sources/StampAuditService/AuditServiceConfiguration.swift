import StampAudit
import StampCore
import StampDatabase
import StampShardMap

/// How an audit service stores events, every default in one place: where its shard map is, the
/// ID layout, how rows are committed, and the data key.
public struct AuditServiceConfiguration: Sendable {
    /// How many commits may run at once on one shard, by the backend of its database.
    public struct CommitPolicy: Sendable, Hashable {
        /// On an SQLite shard (default 2: SQLite has one writer, so one group commits while the
        /// one before it waits for its `fsync`).
        public var sqlite: Int
        /// On a PostgreSQL shard (default 4).
        public var postgres: Int

        public init(sqlite: Int = 2, postgres: Int = 4) {
            self.sqlite = sqlite
            self.postgres = postgres
        }

        /// The commits that may run at once on `shard`.
        public func concurrentCommits(on shard: ShardMap.Shard) -> Int {
            shard.database.isSQLite ? sqlite : postgres
        }
    }

    /// The shard map file (default `.stamp/shard-map.json`); when missing, it is created with one
    /// SQLite shard beside it.
    public var shardMapPath: String
    /// The ID layout of the generator cluster (default: the default layout).
    public var layout: IDLayout
    /// Most rows committed in one transaction (default 512, at most ``maxBatchRange``).
    public var maxBatch: Int
    /// Commits running at once per shard.
    public var commitPolicy: CommitPolicy
    /// Most writes waiting for a commit per shard (default 8192); a write past it is answered 503.
    public var maxWaitingWrites: Int
    /// How long a commit, or any other call to a shard's database, may take before the write or
    /// read fails with 503 (default 5 s).
    public var storeTimeout: Duration
    /// Seals personal-data values with the data key; the service refuses to start without one.
    public var sealer: ValueSealer?
    /// When and with which key checkpoints of the shards' hash chains are signed (default none:
    /// the chain is kept, but no checkpoint is signed).
    public var checkpoints: CheckpointPolicy?

    /// The batch sizes a service accepts.
    public static let maxBatchRange = 1...1000

    public init(
        shardMapPath: String = ".stamp/shard-map.json", layout: IDLayout = .default, maxBatch: Int = 512, commitPolicy: CommitPolicy = CommitPolicy(),
        maxWaitingWrites: Int = 8192, storeTimeout: Duration = .seconds(5), sealer: ValueSealer? = nil
    ) {
        self.shardMapPath = shardMapPath
        self.layout = layout
        self.maxBatch = maxBatch
        self.commitPolicy = commitPolicy
        self.maxWaitingWrites = maxWaitingWrites
        self.storeTimeout = storeTimeout
        self.sealer = sealer
    }
}
