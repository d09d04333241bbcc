import GRDB
import Logging
import PostgresNIO
import StampAudit
import StampAuditStore
import StampCore
import StampDatabase
import StampDatabaseTesting
import StampTesting
import Testing

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// An audit store implementation that the behaviour suite runs against.
enum AuditStoreBackend: Sendable, CustomTestStringConvertible {
    case sqlite
    case postgres

    /// The backends this run can test: SQLite always, PostgreSQL when `STAMP_TEST_POSTGRES_URL` names a server.
    static let testable: [AuditStoreBackend] = TestPostgresServer.environment == nil ? [.sqlite] : [.sqlite, .postgres]

    /// A logger that drops everything, so tests never touch the global logging system.
    static let logger = Logger(label: "stamp.audit-store-tests", factory: { _ in SwiftLogNoOpLogHandler() })

    var testDescription: String {
        switch self {
        case .sqlite: "SQLite"
        case .postgres: "PostgreSQL"
        }
    }
}

/// Stores of one backend on one fresh database, and a way around them to the database itself.
struct AuditStoreDatabase: Sendable {
    /// Running stores on the database, each standing for one audit server process.
    let stores: [any AuditStore]
    /// Runs a statement on the database directly, as the database's owner, bypassing the stores.
    let execute: @Sendable (String) async throws -> Void
    /// The database's configuration, for PostgreSQL.
    let postgres: PostgresConnectionSettings?
    /// The database's file, for SQLite.
    let sqlitePath: String?

    var store: any AuditStore { stores[0] }

    /// The database's own message for `error`, with its SQLSTATE on PostgreSQL.
    static func databaseMessage(of error: any Error) -> String {
        switch error {
        case let error as GRDB.DatabaseError: error.message ?? "\(error.resultCode)"
        case let error as PSQLError: "\(error.serverInfo?[.sqlState] ?? "-"): \(error.serverInfo?[.message] ?? "\(error.code)")"
        default: "\(error)"
        }
    }
}

/// Runs `body` with `count` running stores of `backend` that share one fresh database, migrated
/// by the first store unless `migrating` is false; closes the stores and removes the database afterwards.
func withAuditStores(
    _ backend: AuditStoreBackend,
    count: Int = 1,
    migrating: Bool = true,
    logger: Logger = AuditStoreBackend.logger,
    _ body: (AuditStoreDatabase) async throws -> Void
) async throws {
    switch backend {
    case .sqlite:
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("stamp-audit-store-tests-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: directory) }
        // The store creates the missing parent directories itself.
        let path = directory.appendingPathComponent("shards/0.sqlite").path
        let stores = (0..<count).map { _ in SQLiteAuditStore(path: path, logger: logger) }
        let database = AuditStoreDatabase(
            stores: stores,
            execute: { sql in
                try await withSQLiteConnection(path) { try await $0.execute(sql) }
            },
            postgres: nil,
            sqlitePath: path
        )
        try await running(database, migrating: migrating, body)
    case .postgres:
        let server = try #require(TestPostgresServer.environment, "STAMP_TEST_POSTGRES_URL is not set")
        try await server.withFreshDatabase(prefix: "stamp_audit_test") { fresh in
            let configuration = try PostgresConnectionSettings(url: fresh)
            let stores = (0..<count).map { _ in PostgresAuditStore(configuration: configuration, logger: logger) }
            let database = AuditStoreDatabase(
                stores: stores,
                execute: { sql in
                    try await withPostgresClient(configuration) { client in
                        _ = try await client.query(PostgresQuery(unsafeSQL: sql))
                    }
                },
                postgres: configuration,
                sqlitePath: nil
            )
            try await running(database, migrating: migrating, body)
        }
    }
}

/// Whether the cluster of `configuration` has a role named `role`.
func postgresRoleExists(_ role: String, configuration: PostgresConnectionSettings) async throws -> Bool {
    try await withPostgresClient(configuration) { client in
        var exists = false
        for try await found in try await client.query("SELECT EXISTS (SELECT FROM pg_roles WHERE rolname = \(role))").decode(Bool.self) {
            exists = found
        }
        return exists
    }
}

/// The names of the migrations recorded in the database of `configuration`.
func postgresMigrations(configuration: PostgresConnectionSettings) async throws -> Set<String> {
    try await withPostgresClient(configuration) { client in
        var names: Set<String> = []
        for try await name in try await client.query("SELECT name FROM stamp_audit_migrations").decode(String.self) {
            names.insert(name)
        }
        return names
    }
}

/// A connection of its own to an SQLite file, opened as another process would open it, whose
/// statements the test runs one by one (a transaction may span several).
struct OtherSQLiteConnection: Sendable {
    let queue: DatabaseQueue

    func execute(_ sql: String) async throws {
        try await queue.writeWithoutTransaction { try $0.execute(sql: sql) }
    }
}

/// Runs `body` with an ``OtherSQLiteConnection`` to the file at `path`, closed afterwards.
func withSQLiteConnection<Result: Sendable>(_ path: String, _ body: (OtherSQLiteConnection) async throws -> Result) async throws -> Result {
    var configuration = Configuration()
    configuration.allowsUnsafeTransactions = true
    configuration.busyMode = .timeout(10)
    let queue = try DatabaseQueue(path: path, configuration: configuration)
    defer { try? queue.close() }
    return try await body(OtherSQLiteConnection(queue: queue))
}

/// Runs each store for the duration of `body`, then closes them all, whether `body` throws or not.
private func running(_ database: AuditStoreDatabase, migrating: Bool, _ body: (AuditStoreDatabase) async throws -> Void) async throws {
    try await withThrowingTaskGroup { group in
        for store in database.stores {
            group.addTask { try await store.run() }
        }
        var failure: (any Error)?
        do {
            if migrating {
                try await database.store.migrate()
            }
            try await body(database)
        } catch {
            failure = error
        }
        for store in database.stores {
            await store.close()
        }
        try await group.waitForAll()
        if let failure { throw failure }
    }
}

extension AuditRow {
    /// A row whose values are all derived from `id`, `user` and `key`, with sealed values of a few bytes.
    static func storeTestRow(id: Int64, user: String = "user-1", field: String = "email", key: String? = nil) -> AuditRow {
        AuditRow(
            id: StampID(rawValue: id)!,
            user: user,
            field: field,
            actor: "support:\(id)",
            reason: "ticket \(id)",
            before: [0x01, UInt8(truncatingIfNeeded: id)],
            after: [0x02, UInt8(truncatingIfNeeded: id), 0x00],
            idempotencyKey: key ?? "key-\(id)",
            requestDigest: Array(repeating: UInt8(truncatingIfNeeded: id), count: 32)
        )
    }
}

extension AuditStore {
    /// Inserts `rows` as a server on a shard that holds no shard map version yet.
    func insert(_ rows: [AuditRow]) async throws(AuditStoreError) -> [AuditInsertOutcome] {
        try await insert(rows, mapVersion: 0)
    }
}

extension AuditStoreDatabase {
    /// Makes the database refuse, with an error of its own, every row whose actor is `actor`.
    func refuseRows(ofActor actor: String) async throws {
        for statement in Self.statementsRefusingRows(ofActor: actor, sqlite: sqlitePath != nil) {
            try await execute(statement)
        }
    }

    /// The statements that make an SQLite or PostgreSQL shard refuse every row whose actor is `actor`.
    static func statementsRefusingRows(ofActor actor: String, sqlite: Bool) -> [String] {
        if sqlite {
            return ["CREATE TRIGGER test_refuse_actor BEFORE INSERT ON stamp_audit_events WHEN NEW.actor = '\(actor)' BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"]
        }
        return [
            "CREATE FUNCTION test_refuse_actor() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$",
            "CREATE TRIGGER test_refuse_actor BEFORE INSERT ON stamp_audit_events FOR EACH ROW WHEN (NEW.actor = '\(actor)') EXECUTE FUNCTION test_refuse_actor()",
        ]
    }
}
