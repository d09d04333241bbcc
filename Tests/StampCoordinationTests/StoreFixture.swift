import Logging
import StampCoordination
import StampCore
import StampCoordinationEtcd
import StampCoordinationPostgres
import StampCoordinationSQLite
import StampDatabase
import StampDatabaseTesting
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
    case etcd
    /// The test support store that node and server tests run on, held to the same behaviour.
    case inMemory

    /// The backends this run can test: SQLite and the in-memory store always, PostgreSQL when
    /// `STAMP_TEST_POSTGRES_URL` names a server, etcd when `STAMP_TEST_ETCD_ENDPOINTS` names a cluster.
    static let testable: [StoreBackend] = [.sqlite]
        + (TestPostgresServer.environment == nil ? [] : [.postgres])
        + (TestEtcdCluster.environment == nil ? [] : [.etcd])
        + [.inMemory]

    var testDescription: String {
        switch self {
        case .sqlite: "SQLite"
        case .postgres: "PostgreSQL"
        case .etcd: "etcd"
        case .inMemory: "in memory"
        }
    }
}

/// A logger that drops everything, so tests never touch the global logging system.
let silentLogger = Logger(label: "stamp.tests", factory: { _ in SwiftLogNoOpLogHandler() })

/// Runs `body` with `count` running stores of `backend` that share one fresh database.
///
/// The stores judge time on `clock`, or on their default clock (the system's for SQLite, the
/// server's for PostgreSQL, etcd's leases for etcd, one set to the system's time for the in-memory
/// store) when it is `nil`. The etcd stores share a fresh key prefix, as the others share a fresh database. Each store is prepared with `layout` unless it is `nil`.
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
        let server = try #require(TestPostgresServer.environment, "STAMP_TEST_POSTGRES_URL is not set")
        try await server.withFreshDatabase { database in
            let settings = try PostgresConnectionSettings(url: database)
            let stores: [any CoordinationStore] = (0..<count).map { _ in
                PostgresCoordinationStore(configuration: settings, clock: clock, logger: silentLogger)
            }
            try await running(stores, preparing: layout, body)
        }
    case .etcd:
        let cluster = try #require(TestEtcdCluster.environment, "STAMP_TEST_ETCD_ENDPOINTS is not set")
        let settings = try EtcdConnectionSettings(location: cluster.freshLocation())
        let stores: [any CoordinationStore] = (0..<count).map { _ in
            EtcdCoordinationStore(settings: settings, clock: clock, logger: silentLogger)
        }
        try await running(stores, preparing: layout, body)
    case .inMemory:
        let store = InMemoryCoordinationStore(clock: clock ?? ManualWallClock(unixMilliseconds: SystemWallClock().unixMilliseconds()))
        // One store that every caller shares, as a database is shared: it runs and closes once.
        try await running([store], preparing: layout) { _ in try await body(Array(repeating: store, count: count)) }
    }
}

/// Runs each store for the duration of `body`, then closes them all, whether `body` throws or not.
func running(
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
