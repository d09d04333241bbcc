import Logging
import StampAudit
import StampAuditStore
import StampDatabase
import StampDatabaseTesting
import Testing

/// An audit shard on the test command's PostgreSQL over TLS (`STAMP_TEST_POSTGRES_CA`).
@Suite(
    "PostgreSQL audit store over TLS",
    .enabled(if: TestPostgresServer.environment != nil && TestPostgresServer.certificateAuthority != nil, "STAMP_TEST_POSTGRES_CA is not set; scripts/test sets it")
)
struct PostgresAuditTLSTests {
    /// Runs `body` with a running store on a fresh database over `verify-full`, trusting `authority`.
    func withVerifiedStore(trusting authority: String?, _ body: (PostgresAuditStore) async throws -> Void) async throws {
        let server = try #require(TestPostgresServer.environment)
        try await server.withFreshDatabase(prefix: "stamp_audit_tls_test") { database in
            var url = database
            url.sslMode = .verifyFull
            url.sslRootCertificate = authority
            let store = PostgresAuditStore(configuration: try PostgresAuditStore.configuration(url: url.text), logger: AuditStoreBackend.logger)
            try await withThrowingTaskGroup { group in
                group.addTask { try await store.run() }
                defer { group.cancelAll() }
                try await body(store)
                await store.close()
            }
        }
    }

    @Test("verify-full with the server's CA: the shard migrates, stores and reads rows")
    func verifiedStoreWorks() async throws {
        try await withVerifiedStore(trusting: TestPostgresServer.certificateAuthority) { store in
            try await store.migrate()
            let row = AuditRow.storeTestRow(id: 1)
            #expect(try await store.insert([row]) == [.stored])
            #expect(try await store.row(id: row.id) == row)
        }
    }

    @Test("verify-full with another CA: migrating fails at once, saying that the TLS handshake failed")
    func otherAuthorityIsRefused() async throws {
        try await TestPostgresServer.withOtherCertificateAuthority { authority in
            try await withVerifiedStore(trusting: authority) { store in
                let error = await #expect(throws: AuditStoreError.self) {
                    try await store.migrate()
                }
                #expect(error?.code == .unavailable)
                #expect(error?.message.contains("the PostgreSQL store cannot connect: the TLS handshake with PostgreSQL at") == true, "\(error?.message ?? "")")
            }
        }
    }
}
