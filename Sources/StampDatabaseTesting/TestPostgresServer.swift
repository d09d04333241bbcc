import Logging
import PostgresNIO
import StampDatabase

import Foundation

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

    /// The PEM file of the certificate authority that signed the server's certificate, when
    /// `STAMP_TEST_POSTGRES_CA` names one: then the server of ``environment`` accepts TLS, and a
    /// `verify-full` connection to it by `127.0.0.1` or `localhost` is trusted with this file.
    public static let certificateAuthority: String? = ProcessInfo.processInfo.environment["STAMP_TEST_POSTGRES_CA"]

    /// A role, when `STAMP_TEST_POSTGRES_PASSWORD_GROUP` names one, whose members the server of
    /// ``environment`` lets in over TCP only with their password (scram-sha-256).
    public static let passwordGroup: String? = ProcessInfo.processInfo.environment["STAMP_TEST_POSTGRES_PASSWORD_GROUP"]

    /// A logger that drops everything, so tests never touch the global logging system.
    static let logger = Logger(label: "stamp.database-tests", factory: { _ in SwiftLogNoOpLogHandler() })

    /// The database the tests connect to when they create and drop others.
    public let administration: PostgresURL

    public init(administeredAt administration: PostgresURL) {
        self.administration = administration
    }

    /// Runs `body` with the path of a new certificate authority's PEM certificate, one that signed
    /// nothing the server shows, made with openssl in a folder of its own and deleted afterwards.
    public static func withOtherCertificateAuthority<Result>(_ body: (String) async throws -> Result) async throws -> Result {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("stamp-other-ca-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let certificate = folder.appendingPathComponent("other-ca.crt").path
        let openssl = Process()
        openssl.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        openssl.arguments = [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", folder.appendingPathComponent("other-ca.key").path, "-out", certificate, "-days", "1",
            "-subj", "/CN=Another CA", "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        ]
        openssl.standardOutput = FileHandle.nullDevice
        openssl.standardError = FileHandle.nullDevice
        try openssl.run()
        openssl.waitUntilExit()
        guard openssl.terminationStatus == 0 else {
            throw DatabaseError(.unavailable, "openssl could not make a certificate authority (exit status \(openssl.terminationStatus))")
        }
        return try await body(certificate)
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
        try await withPostgresClient(PostgresConnectionSettings(url: administration)) { client in
            try await client.query("CREATE DATABASE \(unescaped: database.database)")
        }
        return database
    }

    /// Drops `databases` from the server, also while clients are still connected to them.
    public func dropDatabases(_ databases: [PostgresURL]) async throws {
        guard !databases.isEmpty else { return }
        try await withPostgresClient(PostgresConnectionSettings(url: administration)) { client in
            for database in databases {
                try await client.query("DROP DATABASE IF EXISTS \(unescaped: database.database) WITH (FORCE)")
            }
        }
    }
}

/// Runs `body` with a running PostgreSQL client on `settings`, and stops the client afterwards.
@discardableResult
public func withPostgresClient<Result: Sendable>(
    _ settings: PostgresConnectionSettings,
    _ body: (PostgresClient) async throws -> Result
) async throws -> Result {
    let client = PostgresClient(configuration: settings.clientConfiguration, backgroundLogger: TestPostgresServer.logger)
    return try await withThrowingTaskGroup { group in
        group.addTask { await client.run() }
        defer { group.cancelAll() }
        return try await body(client)
    }
}
