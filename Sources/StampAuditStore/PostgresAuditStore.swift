import Foundation
import Logging
import PostgresNIO
import StampAudit
import StampCore
import StampDatabase
import Synchronization

/// An audit store in a PostgreSQL database, one database per shard.
///
/// Migrations run in one transaction behind an advisory lock, so audit servers may migrate the
/// same database at once. Besides the triggers that refuse updates and deletes, a migration creates
/// the role `stamp_audit_writer`, allowed only to read and insert: the service should log in as a
/// role that is a member of it, and leave running the migrations to a more privileged role (which
/// needs `CREATEROLE`, or finds the role created already). Without that privilege the role migration
/// is skipped with a warning and tried again on the next ``migrate()``.
public final class PostgresAuditStore: AuditStore {
    /// PostgreSQL's limit on bound parameters in one statement.
    static let parameterLimit = 65_535

    private let settings: PostgresConnectionSettings
    private let client: PostgresClient
    private let logger: Logger
    /// Set by ``close()``: operations fail from then on, without waiting for the pool to shut down.
    private let isClosed = Atomic(false)
    private let closed: AsyncStream<Never>
    private let closing: AsyncStream<Never>.Continuation

    /// Creates a store on the database of `configuration`; ``run()`` must run for it to answer.
    public init(configuration: PostgresConnectionSettings, logger: Logger) {
        self.settings = configuration
        self.client = PostgresClient(configuration: configuration.clientConfiguration, backgroundLogger: logger)
        self.logger = logger
        (closed, closing) = AsyncStream.makeStream()
    }

    /// Reads the connection settings of a `postgres://` URL, as ``PostgresURL`` and
    /// ``PostgresConnectionSettings`` do; a refusal is an invalid configuration whose message never
    /// repeats the URL.
    public static func configuration(url: String) throws(AuditStoreError) -> PostgresConnectionSettings {
        do {
            return try PostgresConnectionSettings(url: PostgresURL(parsing: url))
        } catch {
            throw AuditStoreError(.invalidConfiguration, error.message)
        }
    }

    /// Runs the connection pool until the task is cancelled or the store is closed.
    public func run() async throws {
        await withDiscardingTaskGroup { group in
            group.addTask { await self.client.run() }
            for await _ in closed {}
            group.cancelAll()
        }
    }

    /// Connects once on its own first, so that a refused connection (TLS, password) says why.
    public func migrate() async throws(AuditStoreError) {
        try await perform("migrate the schema") {
            do throws(DatabaseError) {
                try await settings.checkConnection(logger: logger)
            } catch {
                throw AuditStoreError(.unavailable, "the PostgreSQL store cannot connect: \(error.message)")
            }
            try await client.withTransaction(logger: logger) { connection in
                try await connection.query("SELECT pg_advisory_xact_lock(\(Self.migrationLockKey))", logger: logger)
                try await Self.migrate(connection, logger: logger)
            }
        }
    }

    public func insert(_ rows: [AuditRow], mapVersion: Int) async throws(AuditStoreError) -> [AuditInsertOutcome] {
        let batch = AuditInsertBatch(rows)
        let statements = batch.statements(parameterLimit: Self.parameterLimit).map(Self.insertQuery)
        guard !statements.isEmpty else { return batch.outcomes(ofSent: []) }
        // One explicit transaction, so that an error at the commit (a deferred constraint, a
        // serialization failure) fails the call instead of going unseen. Its first statement takes
        // the shard map row in share mode: a map being recorded waits for this commit, and this
        // transaction for that one, whose version it then reads.
        let inserted = try await perform("insert rows") { () async throws -> Set<StampID>? in
            try await client.withTransaction(logger: logger) { connection in
                let held = try await Self.mapVersion(connection.query("SELECT version FROM stamp_audit_shard_map FOR SHARE", logger: logger))
                guard held <= mapVersion else { return nil }
                var inserted: Set<StampID> = []
                for statement in statements {
                    inserted.formUnion(try await Self.ids(in: connection.query(statement, logger: logger)))
                }
                return inserted
            }
        }
        guard let inserted else {
            let held = try await storedMap().version
            return batch.outcomes(ofSent: batch.sent.map { _ in .staleMap(version: held) })
        }
        let refused = try await whyRefused(batch.sent.filter { !inserted.contains($0.id) })
        return try batch.outcomes(ofSent: batch.sent.map { row throws(AuditStoreError) in
            if inserted.contains(row.id) { return .stored }
            if refused.takenKeys.contains(AuditInsertBatch.UserKey(row)) { return .repeated }
            if let latest = refused.latest[row.user], latest >= row.id { return .belowLatest(latest) }
            if refused.takenIDs.contains(row.id) { return .idTaken }
            throw AuditStoreError(.rejected, "the PostgreSQL store neither stored a row nor found why")
        })
    }

    public func recordMap(_ map: StoredShardMap) async throws(AuditStoreError) -> StoredShardMap {
        try await perform("record the shard map") {
            try await client.withTransaction(logger: logger) { connection in
                try await connection.query(
                    "UPDATE stamp_audit_shard_map SET version = \(Int64(map.version)), document = \(ByteBuffer(bytes: map.document)) WHERE version < \(Int64(map.version))",
                    logger: logger
                )
                return try await Self.heldMap(connection.query("SELECT version, document FROM stamp_audit_shard_map", logger: logger))
            }
        }
    }

    public func storedMap() async throws(AuditStoreError) -> StoredShardMap {
        try await perform("read the shard map") {
            try await Self.heldMap(client.query("SELECT version, document FROM stamp_audit_shard_map", logger: logger))
        }
    }

    private static func mapVersion(_ rows: PostgresRowSequence) async throws -> Int {
        var version: Int64 = 0
        for try await value in rows.decode(Int64.self) {
            version = value
        }
        return Int(version)
    }

    private static func heldMap(_ rows: PostgresRowSequence) async throws -> StoredShardMap {
        var held = StoredShardMap.none
        for try await (version, document) in rows.decode((Int64, ByteBuffer).self) {
            held = StoredShardMap(version: Int(version), document: Array(document.readableBytesView))
        }
        return held
    }

    /// For rows an insert did not store: which of their users' keys are taken, each of their
    /// users' latest IDs, and which of their IDs other rows have. Rows are never removed, so what
    /// made the insert refuse a row is still there.
    private func whyRefused(_ rows: [AuditRow]) async throws(AuditStoreError) -> (takenKeys: Set<AuditInsertBatch.UserKey>, latest: [String: StampID], takenIDs: Set<StampID>) {
        guard !rows.isEmpty else { return ([], [:], []) }
        let users = rows.map(\.user)
        let keys = rows.map(\.idempotencyKey)
        let ids = rows.map(\.id.rawValue)
        return try await perform("check refused rows") { () async throws -> (Set<AuditInsertBatch.UserKey>, [String: StampID], Set<StampID>) in
            var taken: Set<AuditInsertBatch.UserKey> = []
            let keyRows = try await client.query(
                """
                SELECT user_id, idempotency_key FROM stamp_audit_events
                    WHERE (user_id, idempotency_key) IN (SELECT * FROM unnest(\(users)::text[], \(keys)::text[]))
                """,
                logger: logger
            )
            for try await (user, key) in keyRows.decode((String, String).self) {
                taken.insert(AuditInsertBatch.UserKey(user: user, idempotencyKey: key))
            }
            var latest: [String: StampID] = [:]
            let latestRows = try await client.query(
                "SELECT user_id, MAX(id) FROM stamp_audit_events WHERE user_id = ANY(\(Array(Set(users)))::text[]) GROUP BY user_id",
                logger: logger
            )
            for try await (user, id) in latestRows.decode((String, Int64).self) {
                latest[user] = try Self.id(id)
            }
            let takenIDs = Set(try await Self.ids(in: client.query("SELECT id FROM stamp_audit_events WHERE id = ANY(\(ids)::bigint[])", logger: logger)))
            return (taken, latest, takenIDs)
        }
    }

    public func row(id: StampID) async throws(AuditStoreError) -> AuditRow? {
        try await rows(
            "read a row",
            "SELECT \(unescaped: AuditInsertBatch.columns) FROM stamp_audit_events WHERE id = \(id.rawValue)"
        ).first
    }

    public func row(user: String, idempotencyKey: String) async throws(AuditStoreError) -> AuditRow? {
        try await rows(
            "read a row",
            """
            SELECT \(unescaped: AuditInsertBatch.columns) FROM stamp_audit_events
                WHERE user_id = \(user) AND idempotency_key = \(idempotencyKey)
            """
        ).first
    }

    public func history(user: String, field: String?, before: StampID?, limit: Int) async throws(AuditStoreError) -> [AuditRow] {
        guard limit > 0 else { return [] }
        var bindings = PostgresBindings()
        var conditions: [String] = []
        func condition(_ sql: String, _ value: some PostgresDynamicTypeEncodable) {
            bindings.append(value)
            conditions.append("\(sql) $\(bindings.count)")
        }
        condition("user_id =", user)
        if let field { condition("field =", field) }
        if let before { condition("id <", before.rawValue) }
        bindings.append(Int64(limit))
        return try await rows("read a history", PostgresQuery(
            unsafeSQL: """
                SELECT \(AuditInsertBatch.columns) FROM stamp_audit_events
                    WHERE \(conditions.joined(separator: " AND ")) ORDER BY id DESC LIMIT $\(bindings.count)
                """,
            binds: bindings
        ))
    }

    public func latestID(user: String) async throws(AuditStoreError) -> StampID? {
        try await perform("read the latest ID") {
            let rows = try await client.query("SELECT MAX(id) FROM stamp_audit_events WHERE user_id = \(user)", logger: logger)
            var latest: Int64?
            for try await value in rows.decode(Int64?.self) {
                latest = value
            }
            return try latest.map(Self.id)
        }
    }

    public func ids(after: StampID?, limit: Int) async throws(AuditStoreError) -> [StampID] {
        guard limit > 0 else { return [] }
        return try await perform("list IDs") {
            try await Self.ids(in: client.query(
                // IDs are never negative, so -1 lies below them all.
                "SELECT id FROM stamp_audit_events WHERE id > \(after?.rawValue ?? -1) ORDER BY id LIMIT \(Int64(limit))",
                logger: logger
            ))
        }
    }

    public func userKeys(user: String) async throws(AuditStoreError) -> [StoredUserKey] {
        try await perform("read data keys") {
            try await Self.userKeys(client.query(
                "SELECT user_id, generation, wrapped_key FROM stamp_audit_user_keys WHERE user_id IN (\(user), \(StoredUserKey.legacyKeyOwner)) ORDER BY user_id, generation",
                logger: logger
            ))
        }
    }

    public func addUserKey(_ key: StoredUserKey) async throws(AuditStoreError) -> [StoredUserKey] {
        try await perform("store a data key") {
            _ = try await client.query(
                """
                INSERT INTO stamp_audit_user_keys (user_id, generation, wrapped_key)
                    VALUES (\(key.user), \(Int64(key.generation)), \(key.wrapped.map { ByteBuffer(bytes: $0) })) ON CONFLICT DO NOTHING
                """,
                logger: logger
            )
        }
        return try await userKeys(user: key.user)
    }

    public func addFirstUserKeys(_ keys: [StoredUserKey]) async throws(AuditStoreError) -> Set<String> {
        guard !keys.isEmpty else { return [] }
        let users = keys.map(\.user)
        let generations = keys.map { Int64($0.generation) }
        // Bound as hex text: one array parameter per column.
        let wrapped = keys.map { key in (key.wrapped ?? []).map { String(format: "%02x", $0) }.joined() }
        return try await perform("store data keys") {
            let rows = try await client.query(
                """
                INSERT INTO stamp_audit_user_keys (user_id, generation, wrapped_key)
                    SELECT input.user_id, input.generation, decode(input.wrapped_key, 'hex')
                    FROM unnest(\(users)::text[], \(generations)::bigint[], \(wrapped)::text[]) AS input (user_id, generation, wrapped_key)
                    WHERE NOT EXISTS (SELECT 1 FROM stamp_audit_user_keys stored WHERE stored.user_id = input.user_id)
                    ON CONFLICT DO NOTHING RETURNING user_id
                """,
                logger: logger
            )
            var stored: Set<String> = []
            for try await user in rows.decode(String.self) { stored.insert(user) }
            return stored
        }
    }

    public func eraseUserKeys(user: String) async throws(AuditStoreError) {
        try await perform("destroy data keys") {
            try await client.withTransaction(logger: logger) { connection in
                try await connection.query("UPDATE stamp_audit_user_keys SET wrapped_key = NULL WHERE user_id = \(user) AND wrapped_key IS NOT NULL", logger: logger)
                try await connection.query(
                    "INSERT INTO stamp_audit_user_keys (user_id, generation, wrapped_key) VALUES (\(user), 0, NULL) ON CONFLICT DO NOTHING",
                    logger: logger
                )
            }
        }
    }

    public func liveUserKeys() async throws(AuditStoreError) -> [StoredUserKey] {
        try await perform("read data keys") {
            try await Self.userKeys(client.query(
                "SELECT user_id, generation, wrapped_key FROM stamp_audit_user_keys WHERE wrapped_key IS NOT NULL ORDER BY user_id, generation",
                logger: logger
            ))
        }
    }

    public func rewrapUserKeys(_ changes: [(old: StoredUserKey, wrapped: [UInt8])]) async throws(AuditStoreError) -> Int {
        try await perform("re-wrap data keys") {
            try await client.withTransaction(logger: logger) { connection in
                var replaced = 0
                for (old, wrapped) in changes {
                    let rows = try await connection.query(
                        """
                        UPDATE stamp_audit_user_keys SET wrapped_key = \(ByteBuffer(bytes: wrapped))
                            WHERE user_id = \(old.user) AND generation = \(Int64(old.generation)) AND wrapped_key = \(old.wrapped.map { ByteBuffer(bytes: $0) })
                            RETURNING generation
                        """,
                        logger: logger
                    )
                    for try await _ in rows.decode(Int64.self) { replaced += 1 }
                }
                return replaced
            }
        }
    }

    public func recordAccess(_ entry: AccessLogEntry) async throws(AuditStoreError) {
        try await perform("record an access") {
            _ = try await client.query(
                """
                INSERT INTO stamp_audit_access_log (recorded_at, reader, user_id, request, event_ids)
                    VALUES (\(entry.recordedAt), \(entry.reader), \(entry.user), \(entry.request), \(entry.eventList))
                """,
                logger: logger
            )
        }
    }

    public func accessLog(user: String, limit: Int) async throws(AuditStoreError) -> [AccessLogEntry] {
        guard limit > 0 else { return [] }
        return try await perform("read the access log") {
            let rows = try await client.query(
                """
                SELECT recorded_at, reader, user_id, request, event_ids FROM stamp_audit_access_log
                    WHERE user_id = \(user) ORDER BY recorded_at DESC, sequence DESC LIMIT \(Int64(limit))
                """,
                logger: logger
            )
            var entries: [AccessLogEntry] = []
            for try await (recordedAt, reader, user, request, list) in rows.decode((Int64, String, String, String, String).self) {
                guard let events = AccessLogEntry.events(fromList: list) else {
                    throw AuditStoreError(.rejected, "the PostgreSQL store holds a malformed access log entry")
                }
                entries.append(AccessLogEntry(recordedAt: recordedAt, reader: reader, user: user, request: request, events: events))
            }
            return entries
        }
    }

    private static func userKeys(_ rows: PostgresRowSequence) async throws -> [StoredUserKey] {
        var keys: [StoredUserKey] = []
        for try await (user, generation, wrapped) in rows.decode((String, Int64, ByteBuffer?).self) {
            keys.append(StoredUserKey(user: user, generation: Int(generation), wrapped: wrapped.map { Array($0.readableBytesView) }))
        }
        return keys
    }

    public func ping() async throws(AuditStoreError) {
        try await perform("answer a ping") {
            _ = try await client.query("SELECT 1", logger: logger)
        }
    }

    /// Ends ``run()``, which closes the pool's connections; later operations fail.
    public func close() async {
        isClosed.store(true, ordering: .sequentiallyConsistent)
        closing.finish()
    }

    /// The advisory lock that serializes migrations across processes: "audit" in ASCII.
    private static let migrationLockKey: Int64 = 418_581_342_580

    /// The migration that creates the writer role and grants; the one skipped without the privilege.
    private static let writerRoleMigration = "0003-create-writer-role"

    /// The PostgreSQL types of ``AuditInsertBatch/columns``, in order.
    private static let columnTypes = ["bigint", "text", "text", "text", "text", "bytea", "bytea", "text", "bytea"]

    private static func insertQuery(_ rows: ArraySlice<AuditRow>) -> PostgresQuery {
        var bindings = PostgresBindings(capacity: rows.count * AuditInsertBatch.parametersPerRow)
        var values: [String] = []
        values.reserveCapacity(rows.count)
        for row in rows {
            let first = bindings.count + 1
            bindings.append(row.id.rawValue)
            bindings.append(row.user)
            bindings.append(row.field)
            bindings.append(row.actor)
            bindings.append(row.reason)
            bindings.append(row.before.map { ByteBuffer(bytes: $0) })
            bindings.append(row.after.map { ByteBuffer(bytes: $0) })
            bindings.append(row.idempotencyKey)
            bindings.append(ByteBuffer(bytes: row.requestDigest))
            // Typed, since a NULL binds without a type and a VALUES list takes its types from its rows.
            values.append("(" + zip(first..<first + AuditInsertBatch.parametersPerRow, Self.columnTypes).map { "$\($0)::\($1)" }.joined(separator: ", ") + ")")
        }
        // A row goes in only above its user's latest ID (the order check), only once per key, and
        // only with an ID no row has.
        return PostgresQuery(
            unsafeSQL: """
                INSERT INTO stamp_audit_events (\(AuditInsertBatch.columns))
                SELECT * FROM (VALUES \(values.joined(separator: ", "))) AS input (\(AuditInsertBatch.columns))
                    WHERE input.id > COALESCE((SELECT MAX(stored.id) FROM stamp_audit_events stored WHERE stored.user_id = input.user_id), -1)
                ON CONFLICT DO NOTHING
                RETURNING id
                """,
            binds: bindings
        )
    }

    private func rows(_ action: String, _ query: PostgresQuery) async throws(AuditStoreError) -> [AuditRow] {
        try await perform(action) {
            let rows = try await client.query(query, logger: logger)
            var read: [AuditRow] = []
            for try await (id, user, field, actor, reason, before, after, idempotencyKey, requestDigest) in rows.decode(
                (Int64, String, String, String, String, ByteBuffer?, ByteBuffer?, String, ByteBuffer).self
            ) {
                read.append(AuditRow(
                    id: try Self.id(id),
                    user: user,
                    field: field,
                    actor: actor,
                    reason: reason,
                    before: before.map { Array($0.readableBytesView) },
                    after: after.map { Array($0.readableBytesView) },
                    idempotencyKey: idempotencyKey,
                    requestDigest: Array(requestDigest.readableBytesView)
                ))
            }
            return read
        }
    }

    private static func ids(in rows: PostgresRowSequence) async throws -> [StampID] {
        var ids: [StampID] = []
        for try await value in rows.decode(Int64.self) {
            ids.append(try id(value))
        }
        return ids
    }

    private static func id(_ value: Int64) throws(AuditStoreError) -> StampID {
        guard let id = StampID(rawValue: value) else {
            throw AuditStoreError(.rejected, "the PostgreSQL store holds a malformed row")
        }
        return id
    }

    /// Runs `body`, reporting any failure as an ``AuditStoreError`` that names only the kind of
    /// failure: PostgreSQL's messages may quote bound values.
    private func perform<Result>(_ action: String, _ body: () async throws -> Result) async throws(AuditStoreError) -> Result {
        guard !isClosed.load(ordering: .sequentiallyConsistent) else {
            throw AuditStoreError(.unavailable, "the PostgreSQL store is closed")
        }
        do {
            return try await body()
        } catch {
            throw Self.wrap(error, action: action, logger: logger)
        }
    }

    private static func wrap(_ error: any Error, action: String, logger: Logger) -> AuditStoreError {
        var error = error
        if let transaction = error as? PostgresTransactionError {
            error = transaction.closureError ?? transaction.commitError ?? transaction.beginError ?? error
        }
        if let error = error as? AuditStoreError { return error }
        guard let error = error as? PSQLError else {
            logger.debug("a PostgreSQL audit store operation failed", metadata: ["stamp.error.type": "\(type(of: error))"])
            return AuditStoreError(.unavailable, "the PostgreSQL store could not \(action)")
        }
        logger.debug(
            "a PostgreSQL audit store operation failed",
            metadata: ["stamp.postgres.code": "\(error.code)", "stamp.postgres.sqlstate": "\(error.sqlState ?? "none")"]
        )
        if let sqlState = error.sqlState {
            // Classes 08 (connection), 40 (rollback: serialization, deadlock), 53 (resources),
            // 57 (operator intervention) and 58 (system) are the server's trouble; the rest refuse the request.
            let isTransient = ["08", "40", "53", "57", "58"].contains(sqlState.prefix(2)) || sqlState == "55P03"
            return AuditStoreError(
                isTransient ? .unavailable : .rejected,
                "the PostgreSQL store could not \(action): the database \(isTransient ? "failed" : "refused it") (SQLSTATE \(sqlState))"
            )
        }
        if error.code == .tooManyParameters {
            return AuditStoreError(.rejected, "the PostgreSQL store could not \(action): too many bound parameters")
        }
        return AuditStoreError(.unavailable, "the PostgreSQL store could not \(action): \(error.code)")
    }

    /// Applies the migrations not yet recorded, in order, inside the caller's transaction.
    private static func migrate(_ connection: PostgresConnection, logger: Logger) async throws {
        // Checked before creating: even `CREATE TABLE IF NOT EXISTS` needs a privilege the writer role lacks.
        var hasMigrationsTable = false
        for try await exists in try await connection.query(
            "SELECT to_regclass('stamp_audit_migrations') IS NOT NULL",
            logger: logger
        ).decode(Bool.self) {
            hasMigrationsTable = exists
        }
        if !hasMigrationsTable {
            try await connection.query(
                "CREATE TABLE stamp_audit_migrations (name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())",
                logger: logger
            )
        }
        var applied: Set<String> = []
        for try await name in try await connection.query("SELECT name FROM stamp_audit_migrations", logger: logger).decode(String.self) {
            applied.insert(name)
        }
        for migration in migrations where !applied.contains(migration.name) {
            if migration.name == writerRoleMigration {
                try await applyUnlessUnprivileged(migration, connection, logger: logger)
            } else {
                try await apply(migration, connection, logger: logger)
            }
        }
    }

    private static func apply(_ migration: (name: String, statements: [String]), _ connection: PostgresConnection, logger: Logger) async throws {
        for statement in migration.statements {
            try await connection.query(PostgresQuery(unsafeSQL: statement), logger: logger)
        }
        try await connection.query("INSERT INTO stamp_audit_migrations (name) VALUES (\(migration.name))", logger: logger)
    }

    /// Applies `migration` behind a savepoint; when the connecting role lacks a privilege it needs,
    /// undoes it, leaves it unrecorded and warns.
    private static func applyUnlessUnprivileged(
        _ migration: (name: String, statements: [String]),
        _ connection: PostgresConnection,
        logger: Logger
    ) async throws {
        try await connection.query("SAVEPOINT stamp_audit_migration", logger: logger)
        do {
            try await apply(migration, connection, logger: logger)
            try await connection.query("RELEASE SAVEPOINT stamp_audit_migration", logger: logger)
        } catch let error as PSQLError where error.sqlState == "42501" {
            try await connection.query("ROLLBACK TO SAVEPOINT stamp_audit_migration", logger: logger)
            logger.warning(
                "skipped creating the role stamp_audit_writer: the connected role lacks the privilege; run the migrations as a role with CREATEROLE",
                metadata: ["stamp.migration": "\(migration.name)"]
            )
        }
    }

    /// The schema's history, oldest first; a name, once released, never changes meaning.
    private static let migrations: [(name: String, statements: [String])] = [
        (
            name: "0001-create-events",
            statements: [
                """
                CREATE TABLE stamp_audit_events (
                    id bigint PRIMARY KEY,
                    user_id text NOT NULL,
                    field text NOT NULL,
                    actor text NOT NULL,
                    reason text NOT NULL,
                    before_value bytea,
                    after_value bytea,
                    idempotency_key text NOT NULL,
                    request_digest bytea NOT NULL,
                    UNIQUE (user_id, idempotency_key)
                )
                """,
                "CREATE INDEX stamp_audit_events_user_id ON stamp_audit_events (user_id, id)",
                "CREATE INDEX stamp_audit_events_user_field_id ON stamp_audit_events (user_id, field, id)",
            ]
        ),
        (
            name: "0002-refuse-changes",
            statements: [
                """
                CREATE FUNCTION stamp_audit_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN
                    RAISE EXCEPTION 'stamp_audit_events is append-only: % refused', TG_OP;
                END
                $$
                """,
                """
                CREATE TRIGGER stamp_audit_events_refuse_changes
                    BEFORE UPDATE OR DELETE OR TRUNCATE ON stamp_audit_events
                    FOR EACH STATEMENT EXECUTE FUNCTION stamp_audit_refuse_change()
                """,
            ]
        ),
        (
            name: writerRoleMigration,
            statements: [
                // Roles belong to the whole cluster: another database's migration may create it at the same time.
                """
                DO $$
                BEGIN
                    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'stamp_audit_writer') THEN
                        BEGIN
                            CREATE ROLE stamp_audit_writer NOLOGIN;
                        EXCEPTION WHEN duplicate_object OR unique_violation THEN
                            NULL;
                        END;
                    END IF;
                END
                $$
                """,
                "REVOKE UPDATE, DELETE, TRUNCATE ON stamp_audit_events FROM PUBLIC",
                "GRANT SELECT, INSERT ON stamp_audit_events TO stamp_audit_writer",
                "GRANT SELECT ON stamp_audit_migrations TO stamp_audit_writer",
            ]
        ),
        (
            // The newest shard map version a server recorded here; inserts under older ones are refused.
            name: "0004-create-shard-map",
            statements: [
                """
                CREATE TABLE stamp_audit_shard_map (
                    singleton int PRIMARY KEY CHECK (singleton = 1),
                    version bigint NOT NULL,
                    document bytea NOT NULL
                )
                """,
                "INSERT INTO stamp_audit_shard_map (singleton, version, document) VALUES (1, 0, '')",
                """
                DO $$
                BEGIN
                    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'stamp_audit_writer') THEN
                        GRANT SELECT, UPDATE ON stamp_audit_shard_map TO stamp_audit_writer;
                    END IF;
                END
                $$
                """,
            ]
        ),
        (
            // Each user's data keys, wrapped by the master key; an erasure sets them to NULL. A
            // destroyed key can never be stored again, and no key row is ever deleted.
            name: "0006-create-user-keys",
            statements: [
                """
                CREATE TABLE stamp_audit_user_keys (
                    user_id text NOT NULL,
                    generation bigint NOT NULL,
                    wrapped_key bytea,
                    PRIMARY KEY (user_id, generation)
                )
                """,
                """
                CREATE FUNCTION stamp_audit_refuse_key_restore() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN
                    RAISE EXCEPTION 'a destroyed data key cannot be stored again';
                END
                $$
                """,
                """
                CREATE TRIGGER stamp_audit_user_keys_refuse_restore
                    BEFORE UPDATE ON stamp_audit_user_keys
                    FOR EACH ROW WHEN (OLD.wrapped_key IS NULL AND NEW.wrapped_key IS NOT NULL) EXECUTE FUNCTION stamp_audit_refuse_key_restore()
                """,
                """
                CREATE FUNCTION stamp_audit_refuse_key_delete() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN
                    RAISE EXCEPTION 'data keys are destroyed by setting them to NULL, never deleted: % refused', TG_OP;
                END
                $$
                """,
                """
                CREATE TRIGGER stamp_audit_user_keys_refuse_delete
                    BEFORE DELETE OR TRUNCATE ON stamp_audit_user_keys
                    FOR EACH STATEMENT EXECUTE FUNCTION stamp_audit_refuse_key_delete()
                """,
                "REVOKE DELETE, TRUNCATE ON stamp_audit_user_keys FROM PUBLIC",
                """
                DO $$
                BEGIN
                    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'stamp_audit_writer') THEN
                        GRANT SELECT, INSERT, UPDATE ON stamp_audit_user_keys TO stamp_audit_writer;
                    END IF;
                END
                $$
                """,
            ]
        ),
        (
            // Every request that returned personal-data values to a reader; append-only.
            name: "0007-create-access-log",
            statements: [
                """
                CREATE TABLE stamp_audit_access_log (
                    sequence bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                    recorded_at bigint NOT NULL,
                    reader text NOT NULL,
                    user_id text NOT NULL,
                    request text NOT NULL,
                    event_ids text NOT NULL
                )
                """,
                "CREATE INDEX stamp_audit_access_log_user ON stamp_audit_access_log (user_id, recorded_at)",
                """
                CREATE FUNCTION stamp_audit_refuse_access_log_change() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN
                    RAISE EXCEPTION 'stamp_audit_access_log is append-only: % refused', TG_OP;
                END
                $$
                """,
                """
                CREATE TRIGGER stamp_audit_access_log_refuse_changes
                    BEFORE UPDATE OR DELETE OR TRUNCATE ON stamp_audit_access_log
                    FOR EACH STATEMENT EXECUTE FUNCTION stamp_audit_refuse_access_log_change()
                """,
                "REVOKE UPDATE, DELETE, TRUNCATE ON stamp_audit_access_log FROM PUBLIC",
                """
                DO $$
                BEGIN
                    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'stamp_audit_writer') THEN
                        GRANT SELECT, INSERT ON stamp_audit_access_log TO stamp_audit_writer;
                    END IF;
                END
                $$
                """,
            ]
        ),
    ]
}

extension PSQLError {
    /// The server's SQLSTATE code, when the server refused the request.
    fileprivate var sqlState: String? {
        serverInfo?[.sqlState]
    }
}
