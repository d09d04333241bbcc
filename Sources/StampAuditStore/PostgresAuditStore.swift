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
        guard !batch.sent.isEmpty else { return batch.outcomes(ofSent: []) }
        // Most calls store every row they send, so the first try links them all into the chain
        // at once. When the database refuses some, their links are wrong for the rows after
        // them: that transaction is rolled back, and the second finds out first which rows go in.
        if let decided = try await insert(batch, mapVersion: mapVersion, checkingFirst: false) {
            return batch.outcomes(ofSent: decided)
        }
        guard let decided = try await insert(batch, mapVersion: mapVersion, checkingFirst: true) else {
            throw AuditStoreError(.rejected, "the PostgreSQL store refused a row it had found free")
        }
        return batch.outcomes(ofSent: decided)
    }

    /// A rollback that says the rows must be sent again, checked first.
    private struct SomeRowsRefused: Error {}

    /// One transaction of an insert call; `nil` when, not `checkingFirst`, the database refused a row.
    ///
    /// One explicit transaction, so that an error at the commit (a deferred constraint, a
    /// serialization failure) fails the call instead of going unseen. Its first statement takes
    /// the shard map row in share mode: a map being recorded waits for this commit, and this
    /// transaction for that one, whose version it then reads. Its second locks the chain's head
    /// row, so the inserts of every server on this shard extend the chain one after another.
    private func insert(_ batch: AuditInsertBatch, mapVersion: Int, checkingFirst: Bool) async throws(AuditStoreError) -> [AuditInsertOutcome]? {
        let sent = batch.sent
        return try await perform("insert rows") { () async throws -> [AuditInsertOutcome]? in
            do {
                return try await client.withTransaction(logger: logger) { connection in
                    let held = try await Self.mapVersion(connection.query("SELECT version FROM stamp_audit_shard_map FOR SHARE", logger: logger))
                    guard held <= mapVersion else { return Array(repeating: .staleMap(version: held), count: sent.count) }
                    var head = try await Self.chainHead(connection.query("SELECT rows, head, last_id FROM stamp_audit_chain FOR UPDATE", logger: logger))
                    var outcomes = Array(repeating: AuditInsertOutcome.stored, count: sent.count)
                    if checkingFirst {
                        let refused = try await Self.whyRefused(sent, connection: connection, logger: logger)
                        for (index, row) in sent.enumerated() {
                            if refused.takenKeys.contains(AuditInsertBatch.UserKey(row)) {
                                outcomes[index] = .repeated
                            } else if let latest = refused.latest[row.user], latest >= row.id {
                                outcomes[index] = .belowLatest(latest)
                            } else if refused.takenIDs.contains(row.id) {
                                outcomes[index] = .idTaken
                            }
                        }
                    }
                    var links: [(row: AuditRow, position: Int64, hash: [UInt8])] = []
                    for (row, outcome) in zip(sent, outcomes) where outcome == .stored {
                        let link = AuditChain.extend(head, with: row)
                        links.append((row, link.position, link.hash))
                        head = link.head
                    }
                    var inserted = 0
                    for statement in Self.insertQueries(links) {
                        inserted += try await Self.ids(in: connection.query(statement, logger: logger)).count
                    }
                    guard inserted == links.count else { throw SomeRowsRefused() }
                    if !links.isEmpty {
                        try await connection.query(
                            "UPDATE stamp_audit_chain SET rows = \(head.rows), head = \(ByteBuffer(bytes: head.hash)), last_id = \(head.lastID?.rawValue)",
                            logger: logger
                        )
                    }
                    return outcomes
                }
            } catch let error as PostgresTransactionError where error.closureError is SomeRowsRefused {
                return nil
            }
        }
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

    /// For rows about to be inserted, in the insert's transaction with the chain's head locked (so
    /// no other insert runs meanwhile): which of their users' keys are taken, each of their users'
    /// latest IDs, and which of their IDs other rows have.
    private static func whyRefused(_ rows: [AuditRow], connection: PostgresConnection, logger: Logger) async throws -> (takenKeys: Set<AuditInsertBatch.UserKey>, latest: [String: StampID], takenIDs: Set<StampID>) {
        let users = rows.map(\.user)
        let keys = rows.map(\.idempotencyKey)
        let ids = rows.map(\.id.rawValue)
        var taken: Set<AuditInsertBatch.UserKey> = []
        let keyRows = try await connection.query(
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
        let latestRows = try await connection.query(
            "SELECT user_id, MAX(id) FROM stamp_audit_events WHERE user_id = ANY(\(Array(Set(users)))::text[]) GROUP BY user_id",
            logger: logger
        )
        for try await (user, id) in latestRows.decode((String, Int64).self) {
            latest[user] = try Self.id(id)
        }
        let takenIDs = Set(try await Self.ids(in: connection.query("SELECT id FROM stamp_audit_events WHERE id = ANY(\(ids)::bigint[])", logger: logger)))
        return (taken, latest, takenIDs)
    }

    private static func chainHead(_ rows: PostgresRowSequence) async throws -> ChainHead {
        var head = ChainHead.empty
        for try await (count, hash, lastID) in rows.decode((Int64, ByteBuffer, Int64?).self) {
            head = ChainHead(rows: count, hash: Array(hash.readableBytesView), lastID: try lastID.map(Self.id))
        }
        return head
    }

    public func chainHead() async throws(AuditStoreError) -> ChainHead {
        try await perform("read the chain head") {
            try await Self.chainHead(client.query("SELECT rows, head, last_id FROM stamp_audit_chain", logger: logger))
        }
    }

    public func chainedRows(after position: Int64, limit: Int) async throws(AuditStoreError) -> [ChainedRow] {
        guard limit > 0 else { return [] }
        return try await perform("read chained rows") {
            let rows = try await client.query(
                """
                SELECT chain_position, chain_hash, \(unescaped: AuditInsertBatch.columns) FROM stamp_audit_events
                    WHERE chain_position > \(position) ORDER BY chain_position LIMIT \(Int64(limit))
                """,
                logger: logger
            )
            var read: [ChainedRow] = []
            for try await row in rows {
                let columns = row.makeRandomAccess()
                read.append(ChainedRow(
                    position: try columns["chain_position"].decode(Int64.self), hash: Array(try columns["chain_hash"].decode(ByteBuffer.self).readableBytesView),
                    row: try Self.auditRow(columns)
                ))
            }
            return read
        }
    }

    public func rowCount() async throws(AuditStoreError) -> Int64 {
        try await perform("count rows") {
            var count: Int64 = 0
            for try await value in try await client.query("SELECT count(*) FROM stamp_audit_events", logger: logger).decode(Int64.self) {
                count = value
            }
            return count
        }
    }

    public func recordCheckpoint(_ checkpoint: AuditCheckpoint) async throws(AuditStoreError) {
        try await perform("record a checkpoint") {
            _ = try await client.query(
                """
                INSERT INTO stamp_audit_checkpoints (rows, shard, last_id, head, signed_at_ms, public_key, signature)
                    VALUES (\(checkpoint.rows), \(Int64(checkpoint.shard)), \(checkpoint.lastID?.rawValue), \(ByteBuffer(bytes: checkpoint.head)),
                        \(checkpoint.signedAtMilliseconds), \(ByteBuffer(bytes: checkpoint.publicKey)), \(ByteBuffer(bytes: checkpoint.signature)))
                    ON CONFLICT DO NOTHING
                """,
                logger: logger
            )
        }
    }

    public func checkpoints(below rows: Int64?, limit: Int) async throws(AuditStoreError) -> [AuditCheckpoint] {
        guard limit > 0 else { return [] }
        return try await perform("read checkpoints") {
            let read = try await client.query(
                """
                SELECT rows, shard, last_id, head, signed_at_ms, public_key, signature FROM stamp_audit_checkpoints
                    WHERE rows < \(rows ?? Int64.max) ORDER BY rows DESC LIMIT \(Int64(limit))
                """,
                logger: logger
            )
            var checkpoints: [AuditCheckpoint] = []
            for try await (count, shard, lastID, head, signedAt, key, signature) in read.decode((Int64, Int64, Int64?, ByteBuffer, Int64, ByteBuffer, ByteBuffer).self) {
                checkpoints.append(AuditCheckpoint(
                    shard: Int(shard), rows: count, lastID: try lastID.map(Self.id), head: Array(head.readableBytesView), signedAtMilliseconds: signedAt,
                    publicKey: Array(key.readableBytesView), signature: Array(signature.readableBytesView)
                ))
            }
            return checkpoints
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

    public func latestOfEachField(user: String) async throws(AuditStoreError) -> [AuditRow] {
        // The greatest IDs come from the (user_id, field, id) index alone.
        try await rows("read the latest of each field", """
            SELECT \(unescaped: AuditInsertBatch.columns) FROM stamp_audit_events
                WHERE id IN (SELECT MAX(id) FROM stamp_audit_events WHERE user_id = \(user) GROUP BY field) ORDER BY field
            """)
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

    /// The migration that adds the hash chain, after which the rows stored before it are chained.
    private static let chainMigration = "0005-chain-rows"

    /// Chains the rows stored before the chain existed, in ID order, with the trigger that
    /// refuses updates set aside for it; then every row must have its place.
    private static func chainStoredRows(_ connection: PostgresConnection, logger: Logger) async throws {
        var head = ChainHead.empty
        var links: [(id: Int64, position: Int64, hash: [UInt8])] = []
        let rows = try await connection.query("SELECT \(unescaped: AuditInsertBatch.columns) FROM stamp_audit_events ORDER BY id", logger: logger)
        for try await stored in rows {
            let row = try auditRow(stored.makeRandomAccess())
            let link = AuditChain.extend(head, with: row)
            links.append((row.id.rawValue, link.position, link.hash))
            head = link.head
        }
        try await connection.query("ALTER TABLE stamp_audit_events DISABLE TRIGGER stamp_audit_events_refuse_changes", logger: logger)
        for link in links {
            try await connection.query(
                "UPDATE stamp_audit_events SET chain_position = \(link.position), chain_hash = \(ByteBuffer(bytes: link.hash)) WHERE id = \(link.id)",
                logger: logger
            )
        }
        try await connection.query("ALTER TABLE stamp_audit_events ENABLE TRIGGER stamp_audit_events_refuse_changes", logger: logger)
        try await connection.query(
            "UPDATE stamp_audit_chain SET rows = \(head.rows), head = \(ByteBuffer(bytes: head.hash)), last_id = \(head.lastID?.rawValue)",
            logger: logger
        )
        try await connection.query("ALTER TABLE stamp_audit_events ALTER COLUMN chain_position SET NOT NULL, ALTER COLUMN chain_hash SET NOT NULL", logger: logger)
    }

    /// The PostgreSQL types of ``AuditInsertBatch/columns`` and the chain's two columns, in order.
    private static let columnTypes = ["bigint", "text", "text", "text", "text", "bytea", "bytea", "text", "bytea", "bigint", "bytea"]

    /// The statements that insert `links`, as many rows in each as PostgreSQL's bound parameters allow.
    private static func insertQueries(_ links: [(row: AuditRow, position: Int64, hash: [UInt8])]) -> [PostgresQuery] {
        let perRow = columnTypes.count
        let rowsPerStatement = parameterLimit / perRow
        return stride(from: 0, to: links.count, by: rowsPerStatement).map { start in
            insertQuery(links[start..<min(start + rowsPerStatement, links.count)])
        }
    }

    private static func insertQuery(_ links: ArraySlice<(row: AuditRow, position: Int64, hash: [UInt8])>) -> PostgresQuery {
        var bindings = PostgresBindings(capacity: links.count * columnTypes.count)
        var values: [String] = []
        values.reserveCapacity(links.count)
        for (row, position, hash) in links {
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
            bindings.append(position)
            bindings.append(ByteBuffer(bytes: hash))
            // Typed, since a NULL binds without a type and a VALUES list takes its types from its rows.
            values.append("(" + zip(first..<first + columnTypes.count, columnTypes).map { "$\($0)::\($1)" }.joined(separator: ", ") + ")")
        }
        // A row goes in only above its user's latest ID (the order check), only once per key, and
        // only with an ID no row has.
        return PostgresQuery(
            unsafeSQL: """
                INSERT INTO stamp_audit_events (\(AuditInsertBatch.columns), chain_position, chain_hash)
                SELECT * FROM (VALUES \(values.joined(separator: ", "))) AS input (\(AuditInsertBatch.columns), chain_position, chain_hash)
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
            for try await row in rows {
                read.append(try Self.auditRow(row.makeRandomAccess()))
            }
            return read
        }
    }

    /// A row from the columns of ``AuditInsertBatch/columns``.
    private static func auditRow(_ columns: PostgresRandomAccessRow) throws -> AuditRow {
        AuditRow(
            id: try id(columns["id"].decode(Int64.self)),
            user: try columns["user_id"].decode(String.self),
            field: try columns["field"].decode(String.self),
            actor: try columns["actor"].decode(String.self),
            reason: try columns["reason"].decode(String.self),
            before: try columns["before_value"].decode(ByteBuffer?.self).map { Array($0.readableBytesView) },
            after: try columns["after_value"].decode(ByteBuffer?.self).map { Array($0.readableBytesView) },
            idempotencyKey: try columns["idempotency_key"].decode(String.self),
            requestDigest: Array(try columns["request_digest"].decode(ByteBuffer.self).readableBytesView)
        )
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
            if migration.name == chainMigration {
                try await chainStoredRows(connection, logger: logger)
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
            // Every row's place in the shard's hash chain, the chain's head, and signed checkpoints
            // of it. The rows stored before are chained right after (``chainStoredRows``).
            name: chainMigration,
            statements: [
                "ALTER TABLE stamp_audit_events ADD COLUMN chain_position bigint, ADD COLUMN chain_hash bytea",
                "CREATE UNIQUE INDEX stamp_audit_events_chain_position ON stamp_audit_events (chain_position)",
                """
                CREATE TABLE stamp_audit_chain (
                    singleton int PRIMARY KEY CHECK (singleton = 1),
                    rows bigint NOT NULL,
                    head bytea NOT NULL,
                    last_id bigint
                )
                """,
                "INSERT INTO stamp_audit_chain (singleton, rows, head, last_id) VALUES (1, 0, decode(repeat('00', 32), 'hex'), NULL)",
                """
                CREATE TABLE stamp_audit_checkpoints (
                    rows bigint PRIMARY KEY,
                    shard int NOT NULL,
                    last_id bigint,
                    head bytea NOT NULL,
                    signed_at_ms bigint NOT NULL,
                    public_key bytea NOT NULL,
                    signature bytea NOT NULL
                )
                """,
                """
                CREATE OR REPLACE FUNCTION stamp_audit_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN
                    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP;
                END
                $$
                """,
                """
                CREATE TRIGGER stamp_audit_checkpoints_refuse_changes
                    BEFORE UPDATE OR DELETE OR TRUNCATE ON stamp_audit_checkpoints
                    FOR EACH STATEMENT EXECUTE FUNCTION stamp_audit_refuse_change()
                """,
                "REVOKE UPDATE, DELETE, TRUNCATE ON stamp_audit_checkpoints FROM PUBLIC",
                """
                DO $$
                BEGIN
                    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'stamp_audit_writer') THEN
                        GRANT SELECT, UPDATE ON stamp_audit_chain TO stamp_audit_writer;
                        GRANT SELECT, INSERT ON stamp_audit_checkpoints TO stamp_audit_writer;
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
