import Foundation
import Logging
import PostgresNIO
@testable import StampDatabase
import StampDatabaseTesting
import Testing

/// Connections to the test command's PostgreSQL, which runs with TLS and a certificate from a CA
/// that `scripts/test` makes: each `sslmode` does what it names.
@Suite(
    "PostgreSQL over TLS",
    .enabled(if: TestPostgresServer.environment != nil && TestPostgresServer.certificateAuthority != nil, "STAMP_TEST_POSTGRES_CA is not set; scripts/test sets it")
)
struct PostgresTLSTests {
    static let logger = Logger(label: "stamp.tls-tests", factory: { _ in SwiftLogNoOpLogHandler() })

    /// The test server's URL with `mode` and `rootCertificate`, and `host` instead of its own when given.
    static func url(_ mode: PostgresURL.SSLMode, rootCertificate: String? = nil, host: String? = nil) throws -> PostgresURL {
        var url = try #require(TestPostgresServer.environment).administration
        url.sslMode = mode
        url.sslRootCertificate = rootCertificate
        if let host { url.host = host }
        return url
    }

    /// Whether the connection the pool of `settings` opens uses TLS, as the server sees it.
    static func usesTLS(_ settings: PostgresConnectionSettings) async throws -> Bool? {
        try await withPostgresClient(settings) { client in
            var ssl: Bool?
            for try await value in try await client.query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").decode(Bool.self) {
                ssl = value
            }
            return ssl
        }
    }

    @Test("verify-full with the server's CA connects over TLS, by IP address and by host name", arguments: ["127.0.0.1", "localhost"])
    func verifyFullConnects(host: String) async throws {
        let settings = try PostgresConnectionSettings(url: Self.url(.verifyFull, rootCertificate: TestPostgresServer.certificateAuthority, host: host))
        try await settings.checkConnection(logger: Self.logger)
        #expect(try await Self.usesTLS(settings) == true)
    }

    @Test("require connects over TLS without checking the certificate; disable connects without TLS")
    func requireAndDisable() async throws {
        let required = try PostgresConnectionSettings(url: Self.url(.require))
        try await required.checkConnection(logger: Self.logger)
        #expect(try await Self.usesTLS(required) == true)
        let disabled = try PostgresConnectionSettings(url: Self.url(.disable))
        try await disabled.checkConnection(logger: Self.logger)
        #expect(try await Self.usesTLS(disabled) == false)
    }

    @Test("verify-full with another CA is refused: tls-failed, naming the handshake and the CA file")
    func wrongAuthorityIsRefused() async throws {
        try await TestPostgresServer.withOtherCertificateAuthority { otherAuthority in
            let settings = try PostgresConnectionSettings(url: Self.url(.verifyFull, rootCertificate: otherAuthority))
            let error = await #expect(throws: DatabaseError.self) {
                try await settings.checkConnection(logger: Self.logger)
            }
            #expect(error?.code == .tlsFailed)
            #expect(error?.message.contains("the TLS handshake with PostgreSQL at") == true, "\(error?.message ?? "")")
            #expect(
                error?.message.contains("failed: the server's certificate is not signed by the certificate authorities of sslrootcert (\(otherAuthority))") == true,
                "\(error?.message ?? "")"
            )
        }
    }

    @Test("verify-full without sslrootcert trusts only the system's authorities, which did not sign the test server's certificate")
    func systemAuthoritiesAreRefused() async throws {
        let settings = try PostgresConnectionSettings(url: Self.url(.verifyFull))
        let error = await #expect(throws: DatabaseError.self) {
            try await settings.checkConnection(logger: Self.logger)
        }
        #expect(error?.code == .tlsFailed)
        #expect(error?.message.contains("the server's certificate is not signed by the system's certificate authorities") == true, "\(error?.message ?? "")")
    }

    @Test("an sslrootcert that is not a file of PEM certificates is an invalid configuration")
    func unreadableAuthority() throws {
        let missing = FileManager.default.temporaryDirectory.appendingPathComponent("stamp-missing-\(UUID().uuidString).pem").path
        let error = #expect(throws: DatabaseError.self) {
            try PostgresConnectionSettings(url: Self.url(.verifyFull, rootCertificate: missing))
        }
        #expect(error?.code == .invalidConfiguration)
        #expect(error?.message.contains(missing) == true)
    }
}

/// What a refused TLS connection is said to mean, for failures the test server cannot produce.
@Suite("PostgreSQL TLS refusals, explained")
struct PostgresTLSRefusalTests {
    @Test("a certificate for another host is named as such")
    func otherHost() throws {
        let url = PostgresURL(username: "stamp", host: "db.internal", database: "audit", sslMode: .verifyFull)
        let error = try PostgresConnectionSettings(url: url, passwords: PostgresPasswordSource(environment: [:])).explain(NIOSSLExtraError.failedToValidateHostname)
        #expect(error.code == .tlsFailed)
        #expect(error.message == "the TLS handshake with PostgreSQL at postgres://stamp@db.internal:5432/audit?sslmode=verify-full failed: the server's certificate is not for the host db.internal")
    }

    @Test("a server that cannot be reached is no refusal: the check returns and leaves the retries to the pool")
    func unreachableIsLeftToThePool() async throws {
        // Nothing listens on port 1 of the loopback address, so the connection is refused at once.
        let url = PostgresURL(username: "stamp", host: "127.0.0.1", port: 1, database: "audit", sslMode: .require)
        let settings = try PostgresConnectionSettings(url: url, passwords: PostgresPasswordSource(environment: [:]))
        await #expect(throws: Never.self) {
            try await settings.checkConnection(logger: PostgresTLSTests.logger)
        }
    }
}

/// Password authentication against the test command's PostgreSQL, where members of
/// `STAMP_TEST_POSTGRES_PASSWORD_GROUP` must give their password: the password from the
/// environment or the password file is the one sent.
@Suite(
    "PostgreSQL passwords from the environment, sent",
    .enabled(if: TestPostgresServer.environment != nil && TestPostgresServer.passwordGroup != nil, "STAMP_TEST_POSTGRES_PASSWORD_GROUP is not set; scripts/test sets it")
)
struct PostgresPasswordAuthenticationTests {
    /// Runs `body` with the URL (no password) of a new role of the password group whose password is `password`, then drops the role.
    func withPasswordRole(password: String, _ body: (PostgresURL) async throws -> Void) async throws {
        let server = try #require(TestPostgresServer.environment)
        let group = try #require(TestPostgresServer.passwordGroup)
        let role = "stamp_password_test_\(UUID().uuidString.lowercased().filter { $0 != "-" })"
        let administration = try PostgresConnectionSettings(url: server.administration)
        try await withPostgresClient(administration) { client in
            try await client.query("CREATE ROLE \(unescaped: role) LOGIN IN ROLE \(unescaped: group) PASSWORD \(unescaped: "'\(password)'")")
        }
        var url = server.administration
        url.username = role
        url.password = nil
        let failure: (any Error)?
        do {
            try await body(url)
            failure = nil
        } catch {
            failure = error
        }
        try await withPostgresClient(administration) { client in
            try await client.query("DROP ROLE \(unescaped: role)")
        }
        if let failure { throw failure }
    }

    /// The user the server says the pool of `settings` is connected as.
    static func currentUser(_ settings: PostgresConnectionSettings) async throws -> String? {
        try await withPostgresClient(settings) { client in
            var user: String?
            for try await name in try await client.query("SELECT current_user::text").decode(String.self) {
                user = name
            }
            return user
        }
    }

    @Test("PGPASSWORD and a password file line are sent, and let the role in")
    func environmentAndFile() async throws {
        try await withPasswordRole(password: "correct-horse-7f3a") { url in
            let fromVariable = try PostgresConnectionSettings(url: url, passwords: PostgresPasswordSource(environment: ["PGPASSWORD": "correct-horse-7f3a"]))
            try await fromVariable.checkConnection(logger: PostgresTLSTests.logger)
            #expect(try await Self.currentUser(fromVariable) == url.username)

            let folder = try PostgresPasswordSourceTests.folder()
            defer { try? FileManager.default.removeItem(at: folder) }
            let file = try PostgresPasswordSourceTests.write("\(url.host):\(url.port):*:\(url.username):correct-horse-7f3a\n", to: "pgpass", in: folder)
            let fromFile = try PostgresConnectionSettings(url: url, passwords: PostgresPasswordSource(environment: ["PGPASSFILE": file]))
            try await fromFile.checkConnection(logger: PostgresTLSTests.logger)
            #expect(try await Self.currentUser(fromFile) == url.username)
        }
    }

    @Test("a wrong password or none is refused: authentication-failed, naming where the password came from, never the password")
    func wrongOrMissingPassword() async throws {
        try await withPasswordRole(password: "correct-horse-7f3a") { url in
            let wrong = try PostgresConnectionSettings(url: url, passwords: PostgresPasswordSource(environment: ["PGPASSWORD": "MARKER-wrong"]))
            let refused = await #expect(throws: DatabaseError.self) {
                try await wrong.checkConnection(logger: PostgresTLSTests.logger)
            }
            #expect(refused?.code == .authenticationFailed)
            #expect(refused?.message.contains("with the password from PGPASSWORD") == true, "\(refused?.message ?? "")")
            #expect(refused?.message.contains("MARKER") == false)

            let none = try PostgresConnectionSettings(url: url, passwords: PostgresPasswordSource(environment: [:]))
            let missing = await #expect(throws: DatabaseError.self) {
                try await none.checkConnection(logger: PostgresTLSTests.logger)
            }
            #expect(missing?.code == .authenticationFailed)
            #expect(missing?.message.contains("PGPASSWORD") == true, "\(missing?.message ?? "")")
        }
    }
}
