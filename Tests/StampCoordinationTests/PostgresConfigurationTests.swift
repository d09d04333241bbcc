import StampCoordination
import StampCoordinationPostgres
import StampCore
import StampDatabase
import StampDatabaseTesting
import Testing

/// The coordination store's reading of its URL; the URL rules themselves are `PostgresURLTests`'.
@Suite("PostgreSQL coordination store URLs")
struct PostgresConfigurationTests {
    @Test("a URL becomes the configuration PostgresURL reads")
    func readsThroughPostgresURL() throws {
        let configuration = try PostgresCoordinationStore.configuration(url: "postgres://stamp:p%40ss%3Aword@db.internal:6432/coordination").clientConfiguration
        #expect(configuration.username == "stamp")
        #expect(configuration.password == "p@ss:word")
        #expect(configuration.host == "db.internal")
        #expect(configuration.port == 6432)
        #expect(configuration.database == "coordination")
    }

    @Test(
        "a malformed URL is an invalid location, without the password",
        arguments: ["mysql://stamp:secret@db/coordination", "postgres://stamp:secret%zz@db.internal/coordination"]
    )
    func malformed(url: String) {
        let error = #expect(throws: CoordinationError.self) {
            try PostgresCoordinationStore.configuration(url: url)
        }
        #expect(error?.code == .invalidLocation)
        #expect(error?.message.contains("invalid PostgreSQL URL") == true)
        #expect(error.map { "\($0)" }?.contains("secret") == false)
    }
}

/// The coordination store on the test command's PostgreSQL over TLS (`STAMP_TEST_POSTGRES_CA`).
@Suite(
    "PostgreSQL coordination store over TLS",
    .enabled(if: TestPostgresServer.environment != nil && TestPostgresServer.certificateAuthority != nil, "STAMP_TEST_POSTGRES_CA is not set; scripts/test sets it")
)
struct PostgresCoordinationTLSTests {
    /// Runs `body` with a running store on a fresh database over `verify-full`, trusting `authority`.
    func withVerifiedStore(trusting authority: String?, _ body: (any CoordinationStore) async throws -> Void) async throws {
        let server = try #require(TestPostgresServer.environment)
        try await server.withFreshDatabase { database in
            var url = database
            url.sslMode = .verifyFull
            url.sslRootCertificate = authority
            let store = PostgresCoordinationStore(configuration: try PostgresConnectionSettings(url: url), logger: silentLogger)
            try await withThrowingTaskGroup { group in
                group.addTask { try await store.run() }
                defer { group.cancelAll() }
                try await body(store)
                await store.close()
            }
        }
    }

    @Test("verify-full with the server's CA: the store prepares and leases as over a plain connection")
    func verifiedStoreWorks() async throws {
        try await withVerifiedStore(trusting: TestPostgresServer.certificateAuthority) { store in
            try await store.prepare(layout: .default)
            let lease = try await store.claim(owner: "tls-node", address: nil, ttl: .seconds(10), nodeCount: 4)
            #expect(lease?.node == 0)
            #expect(try await store.liveLeases().map(\.owner) == ["tls-node"])
        }
    }

    @Test("verify-full with another CA: prepare fails at once, saying that the TLS handshake failed")
    func otherAuthorityIsRefused() async throws {
        try await TestPostgresServer.withOtherCertificateAuthority { authority in
            try await withVerifiedStore(trusting: authority) { store in
                let error = await #expect(throws: CoordinationError.self) {
                    try await store.prepare(layout: .default)
                }
                #expect(error?.code == .unavailable)
                #expect(error?.message.contains("the PostgreSQL store cannot connect: the TLS handshake with PostgreSQL at") == true, "\(error?.message ?? "")")
            }
        }
    }
}
