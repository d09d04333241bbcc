import Logging
import PostgresNIO
import StampCoordination
import StampCore
import StampCoordinationPostgres
import StampCoordinationSQLite
import StampTesting
import Testing

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// A coordination store implementation that the behaviour suite runs against.
enum StoreBackend: Sendable, CustomTestStringConvertible {
    case sqlite
    case postgres

    /// The backends this run can test: SQLite always, PostgreSQL when ``postgresTestURL`` is set.
    static let testable: [StoreBackend] = postgresTestURL == nil ? [.sqlite] : [.sqlite, .postgres]

    var testDescription: String {
        switch self {
        case .sqlite: "SQLite"
        case .postgres: "PostgreSQL"
        }
    }
}

/// The PostgreSQL database named by `STAMP_TEST_POSTGRES_URL`, whose user may create and drop databases.
///
/// `scripts/test` starts a throwaway server and sets it; without it the PostgreSQL cases are skipped.
let postgresTestURL = ProcessInfo.processInfo.environment["STAMP_TEST_POSTGRES_URL"]

/// A logger that drops everything, so tests never touch the global logging system.
let silentLogger = Logger(label: "stamp.tests", factory: { _ in SwiftLogNoOpLogHandler() })

/// Runs `body` with `count` running stores of `backend` that share one fresh database.
///
/// The stores judge time on `clock`, or on their default clock (the system's for SQLite, the
/// server's for PostgreSQL) when it is `nil`. Each store is prepared with `layout` unless it is `nil`.
func withStores(
    _ backend: StoreBackend,
    count: Int = 1,
    clock: ManualWallClock?,
    preparing layout: IDLayout? = .default,
    _ body: ([any CoordinationStore]) async throws -> Void
) async throws {
    switch backend {
    case .sqlite:
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("stamp-store-tests-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: directory) }
        // The store creates the missing parent directories itself.
        let path = directory.appendingPathComponent("nested/coordination.sqlite").path
        let stores: [any CoordinationStore] = (0..<count).map { _ in
            if let clock {
                SQLiteCoordinationStore(path: path, clock: clock, logger: silentLogger)
            } else {
                SQLiteCoordinationStore(path: path, logger: silentLogger)
            }
        }
        try await running(stores, preparing: layout, body)
    case .postgres:
        let url = try #require(postgresTestURL, "STAMP_TEST_POSTGRES_URL is not set")
        try await withFreshDatabase(administeredAt: url) { configuration in
            let stores: [any CoordinationStore] = (0..<count).map { _ in
                PostgresCoordinationStore(configuration: configuration, clock: clock, logger: silentLogger)
            }
            try await running(stores, preparing: layout, body)
        }
    }
}

/// Runs each store for the duration of `body`, then closes them all, whether `body` throws or not.
private func running(
    _ stores: [any CoordinationStore],
    preparing layout: IDLayout?,
    _ body: ([any CoordinationStore]) async throws -> Void
) async throws {
    try await withThrowingTaskGroup { group in
        for store in stores {
            group.addTask { try await store.run() }
        }
        var failure: (any Error)?
        do {
            if let layout {
                for store in stores {
                    try await store.prepare(layout: layout)
                }
            }
            try await body(stores)
        } catch {
            failure = error
        }
        for store in stores {
            await store.close()
        }
        try await group.waitForAll()
        if let failure { throw failure }
    }
}

/// Creates a database with a unique name on the server of `url`, runs `body` with a configuration for it, and drops it.
private func withFreshDatabase(
    administeredAt url: String,
    _ body: (PostgresClient.Configuration) async throws -> Void
) async throws {
    let administration = try PostgresCoordinationStore.configuration(url: url)
    let client = PostgresClient(configuration: administration, backgroundLogger: silentLogger)
    let name = "stamp_test_\(UUID().uuidString.lowercased().filter { $0 != "-" })"
    try await withThrowingTaskGroup { group in
        group.addTask { await client.run() }
        try await client.query("CREATE DATABASE \(unescaped: name)")
        var configuration = administration
        configuration.database = name
        var failure: (any Error)?
        do {
            try await body(configuration)
        } catch {
            failure = error
        }
        try await client.query("DROP DATABASE \(unescaped: name) WITH (FORCE)")
        group.cancelAll()
        if let failure { throw failure }
    }
}
