import StampDatabase
import Testing

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

@Suite("Database locations")
struct DatabaseLocationTests {
    @Test("sqlite:PATH and postgres:// or postgresql:// URLs are read, and written back as they came")
    func readsBothKinds() throws {
        let file = try DatabaseLocation(parsing: "sqlite:/var/lib/stamp/coordination.sqlite")
        #expect(file == .sqlite(path: "/var/lib/stamp/coordination.sqlite"))
        #expect(file.isSQLite)
        #expect(file.text == "sqlite:/var/lib/stamp/coordination.sqlite")
        for url in ["postgres://stamp@db.internal/stamp?sslmode=verify-full", "postgresql://stamp@db.internal/stamp"] {
            let server = try DatabaseLocation(parsing: url)
            #expect(server == .postgres(url: url))
            #expect(!server.isSQLite)
            #expect(server.text == url)
        }
    }

    @Test(
        "other text is refused without being repeated",
        arguments: ["sqlite:", "mysql://u:MARKER-7f3a@h/d", "MARKER-7f3a.sqlite", "", "postgres:/MARKER-7f3a"]
    )
    func refusesOtherText(text: String) {
        let error = #expect(throws: DatabaseError.self) {
            try DatabaseLocation(parsing: text)
        }
        #expect(error?.code == .invalidLocation)
        #expect(error?.message.contains("MARKER") == false)
    }

    @Test(
        "a PostgreSQL location with a password is refused, naming PGPASSWORD and the password file, without the password",
        arguments: ["postgres://stamp:MARKER-7f3a@db.internal/stamp", "postgresql://stamp:@db.internal/stamp?sslmode=require"]
    )
    func refusesPasswords(text: String) {
        let error = #expect(throws: DatabaseError.self) {
            try DatabaseLocation(parsing: text)
        }
        #expect(error?.code == .invalidLocation)
        #expect(error?.message.contains("must not hold a password") == true)
        #expect(error?.message.contains("PGPASSWORD") == true)
        #expect(error?.message.contains("PGPASSFILE") == true)
        #expect(error?.message.contains("MARKER") == false)
    }

    @Test("a malformed PostgreSQL URL is refused as a location, as PostgresURL refuses it")
    func refusesMalformedURLs() {
        let error = #expect(throws: DatabaseError.self) {
            try DatabaseLocation(parsing: "postgres://stamp@db.internal/stamp?sslmode=MARKER")
        }
        #expect(error?.message.hasPrefix("invalid PostgreSQL URL: sslmode must be") == true)
        #expect(error?.message.contains("MARKER") == false)
    }

    @Test(
        "a relative SQLite path is taken from the folder; absolute paths, URLs and an empty folder are left as they are",
        arguments: [
            (DatabaseLocation.sqlite(path: "shard-0.sqlite"), "/srv/stamp", DatabaseLocation.sqlite(path: "/srv/stamp/shard-0.sqlite")),
            (.sqlite(path: "shards/0.sqlite"), "/srv/stamp/", .sqlite(path: "/srv/stamp/shards/0.sqlite")),
            (.sqlite(path: "shard-0.sqlite"), "maps", .sqlite(path: "maps/shard-0.sqlite")),
            (.sqlite(path: "/var/lib/shard-0.sqlite"), "/srv/stamp", .sqlite(path: "/var/lib/shard-0.sqlite")),
            (.sqlite(path: "shard-0.sqlite"), "", .sqlite(path: "shard-0.sqlite")),
            (.postgres(url: "postgres://u@h/d"), "/srv/stamp", .postgres(url: "postgres://u@h/d")),
        ]
    )
    func resolvesRelativePaths(location: DatabaseLocation, folder: String, resolved: DatabaseLocation) {
        #expect(location.resolvingRelativePath(from: folder) == resolved)
    }

    @Test("in JSON a location is its text, and a malformed one is refused without being repeated")
    func codable() throws {
        let locations: [DatabaseLocation] = [.sqlite(path: "shard-0.sqlite"), .postgres(url: "postgres://audit@db3.internal/audit")]
        let encoded = try JSONEncoder().encode(locations)
        #expect(String(decoding: encoded, as: UTF8.self) == #"["sqlite:shard-0.sqlite","postgres:\/\/audit@db3.internal\/audit"]"#)
        #expect(try JSONDecoder().decode([DatabaseLocation].self, from: encoded) == locations)

        let error = #expect(throws: DecodingError.self) {
            try JSONDecoder().decode([DatabaseLocation].self, from: Data(#"["mysql://u:MARKER-7f3a@h/d"]"#.utf8))
        }
        guard case .dataCorrupted(let context) = error else {
            Issue.record("expected corrupted data, got \(String(describing: error))")
            return
        }
        #expect(context.debugDescription.contains("sqlite:PATH or postgres://"))
        #expect(!context.debugDescription.contains("MARKER"))
    }
}
