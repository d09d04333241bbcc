import StampCoordination
import StampCoordinationPostgres
import Testing

/// The coordination store's reading of its URL; the URL rules themselves are `PostgresURLTests`'.
@Suite("PostgreSQL coordination store URLs")
struct PostgresConfigurationTests {
    @Test("a URL becomes the configuration PostgresURL reads")
    func readsThroughPostgresURL() throws {
        let configuration = try PostgresCoordinationStore.configuration(url: "postgres://stamp:p%40ss%3Aword@db.internal:6432/coordination")
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
