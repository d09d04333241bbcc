import PostgresNIO
import StampDatabase
import StampDatabaseTesting
import Testing

@Suite("Fresh PostgreSQL databases for tests")
struct TestPostgresServerTests {
    @Test(
        "a fresh database is there, empty and its own, for the body only, also when the body fails",
        .enabled(if: TestPostgresServer.environment != nil, "STAMP_TEST_POSTGRES_URL is not set; scripts/test sets it")
    )
    func freshDatabaseLivesForTheBody() async throws {
        let server = try #require(TestPostgresServer.environment)
        struct Planned: Error {}
        var names: [String] = []
        for fails in [false, true] {
            do {
                try await server.withFreshDatabase(prefix: "stamp_fresh_test") { database in
                    names.append(database.database)
                    #expect(database.database.hasPrefix("stamp_fresh_test_"))
                    let connectedTo = try await withPostgresClient(PostgresConnectionSettings(url: database)) { client in
                        var name: String?
                        for try await found in try await client.query("SELECT current_database()").decode(String.self) {
                            name = found
                        }
                        return name
                    }
                    #expect(connectedTo == database.database)
                    if fails { throw Planned() }
                }
                #expect(!fails)
            } catch is Planned {
                #expect(fails)
            }
        }
        #expect(Set(names).count == 2)
        let left = try await withPostgresClient(PostgresConnectionSettings(url: server.administration)) { client in
            var count = 0
            for try await found in try await client.query("SELECT count(*) FROM pg_database WHERE datname = ANY(\(names))").decode(Int64.self) {
                count = Int(found)
            }
            return count
        }
        #expect(left == 0)
    }
}
