import StampCoordination
import StampCoordinationPostgres
import Testing

@Suite("PostgreSQL store URLs")
struct PostgresConfigurationTests {
    @Test("a full URL gives user, decoded password, host, port and database")
    func fullURL() throws {
        let configuration = try PostgresCoordinationStore.configuration(url: "postgres://stamp:p%40ss%3Aword@db.internal:6432/coordination")
        #expect(configuration.username == "stamp")
        #expect(configuration.password == "p@ss:word")
        #expect(configuration.host == "db.internal")
        #expect(configuration.port == 6432)
        #expect(configuration.database == "coordination")
    }

    @Test("the postgresql scheme, the default port and IPv6 hosts are accepted")
    func variants() throws {
        let plain = try PostgresCoordinationStore.configuration(url: "postgresql://postgres@127.0.0.1/stamp")
        #expect(plain.password == nil)
        #expect(plain.host == "127.0.0.1")
        #expect(plain.port == 5432)
        let bracketed = try PostgresCoordinationStore.configuration(url: "postgres://postgres@[::1]:5433/stamp")
        #expect(bracketed.host == "::1")
        #expect(bracketed.port == 5433)
    }

    @Test(
        "malformed URLs are rejected without repeating the password",
        arguments: [
            "mysql://stamp:secret@db/coordination",
            "postgres://db.internal/coordination",
            "postgres://stamp:secret@db.internal",
            "postgres://stamp:secret@db.internal/",
            "postgres://stamp:secret@:5432/coordination",
            "postgres://stamp:secret@db.internal:port/coordination",
            "postgres://stamp:secret@db.internal:70000/coordination",
            "postgres://stamp:secret@db.internal/coordination?sslmode=require",
            "postgres://stamp:secret%zz@db.internal/coordination",
            "postgres://:secret@db.internal/coordination",
        ]
    )
    func malformed(url: String) {
        let error = #expect(throws: CoordinationError.self) {
            try PostgresCoordinationStore.configuration(url: url)
        }
        #expect(error?.code == .invalidLocation)
        #expect(error?.message.contains("secret") == false)
    }
}
