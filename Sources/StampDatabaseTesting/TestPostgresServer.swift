import Logging
import PostgresNIO
import StampDatabase

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// A PostgreSQL server that tests create fresh databases on, one or more per test, and drop afterwards.
public struct TestPostgresServer: Sendable {
    /// The server that `STAMP_TEST_POSTGRES_URL` names, or `nil` when it is not set.
    ///
    /// Its user must be allowed to create and drop databases and roles. `scripts/test` starts a
    /// throwaway server and sets it; without it the PostgreSQL cases of the store suites are skipped.
    public static let environment: TestPostgresServer? = {
        guard let text = ProcessInfo.processInfo.environment["STAMP_TEST_POSTGRES_URL"] else { return nil }
        do {
            return TestPostgresServer(administeredAt: try PostgresURL(parsing: text))
        } catch {
            fatalError("STAMP_TEST_POSTGRES_URL: \(error)")
        }
    }()

    /// A logger that drops everything, so tests never touch the global logging system.
    static let logger = Logger(label: "stamp.database-tests", factory: { _ in SwiftLogNoOpLogHandler() })

    /// The database the tests connect to when they create and drop others.
    public let administration: PostgresURL

    public init(administeredAt administration: PostgresURL) {
        self.administration = administration
    }

    /// Creates a database named `prefix` and a unique suffix, runs `body` with its URL, and drops
    /// it, whether `body` throws or not.
    public func withFreshDatabase<Result: Sendable>(
        prefix: String = "stamp_test",
        _ body: (PostgresURL) async throws -> Result
    ) async throws -> Result {
        let database = try await createDatabase(prefix: prefix)
        let result: Result
        do {
            result = try await body(database)
        } catch {
            try await dropDatabases([database])
            throw error
        }
        try await dropDatabases([database])
        return result
    }

    /// Creates a database named `prefix` and a unique suffix and returns its URL; the caller drops
    /// it with ``dropDatabases(_:)``.
    public func createDatabase(prefix: String = "stamp_test") async throws -> PostgresURL {
        var database = administration
        database.database = "\(prefix)_\(UUID().uuidString.lowercased().filter { $0 != "-" })"
        try await withPostgresClient(administration.configuration) { client in
            try await client.query("CREATE DATABASE \(unescaped: database.database)")
        }
        return database
    }

    /// Drops `databases` from the server, also while clients are still connected to them.
    public func dropDatabases(_ databases: [PostgresURL]) async throws {
        guard !databases.isEmpty else { return }
        try await withPostgresClient(administration.configuration) { client in
            for database in databases {
                try await client.query("DROP DATABASE IF EXISTS \(unescaped: database.database) WITH (FORCE)")
            }
        }
    }
}

/// Runs `body` with a running PostgreSQL client on `configuration`, and stops the client afterwards.
@discardableResult
public func withPostgresClient<Result: Sendable>(
    _ configuration: PostgresClient.Configuration,
    _ body: (PostgresClient) async throws -> Result
) async throws -> Result {
    let client = PostgresClient(configuration: configuration, backgroundLogger: TestPostgresServer.logger)
    return try await withThrowingTaskGroup { group in
        group.addTask { await client.run() }
        defer { group.cancelAll() }
        return try await body(client)
    }
}
