import Logging
import SQLiteNIO
import StampAudit
import StampCore
import StampDatabase

/// An audit store in one SQLite file: the embedded default, one file per shard.
///
/// Every audit server process on the machine opens the shard's file. The file is in WAL mode,
/// and every write runs in a `BEGIN IMMEDIATE` transaction on the store's one writing connection,
/// so processes take turns on SQLite's write lock, waiting at most the busy timeout. Reads run on
/// connections of their own and see the last commit without waiting for a write in progress.
public final class SQLiteAuditStore: AuditStore {
    /// SQLite's limit on bound parameters in one statement.
    static let parameterLimit = 32_766
    /// How many reads may run at once.
    static let readerCount = 2

    private let writer: SQLiteConnectionPool
    private let readers: SQLiteConnectionPool
    private let logger: Logger
    private let closed: AsyncStream<Never>
    private let closing: AsyncStream<Never>.Continuation

    /// Creates a store on the file at `path`; the file and its parent directories are created on first use.
    public init(path: String, logger: Logger) {
        self.writer = SQLiteConnectionPool(path: path, capacity: 1, logger: logger)
        self.readers = SQLiteConnectionPool(path: path, capacity: Self.readerCount, setUp: ["PRAGMA query_only = ON"], logger: logger)
        self.logger = logger
        (closed, closing) = AsyncStream.makeStream()
    }

    /// Waits until the task is cancelled or the store is closed: the store has no background work.
    public func run() async throws {
        for await _ in closed {}
    }

    public func migrate() async throws(AuditStoreError) {
        try await immediateTransaction("migrate the schema") { connection in
            _ = try await connection.query(
                "CREATE TABLE IF NOT EXISTS stamp_audit_migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP) STRICT"
            )
            let applied = Set(try await connection.query("SELECT name FROM stamp_audit_migrations").compactMap { $0.column("name")?.string })
            for migration in Self.migrations where !applied.contains(migration.name) {
                for statement in migration.statements {
                    _ = try await connection.query(statement)
                }
                _ = try await connection.query("INSERT INTO stamp_audit_migrations (name) VALUES (?1)", [.text(migration.name)])
            }
        }
    }

    public func insert(_ rows: [AuditRow]) async throws(AuditStoreError) -> [Bool] {
        let batch = AuditInsertBatch(rows)
        let statements = batch.statements(parameterLimit: Self.parameterLimit)
        guard !statements.isEmpty else { return batch.results(insertedIDs: []) }
        let inserted = try await immediateTransaction("insert rows") { connection in
            var inserted: [StampID] = []
            for rows in statements {
                let values = repeatElement("(?, ?, ?, ?, ?, ?, ?, ?, ?)", count: rows.count).joined(separator: ", ")
                let returned = try await connection.query(
                    """
                    INSERT INTO stamp_audit_events (\(AuditInsertBatch.columns)) VALUES \(values)
                    ON CONFLICT (user_id, idempotency_key) DO NOTHING
                    RETURNING id
                    """,
                    rows.flatMap(\.bindings)
                )
                inserted += try returned.map { row throws(AuditStoreError) in try Self.id(in: row) }
            }
            return inserted
        }
        return batch.results(insertedIDs: inserted)
    }

    public func row(id: StampID) async throws(AuditStoreError) -> AuditRow? {
        try await read("read a row", SQL.rowByID, [.integer(SQLiteInt64(id.rawValue))]).first
    }

    public func row(user: String, idempotencyKey: String) async throws(AuditStoreError) -> AuditRow? {
        try await read("read a row", SQL.rowByKey, [.text(user), .text(idempotencyKey)]).first
    }

    public func history(user: String, field: String?, before: StampID?, limit: Int) async throws(AuditStoreError) -> [AuditRow] {
        guard limit > 0 else { return [] }
        var conditions = ["user_id = ?"]
        var bindings: [SQLiteData] = [.text(user)]
        if let field {
            conditions.append("field = ?")
            bindings.append(.text(field))
        }
        if let before {
            conditions.append("id < ?")
            bindings.append(.integer(SQLiteInt64(before.rawValue)))
        }
        bindings.append(.integer(SQLiteInt64(limit)))
        return try await read(
            "read a history",
            "SELECT \(AuditInsertBatch.columns) FROM stamp_audit_events WHERE \(conditions.joined(separator: " AND ")) ORDER BY id DESC LIMIT ?",
            bindings
        )
    }

    public func latestID(user: String) async throws(AuditStoreError) -> StampID? {
        let rows = try await reading("read the latest ID") { connection in
            try await connection.query("SELECT MAX(id) AS id FROM stamp_audit_events WHERE user_id = ?1", [.text(user)])
        }
        guard let row = rows.first, row.column("id")?.isNull == false else { return nil }
        return try Self.id(in: row)
    }

    public func ids(after: StampID?, limit: Int) async throws(AuditStoreError) -> [StampID] {
        guard limit > 0 else { return [] }
        let rows = try await reading("list IDs") { connection in
            // IDs are never negative, so -1 lies below them all.
            try await connection.query(
                "SELECT id FROM stamp_audit_events WHERE id > ?1 ORDER BY id LIMIT ?2",
                [.integer(SQLiteInt64(after?.rawValue ?? -1)), .integer(SQLiteInt64(limit))]
            )
        }
        return try rows.map { row throws(AuditStoreError) in try Self.id(in: row) }
    }

    public func ping() async throws(AuditStoreError) {
        _ = try await reading("answer a ping") { connection in
            try await connection.query("SELECT 1")
        }
    }

    /// Waits for running operations, closes the connections and ends ``run()``; later operations fail.
    public func close() async {
        closing.finish()
        await writer.close()
        await readers.close()
    }

    private func read(_ action: String, _ sql: String, _ bindings: [SQLiteData]) async throws(AuditStoreError) -> [AuditRow] {
        let rows = try await reading(action) { connection in
            try await connection.query(sql, bindings)
        }
        return try rows.map { row throws(AuditStoreError) in try AuditRow(row: row) }
    }

    /// Runs `body` on a reading connection.
    private func reading<Result: Sendable>(
        _ action: String,
        _ body: (SQLiteConnection) async throws -> Result
    ) async throws(AuditStoreError) -> Result {
        do {
            return try await readers.withConnection(body)
        } catch {
            throw Self.wrap(error, action: action, logger: logger)
        }
    }

    /// Runs `body` in a `BEGIN IMMEDIATE` transaction on the writing connection; returns after the commit.
    private func immediateTransaction<Result: Sendable>(
        _ action: String,
        _ body: (SQLiteConnection) async throws -> Result
    ) async throws(AuditStoreError) -> Result {
        do {
            return try await writer.withImmediateTransaction(body)
        } catch {
            throw Self.wrap(error, action: action, logger: logger)
        }
    }

    /// Reports `error` as an ``AuditStoreError`` that names only the kind of failure: SQLite's
    /// messages may quote the statement.
    private static func wrap(_ error: any Error, action: String, logger: Logger) -> AuditStoreError {
        if let error = error as? AuditStoreError { return error }
        if let error = error as? DatabaseError {
            return AuditStoreError(.unavailable, "the SQLite store could not \(action): \(error.message)")
        }
        logger.debug("an SQLite audit store operation failed", metadata: SQLiteConnectionPool.metadata(error))
        guard let error = error as? SQLiteError else {
            return AuditStoreError(.unavailable, "the SQLite store could not \(action)")
        }
        switch error.reason {
        case .constraint, .constraintCheckFailed, .constraintCommitHookFailed, .constraintForeignKeyFailed,
            .constraintUserFunctionFailed, .constraintNotNullFailed, .constraintPrimaryKeyFailed, .constraintTriggerFailed,
            .constraintUniqueFailed, .constraintVirtualTableFailed, .constraintUniqueRowIDFailed,
            .constraintUpdateTriggerDeletedRow, .constraintStrictDataTypeFailed, .abort, .permission, .auth,
            .authUnauthorizedUser, .error, .schema, .tooBig, .mismatch, .range:
            return AuditStoreError(.rejected, "the SQLite store could not \(action): the database refused it (\(error.reason))")
        default:
            return AuditStoreError(.unavailable, "the SQLite store could not \(action): the database failed (\(error.reason))")
        }
    }

    private static func id(in row: SQLiteRow) throws(AuditStoreError) -> StampID {
        guard let value = row.column("id")?.integer, let id = StampID(rawValue: Int64(value)) else {
            throw AuditStoreError(.rejected, "the SQLite store holds a malformed row")
        }
        return id
    }

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
                """
                CREATE TRIGGER stamp_audit_events_refuse_update BEFORE UPDATE ON stamp_audit_events
                BEGIN SELECT RAISE(ABORT, 'stamp_audit_events is append-only'); END
                """,
                """
                CREATE TRIGGER stamp_audit_events_refuse_delete BEFORE DELETE ON stamp_audit_events
                BEGIN SELECT RAISE(ABORT, 'stamp_audit_events is append-only'); END
                """,
            ]
        ),
    ]
}

/// The fixed statements of the SQLite store; `?N` are bound parameters.
private enum SQL {
    /// The row with ID `?1`.
    static let rowByID = "SELECT \(AuditInsertBatch.columns) FROM stamp_audit_events WHERE id = ?1"
    /// The row of user `?1` with idempotency key `?2`.
    static let rowByKey = "SELECT \(AuditInsertBatch.columns) FROM stamp_audit_events WHERE user_id = ?1 AND idempotency_key = ?2"
}

extension AuditRow {
    /// The values an insert binds, in the order of ``AuditInsertBatch/columns``.
    fileprivate var bindings: [SQLiteData] {
        [
            .integer(SQLiteInt64(id.rawValue)),
            .text(user),
            .text(field),
            .text(actor),
            .text(reason),
            before.map(Self.blob) ?? .null,
            after.map(Self.blob) ?? .null,
            .text(idempotencyKey),
            Self.blob(requestDigest),
        ]
    }

    private static func blob(_ bytes: [UInt8]) -> SQLiteData {
        .blob(ByteBuffer(bytes: bytes))
    }

    /// Reads a row from the columns of ``AuditInsertBatch/columns``.
    fileprivate init(row: SQLiteRow) throws(AuditStoreError) {
        guard
            let rawID = row.column("id")?.integer,
            let id = StampID(rawValue: Int64(rawID)),
            case .text(let user) = row.column("user_id"),
            case .text(let field) = row.column("field"),
            case .text(let actor) = row.column("actor"),
            case .text(let reason) = row.column("reason"),
            let before = Self.optionalBytes(row.column("before_value")),
            let after = Self.optionalBytes(row.column("after_value")),
            case .text(let idempotencyKey) = row.column("idempotency_key"),
            case .blob(let requestDigest) = row.column("request_digest")
        else {
            throw AuditStoreError(.rejected, "the SQLite store holds a malformed row")
        }
        self.init(
            id: id,
            user: user,
            field: field,
            actor: actor,
            reason: reason,
            before: before,
            after: after,
            idempotencyKey: idempotencyKey,
            requestDigest: Array(requestDigest.readableBytesView)
        )
    }

    /// The bytes of a nullable blob column: `.some(nil)` for NULL, `nil` when it holds something else.
    private static func optionalBytes(_ data: SQLiteData?) -> [UInt8]?? {
        switch data {
        case .null: .some(nil)
        case .blob(let buffer): .some(Array(buffer.readableBytesView))
        default: nil
        }
    }
}
