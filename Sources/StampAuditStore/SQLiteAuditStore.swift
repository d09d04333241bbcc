import Foundation
import GRDB
import Logging
import StampAudit
import StampCore
import StampDatabase

/// An audit store in one SQLite file: the embedded default, one file per shard.
///
/// Every audit server process on the machine opens the shard's file (see ``SQLiteDatabase``):
/// the process's one writing connection runs each insert call as one `BEGIN IMMEDIATE`
/// transaction with prepared statements it keeps, and reads run on connections of their own. An
/// insert returns once its rows are on disk.
public final class SQLiteAuditStore: AuditStore {
    private let database: SQLiteDatabase
    private let logger: Logger
    private let closed: AsyncStream<Never>
    private let closing: AsyncStream<Never>.Continuation

    /// Creates a store on the file at `path`; the file and its parent directories are created on first use.
    public init(path: String, logger: Logger) {
        self.database = SQLiteDatabase(path: path)
        self.logger = logger
        (closed, closing) = AsyncStream.makeStream()
    }

    /// Waits until the task is cancelled or the store is closed: the store has no background work.
    public func run() async throws {
        for await _ in closed {}
    }

    public func migrate() async throws(AuditStoreError) {
        try await writing("migrate the schema") { db in
            try db.execute(sql: "CREATE TABLE IF NOT EXISTS stamp_audit_migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP) STRICT")
            let applied = Set(try String.fetchAll(db, sql: "SELECT name FROM stamp_audit_migrations"))
            for migration in Self.migrations where !applied.contains(migration.name) {
                for statement in migration.statements {
                    try db.execute(sql: statement)
                }
                if migration.name == Self.chainMigration {
                    try Self.chainStoredRows(db)
                }
                try db.execute(sql: "INSERT INTO stamp_audit_migrations (name) VALUES (?)", arguments: [migration.name])
            }
        }
    }

    public func insert(_ rows: [AuditRow], mapVersion: Int) async throws(AuditStoreError) -> [AuditInsertOutcome] {
        let batch = AuditInsertBatch(rows)
        let sent = batch.sent
        guard !sent.isEmpty else { return batch.outcomes(ofSent: []) }
        let decided = try await writing("insert rows") { db in
            // The write lock is held from here to the commit, so no map is recorded meanwhile.
            let held = try Int.fetchOne(db.cachedStatement(sql: SQL.mapVersion)) ?? 0
            if held > mapVersion {
                return Array(repeating: AuditInsertOutcome.staleMap(version: held), count: sent.count)
            }
            var outcomes: [AuditInsertOutcome] = []
            outcomes.reserveCapacity(sent.count)
            let insert = try db.cachedStatement(sql: SQL.insertAboveLatest)
            let start = try Self.chainHead(db)
            var head = start
            for row in sent {
                // The row's link, used only when the row goes in.
                let link = AuditChain.extend(head, with: row)
                var arguments = row.arguments
                arguments += [link.position, Data(link.hash)]
                try insert.execute(arguments: arguments)
                if db.changesCount == 1 {
                    head = link.head
                    outcomes.append(.stored)
                } else if try Bool.fetchOne(db.cachedStatement(sql: SQL.keyTaken), arguments: [row.user, row.idempotencyKey]) == true {
                    outcomes.append(.repeated)
                } else if let latest = try Int64.fetchOne(db.cachedStatement(sql: SQL.latestID), arguments: [row.user]).flatMap(StampID.init(rawValue:)), latest >= row.id {
                    outcomes.append(.belowLatest(latest))
                } else {
                    // Neither stored, a repeat nor below its user's rows: another user's row has the ID.
                    outcomes.append(.idTaken)
                }
            }
            if head != start {
                try db.cachedStatement(sql: SQL.moveChainHead).execute(arguments: [head.rows, Data(head.hash), head.lastID?.rawValue])
            }
            return outcomes
        }
        return batch.outcomes(ofSent: decided)
    }

    public func recordMap(_ map: StoredShardMap) async throws(AuditStoreError) -> StoredShardMap {
        try await writing("record the shard map") { db in
            try db.execute(sql: SQL.raiseMap, arguments: [map.version, Data(map.document)])
            return try Self.heldMap(db)
        }
    }

    public func storedMap() async throws(AuditStoreError) -> StoredShardMap {
        try await reading("read the shard map") { db in try Self.heldMap(db) }
    }

    private static func heldMap(_ db: Database) throws -> StoredShardMap {
        guard let row = try Row.fetchOne(db.cachedStatement(sql: SQL.heldMap)) else { return .none }
        return StoredShardMap(version: row["version"], document: Array(row["document"] as Data? ?? Data()))
    }

    public func row(id: StampID) async throws(AuditStoreError) -> AuditRow? {
        try await rows("read a row", SQL.rowByID, [id.rawValue]).first
    }

    /// The row `user` wrote under `idempotencyKey`, once on disk: a retry's answer rests on it.
    public func row(user: String, idempotencyKey: String) async throws(AuditStoreError) -> AuditRow? {
        guard let row = try await rows("read a row", SQL.rowByKey, [user, idempotencyKey]).first else { return nil }
        do {
            try await database.syncCommitted()
        } catch {
            throw Self.wrap(error, action: "sync a row read", logger: logger)
        }
        return row
    }

    public func history(user: String, field: String?, before: StampID?, limit: Int) async throws(AuditStoreError) -> [AuditRow] {
        guard limit > 0 else { return [] }
        // The rows at or below one less than the cursor; without one, at or below the greatest ID.
        let through = before.map { $0.rawValue - 1 } ?? Int64.max
        if let field {
            return try await rows("read a history", SQL.historyOfField, [user, field, through, limit])
        }
        return try await rows("read a history", SQL.history, [user, through, limit])
    }

    public func latestOfEachField(user: String) async throws(AuditStoreError) -> [AuditRow] {
        try await rows("read the latest of each field", SQL.latestOfEachField, [user])
    }

    public func latestID(user: String) async throws(AuditStoreError) -> StampID? {
        try await reading("read the latest ID") { db in
            try Int64.fetchOne(db.cachedStatement(sql: SQL.latestID), arguments: [user])
        }.map(Self.id)
    }

    public func ids(after: StampID?, limit: Int) async throws(AuditStoreError) -> [StampID] {
        guard limit > 0 else { return [] }
        // IDs are never negative, so -1 lies below them all.
        let values = try await reading("list IDs") { db in
            try Int64.fetchAll(db.cachedStatement(sql: SQL.idsAfter), arguments: [after?.rawValue ?? -1, limit])
        }
        return try values.map(Self.id)
    }

    public func chainHead() async throws(AuditStoreError) -> ChainHead {
        try await reading("read the chain head") { db in try Self.chainHead(db) }
    }

    public func chainedRows(after position: Int64, limit: Int) async throws(AuditStoreError) -> [ChainedRow] {
        guard limit > 0 else { return [] }
        let rows = try await reading("read chained rows") { db in
            try Row.fetchAll(db.cachedStatement(sql: SQL.chainedRows), arguments: [position, limit]).map { row -> ChainedRow? in
                guard let position = row["chain_position"] as Int64?, let hash = row["chain_hash"] as Data?, let content = AuditRow(row: row) else { return nil }
                return ChainedRow(position: position, hash: Array(hash), row: content)
            }
        }
        return try rows.map { row throws(AuditStoreError) in
            guard let row else { throw AuditStoreError(.rejected, "the SQLite store holds a malformed row") }
            return row
        }
    }

    public func rowCount() async throws(AuditStoreError) -> Int64 {
        try await reading("count rows") { db in try Int64.fetchOne(db, sql: "SELECT count(*) FROM stamp_audit_events") ?? 0 }
    }

    public func recordCheckpoint(_ checkpoint: AuditCheckpoint) async throws(AuditStoreError) {
        try await writing("record a checkpoint") { db in
            try db.execute(sql: SQL.recordCheckpoint, arguments: [
                checkpoint.rows, checkpoint.shard, checkpoint.lastID?.rawValue, Data(checkpoint.head), checkpoint.signedAtMilliseconds,
                Data(checkpoint.publicKey), Data(checkpoint.signature),
            ])
        }
    }

    public func checkpoints(below rows: Int64?, limit: Int) async throws(AuditStoreError) -> [AuditCheckpoint] {
        guard limit > 0 else { return [] }
        let read = try await reading("read checkpoints") { db in
            try Row.fetchAll(db.cachedStatement(sql: SQL.checkpoints), arguments: [rows ?? Int64.max, limit]).map { row -> AuditCheckpoint? in
                guard let head = row["head"] as Data?, let key = row["public_key"] as Data?, let signature = row["signature"] as Data? else { return nil }
                let lastID = row["last_id"] as Int64?
                return AuditCheckpoint(
                    shard: row["shard"], rows: row["rows"], lastID: lastID.flatMap(StampID.init(rawValue:)), head: Array(head),
                    signedAtMilliseconds: row["signed_at_ms"], publicKey: Array(key), signature: Array(signature)
                )
            }
        }
        return try read.map { checkpoint throws(AuditStoreError) in
            guard let checkpoint else { throw AuditStoreError(.rejected, "the SQLite store holds a malformed checkpoint") }
            return checkpoint
        }
    }

    private static func chainHead(_ db: Database) throws -> ChainHead {
        guard let row = try Row.fetchOne(db.cachedStatement(sql: SQL.chainHead)), let hash = row["head"] as Data? else { return .empty }
        return ChainHead(rows: row["rows"], hash: Array(hash), lastID: (row["last_id"] as Int64?).flatMap(StampID.init(rawValue:)))
    }

    /// Chains the rows stored before the chain existed, in ID order: the migration that adds the
    /// chain runs it, with the trigger that refuses updates set aside for it.
    private static func chainStoredRows(_ db: Database) throws {
        try db.execute(sql: "DROP TRIGGER stamp_audit_events_refuse_update")
        var head = ChainHead.empty
        let rows = try Row.fetchCursor(db, sql: "SELECT \(AuditInsertBatch.columns) FROM stamp_audit_events ORDER BY id")
        var links: [(id: Int64, position: Int64, hash: [UInt8])] = []
        while let row = try rows.next() {
            guard let content = AuditRow(row: row) else { throw AuditStoreError(.rejected, "the SQLite store holds a malformed row") }
            let link = AuditChain.extend(head, with: content)
            links.append((content.id.rawValue, link.position, link.hash))
            head = link.head
        }
        for link in links {
            try db.execute(sql: "UPDATE stamp_audit_events SET chain_position = ?, chain_hash = ? WHERE id = ?", arguments: [link.position, Data(link.hash), link.id])
        }
        try db.execute(sql: SQL.moveChainHead, arguments: [head.rows, Data(head.hash), head.lastID?.rawValue])
        try db.execute(sql: refuseUpdate)
    }

    public func userKeys(user: String) async throws(AuditStoreError) -> [StoredUserKey] {
        try await reading("read data keys") { db in try Self.userKeys(db, user: user) }
    }

    public func addUserKey(_ key: StoredUserKey) async throws(AuditStoreError) -> [StoredUserKey] {
        try await writing("store a data key") { db in
            try db.cachedStatement(sql: SQL.addUserKey).execute(arguments: [key.user, key.generation, key.wrapped.map { Data($0) }])
            return try Self.userKeys(db, user: key.user)
        }
    }

    public func addFirstUserKeys(_ keys: [StoredUserKey]) async throws(AuditStoreError) -> Set<String> {
        guard !keys.isEmpty else { return [] }
        return try await writing("store data keys") { db in
            var stored: Set<String> = []
            let statement = try db.cachedStatement(sql: SQL.addFirstUserKey)
            for key in keys {
                try statement.execute(arguments: [key.user, key.generation, key.wrapped.map { Data($0) }])
                if db.changesCount == 1 { stored.insert(key.user) }
            }
            return stored
        }
    }

    public func eraseUserKeys(user: String) async throws(AuditStoreError) {
        try await writing("destroy data keys") { db in
            // Zeroes the freed bytes of the destroyed keys in the database file instead of leaving them.
            try db.execute(sql: "PRAGMA secure_delete = ON")
            try db.cachedStatement(sql: SQL.destroyUserKeys).execute(arguments: [user])
            try db.cachedStatement(sql: SQL.addUserKey).execute(arguments: [user, 0, nil as Data?])
        }
    }

    public func liveUserKeys() async throws(AuditStoreError) -> [StoredUserKey] {
        try await reading("read data keys") { db in
            try Row.fetchAll(db.cachedStatement(sql: SQL.liveUserKeys)).map(StoredUserKey.init(row:))
        }
    }

    public func rewrapUserKeys(_ changes: [(old: StoredUserKey, wrapped: [UInt8])]) async throws(AuditStoreError) -> Int {
        let changes = changes.map { ($0.old.user, $0.old.generation, $0.old.wrapped.map { Data($0) }, Data($0.wrapped)) }
        return try await writing("re-wrap data keys") { db in
            var replaced = 0
            let statement = try db.cachedStatement(sql: SQL.rewrapUserKey)
            for (user, generation, old, wrapped) in changes {
                try statement.execute(arguments: [wrapped, user, generation, old])
                replaced += db.changesCount
            }
            return replaced
        }
    }

    public func recordAccess(_ entry: AccessLogEntry) async throws(AuditStoreError) {
        try await writing("record an access") { db in
            try db.cachedStatement(sql: SQL.recordAccess).execute(arguments: [entry.recordedAt, entry.reader, entry.user, entry.request, entry.eventList])
        }
    }

    public func accessLog(user: String, limit: Int) async throws(AuditStoreError) -> [AccessLogEntry] {
        guard limit > 0 else { return [] }
        let entries = try await reading("read the access log") { db in
            try Row.fetchAll(db.cachedStatement(sql: SQL.accessLog), arguments: [user, limit]).map(AccessLogEntry.init(row:))
        }
        return try entries.map { entry throws(AuditStoreError) in
            guard let entry else { throw AuditStoreError(.rejected, "the SQLite store holds a malformed access log entry") }
            return entry
        }
    }

    private static func userKeys(_ db: Database, user: String) throws -> [StoredUserKey] {
        try Row.fetchAll(db.cachedStatement(sql: SQL.userKeys), arguments: [user, StoredUserKey.legacyKeyOwner]).map(StoredUserKey.init(row:))
    }

    public func ping() async throws(AuditStoreError) {
        _ = try await reading("answer a ping") { db in
            try Int.fetchOne(db, sql: "SELECT 1")
        }
    }

    /// Waits for running operations, closes the connections and ends ``run()``; later operations fail.
    public func close() async {
        closing.finish()
        database.close()
    }

    private func rows(_ action: String, _ sql: String, _ arguments: StatementArguments) async throws(AuditStoreError) -> [AuditRow] {
        let rows = try await reading(action) { db in
            try Row.fetchAll(db.cachedStatement(sql: sql), arguments: arguments).map(AuditRow.init(row:))
        }
        return try rows.map { row throws(AuditStoreError) in
            guard let row else { throw AuditStoreError(.rejected, "the SQLite store holds a malformed row") }
            return row
        }
    }

    /// Runs `body` on a reading connection.
    private func reading<Result: Sendable>(_ action: String, _ body: @escaping @Sendable (Database) throws -> Result) async throws(AuditStoreError) -> Result {
        do {
            return try await database.read(body)
        } catch {
            throw Self.wrap(error, action: action, logger: logger)
        }
    }

    /// Runs `body` in a `BEGIN IMMEDIATE` transaction on the writing connection; returns after the commit.
    private func writing<Result: Sendable>(_ action: String, _ body: @escaping @Sendable (Database) throws -> Result) async throws(AuditStoreError) -> Result {
        do {
            return try await database.immediateTransaction(body)
        } catch {
            throw Self.wrap(error, action: action, logger: logger)
        }
    }

    /// Reports `error` as an ``AuditStoreError`` that names only the kind of failure.
    private static func wrap(_ error: any Error, action: String, logger: Logger) -> AuditStoreError {
        if let error = error as? AuditStoreError { return error }
        if let error = error as? StampDatabase.DatabaseError {
            return AuditStoreError(.unavailable, "the SQLite store could not \(action): \(error.message)")
        }
        logger.debug("an SQLite audit store operation failed", metadata: SQLiteDatabase.metadata(error))
        if SQLiteDatabase.isRefusal(error) {
            return AuditStoreError(.rejected, "the SQLite store could not \(action): the database refused it")
        }
        return AuditStoreError(.unavailable, "the SQLite store could not \(action): the database failed")
    }

    private static func id(_ value: Int64) throws(AuditStoreError) -> StampID {
        guard let id = StampID(rawValue: value) else {
            throw AuditStoreError(.rejected, "the SQLite store holds a malformed row")
        }
        return id
    }

    /// The trigger that refuses updates of rows.
    private static let refuseUpdate = """
        CREATE TRIGGER stamp_audit_events_refuse_update BEFORE UPDATE ON stamp_audit_events
        BEGIN SELECT RAISE(ABORT, 'stamp_audit_events is append-only'); END
        """

    /// The migration that adds the hash chain, after which the rows stored before it are chained.
    private static let chainMigration = "0004-chain-rows"

    /// The schema's history, oldest first; a name, once released, never changes meaning.
    ///
    /// `id` is the table's `INTEGER PRIMARY KEY`: in SQLite that is a 64-bit integer which keys
    /// the table itself, so walks in ID order need no separate index.
    private static let migrations: [(name: String, statements: [String])] = [
        (
            name: "0001-create-events",
            statements: [
                """
                CREATE TABLE stamp_audit_events (
                    id INTEGER PRIMARY KEY,
                    user_id TEXT NOT NULL,
                    field TEXT NOT NULL,
                    actor TEXT NOT NULL,
                    reason TEXT NOT NULL,
                    before_value BLOB,
                    after_value BLOB,
                    idempotency_key TEXT NOT NULL,
                    request_digest BLOB NOT NULL,
                    UNIQUE (user_id, idempotency_key)
                ) STRICT
                """,
                "CREATE INDEX stamp_audit_events_user_id ON stamp_audit_events (user_id, id)",
                "CREATE INDEX stamp_audit_events_user_field_id ON stamp_audit_events (user_id, field, id)",
            ]
        ),
        (
            name: "0002-refuse-changes",
            statements: [
                refuseUpdate,
                """
                CREATE TRIGGER stamp_audit_events_refuse_delete BEFORE DELETE ON stamp_audit_events
                BEGIN SELECT RAISE(ABORT, 'stamp_audit_events is append-only'); END
                """,
            ]
        ),
        (
            // The newest shard map version a server recorded here; inserts under older ones are refused.
            name: "0003-create-shard-map",
            statements: [
                """
                CREATE TABLE stamp_audit_shard_map (
                    singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
                    version INTEGER NOT NULL,
                    document BLOB NOT NULL
                ) STRICT
                """,
                "INSERT INTO stamp_audit_shard_map (singleton, version, document) VALUES (1, 0, x'')",
            ]
        ),
        (
            // Every row's place in the shard's hash chain, the chain's head, and signed checkpoints of it.
            name: chainMigration,
            statements: [
                "ALTER TABLE stamp_audit_events ADD COLUMN chain_position INTEGER",
                "ALTER TABLE stamp_audit_events ADD COLUMN chain_hash BLOB",
                "CREATE UNIQUE INDEX stamp_audit_events_chain_position ON stamp_audit_events (chain_position)",
                """
                CREATE TRIGGER stamp_audit_events_need_chain BEFORE INSERT ON stamp_audit_events
                WHEN NEW.chain_position IS NULL OR NEW.chain_hash IS NULL
                BEGIN SELECT RAISE(ABORT, 'stamp_audit_events rows need a chain position and hash'); END
                """,
                """
                CREATE TABLE stamp_audit_chain (
                    singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
                    rows INTEGER NOT NULL,
                    head BLOB NOT NULL,
                    last_id INTEGER
                ) STRICT
                """,
                "INSERT INTO stamp_audit_chain (singleton, rows, head, last_id) VALUES (1, 0, zeroblob(32), NULL)",
                """
                CREATE TABLE stamp_audit_checkpoints (
                    rows INTEGER PRIMARY KEY,
                    shard INTEGER NOT NULL,
                    last_id INTEGER,
                    head BLOB NOT NULL,
                    signed_at_ms INTEGER NOT NULL,
                    public_key BLOB NOT NULL,
                    signature BLOB NOT NULL
                ) STRICT
                """,
                """
                CREATE TRIGGER stamp_audit_checkpoints_refuse_update BEFORE UPDATE ON stamp_audit_checkpoints
                BEGIN SELECT RAISE(ABORT, 'stamp_audit_checkpoints is append-only'); END
                """,
                """
                CREATE TRIGGER stamp_audit_checkpoints_refuse_delete BEFORE DELETE ON stamp_audit_checkpoints
                BEGIN SELECT RAISE(ABORT, 'stamp_audit_checkpoints is append-only'); END
                """,
            ]
        ),
        (
            // Each user's data keys, wrapped by the master key; an erasure sets them to NULL. A
            // destroyed key can never be stored again, and no key row is ever deleted.
            name: "0005-create-user-keys",
            statements: [
                """
                CREATE TABLE stamp_audit_user_keys (
                    user_id TEXT NOT NULL,
                    generation INTEGER NOT NULL,
                    wrapped_key BLOB,
                    PRIMARY KEY (user_id, generation)
                ) STRICT
                """,
                """
                CREATE TRIGGER stamp_audit_user_keys_refuse_restore BEFORE UPDATE ON stamp_audit_user_keys
                WHEN OLD.wrapped_key IS NULL AND NEW.wrapped_key IS NOT NULL
                BEGIN SELECT RAISE(ABORT, 'a destroyed data key cannot be stored again'); END
                """,
                """
                CREATE TRIGGER stamp_audit_user_keys_refuse_delete BEFORE DELETE ON stamp_audit_user_keys
                BEGIN SELECT RAISE(ABORT, 'data keys are destroyed by setting them to NULL, never deleted'); END
                """,
            ]
        ),
        (
            // Every request that returned personal-data values to a reader; append-only.
            name: "0006-create-access-log",
            statements: [
                """
                CREATE TABLE stamp_audit_access_log (
                    recorded_at INTEGER NOT NULL,
                    reader TEXT NOT NULL,
                    user_id TEXT NOT NULL,
                    request TEXT NOT NULL,
                    event_ids TEXT NOT NULL
                ) STRICT
                """,
                "CREATE INDEX stamp_audit_access_log_user ON stamp_audit_access_log (user_id, recorded_at)",
                """
                CREATE TRIGGER stamp_audit_access_log_refuse_update BEFORE UPDATE ON stamp_audit_access_log
                BEGIN SELECT RAISE(ABORT, 'stamp_audit_access_log is append-only'); END
                """,
                """
                CREATE TRIGGER stamp_audit_access_log_refuse_delete BEFORE DELETE ON stamp_audit_access_log
                BEGIN SELECT RAISE(ABORT, 'stamp_audit_access_log is append-only'); END
                """,
            ]
        ),
    ]
}

/// The fixed statements of the SQLite store, each prepared once per connection and kept.
private enum SQL {
    /// Inserts a row (values `?1`...`?9` in the order of ``AuditInsertBatch/columns``, then its
    /// chain position and hash) only above its user's latest ID, and only when its ID and its user
    /// and key are new; a chain position taken already fails the statement. (An upsert's `SELECT`
    /// needs its `WHERE` for SQLite to parse it.)
    static let insertAboveLatest = """
        INSERT INTO stamp_audit_events (\(AuditInsertBatch.columns), chain_position, chain_hash)
        SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11
            WHERE ?1 > COALESCE((SELECT MAX(id) FROM stamp_audit_events WHERE user_id = ?2), -1)
        ON CONFLICT (id) DO NOTHING
        ON CONFLICT (user_id, idempotency_key) DO NOTHING
        """
    /// The chain's head.
    static let chainHead = "SELECT rows, head, last_id FROM stamp_audit_chain"
    /// Moves the chain's head to `?1` rows, hash `?2`, last ID `?3`.
    static let moveChainHead = "UPDATE stamp_audit_chain SET rows = ?1, head = ?2, last_id = ?3"
    /// Up to `?2` rows after chain position `?1`, in chain order.
    static let chainedRows = "SELECT chain_position, chain_hash, \(AuditInsertBatch.columns) FROM stamp_audit_events WHERE chain_position > ?1 ORDER BY chain_position LIMIT ?2"
    /// Keeps a checkpoint unless one of the same row count is kept.
    static let recordCheckpoint = "INSERT INTO stamp_audit_checkpoints (rows, shard, last_id, head, signed_at_ms, public_key, signature) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
    /// Up to `?2` checkpoints of fewer than `?1` rows, newest first.
    static let checkpoints = "SELECT rows, shard, last_id, head, signed_at_ms, public_key, signature FROM stamp_audit_checkpoints WHERE rows < ?1 ORDER BY rows DESC LIMIT ?2"
    /// The shard map version the shard holds.
    static let mapVersion = "SELECT version FROM stamp_audit_shard_map"
    /// The shard map version and document the shard holds.
    static let heldMap = "SELECT version, document FROM stamp_audit_shard_map"
    /// Raises the held shard map to version `?1` with document `?2` unless it is that new already.
    static let raiseMap = "UPDATE stamp_audit_shard_map SET version = ?1, document = ?2 WHERE version < ?1"
    /// Whether user `?1` has a row with idempotency key `?2`.
    static let keyTaken = "SELECT EXISTS (SELECT 1 FROM stamp_audit_events WHERE user_id = ?1 AND idempotency_key = ?2)"
    /// The greatest ID of user `?1`.
    static let latestID = "SELECT MAX(id) FROM stamp_audit_events WHERE user_id = ?1"
    /// Up to `?2` IDs above `?1`, ascending.
    static let idsAfter = "SELECT id FROM stamp_audit_events WHERE id > ?1 ORDER BY id LIMIT ?2"
    /// The data keys of user `?1` and of the legacy key owner `?2`.
    static let userKeys = "SELECT user_id, generation, wrapped_key FROM stamp_audit_user_keys WHERE user_id IN (?1, ?2) ORDER BY user_id, generation"
    /// Stores generation `?2` of user `?1`'s key as `?3` unless the shard holds that generation.
    static let addUserKey = "INSERT INTO stamp_audit_user_keys (user_id, generation, wrapped_key) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING"
    /// Stores generation `?2` of user `?1`'s key as `?3` only when the shard holds no key of the user.
    static let addFirstUserKey = """
        INSERT INTO stamp_audit_user_keys (user_id, generation, wrapped_key)
        SELECT ?1, ?2, ?3 WHERE NOT EXISTS (SELECT 1 FROM stamp_audit_user_keys WHERE user_id = ?1)
        ON CONFLICT DO NOTHING
        """
    /// Destroys every key of user `?1`.
    static let destroyUserKeys = "UPDATE stamp_audit_user_keys SET wrapped_key = NULL WHERE user_id = ?1 AND wrapped_key IS NOT NULL"
    /// Every key that is not destroyed.
    static let liveUserKeys = "SELECT user_id, generation, wrapped_key FROM stamp_audit_user_keys WHERE wrapped_key IS NOT NULL ORDER BY user_id, generation"
    /// Sets generation `?3` of user `?2`'s key to `?1` while it is `?4`.
    static let rewrapUserKey = "UPDATE stamp_audit_user_keys SET wrapped_key = ?1 WHERE user_id = ?2 AND generation = ?3 AND wrapped_key = ?4"
    /// Appends an access log entry.
    static let recordAccess = "INSERT INTO stamp_audit_access_log (recorded_at, reader, user_id, request, event_ids) VALUES (?1, ?2, ?3, ?4, ?5)"
    /// Up to `?2` access log entries of user `?1`, newest first.
    static let accessLog = "SELECT recorded_at, reader, user_id, request, event_ids FROM stamp_audit_access_log WHERE user_id = ?1 ORDER BY recorded_at DESC, rowid DESC LIMIT ?2"
    /// The row with ID `?1`.
    static let rowByID = "SELECT \(AuditInsertBatch.columns) FROM stamp_audit_events WHERE id = ?1"
    /// The row of user `?1` with idempotency key `?2`.
    static let rowByKey = "SELECT \(AuditInsertBatch.columns) FROM stamp_audit_events WHERE user_id = ?1 AND idempotency_key = ?2"
    /// Up to `?3` rows of user `?1` with IDs up to `?2`, newest first.
    static let history = "SELECT \(AuditInsertBatch.columns) FROM stamp_audit_events WHERE user_id = ?1 AND id <= ?2 ORDER BY id DESC LIMIT ?3"
    /// As ``history``, of field `?2` only, with IDs up to `?3`, up to `?4` rows.
    static let historyOfField = "SELECT \(AuditInsertBatch.columns) FROM stamp_audit_events WHERE user_id = ?1 AND field = ?2 AND id <= ?3 ORDER BY id DESC LIMIT ?4"
    /// The newest row of each field of user `?1`, by field; the greatest IDs come from the
    /// `(user_id, field, id)` index alone.
    static let latestOfEachField = """
        SELECT \(AuditInsertBatch.columns) FROM stamp_audit_events
            WHERE id IN (SELECT MAX(id) FROM stamp_audit_events WHERE user_id = ?1 GROUP BY field) ORDER BY field
        """
}

extension AuditRow {
    /// The values an insert binds, in the order of ``AuditInsertBatch/columns``.
    fileprivate var arguments: StatementArguments {
        [id.rawValue, user, field, actor, reason, before.map { Data($0) }, after.map { Data($0) }, idempotencyKey, Data(requestDigest)]
    }

    /// Reads a row from the columns of ``AuditInsertBatch/columns``; `nil` when a column holds
    /// something else than the schema allows.
    fileprivate init?(row: Row) {
        guard
            let rawID = row["id"] as Int64?,
            let id = StampID(rawValue: rawID),
            let user = row["user_id"] as String?,
            let field = row["field"] as String?,
            let actor = row["actor"] as String?,
            let reason = row["reason"] as String?,
            let idempotencyKey = row["idempotency_key"] as String?,
            let requestDigest = row["request_digest"] as Data?
        else { return nil }
        self.init(
            id: id,
            user: user,
            field: field,
            actor: actor,
            reason: reason,
            before: (row["before_value"] as Data?).map(Array.init),
            after: (row["after_value"] as Data?).map(Array.init),
            idempotencyKey: idempotencyKey,
            requestDigest: Array(requestDigest)
        )
    }
}

extension StoredUserKey {
    fileprivate init(row: Row) {
        self.init(user: row["user_id"], generation: row["generation"], wrapped: (row["wrapped_key"] as Data?).map(Array.init))
    }
}

extension AccessLogEntry {
    /// Reads an entry; `nil` when its event list does not parse.
    fileprivate init?(row: Row) {
        guard let events = AccessLogEntry.events(fromList: row["event_ids"]) else { return nil }
        self.init(recordedAt: row["recorded_at"], reader: row["reader"], user: row["user_id"], request: row["request"], events: events)
    }
}
