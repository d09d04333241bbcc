import StampDatabase
import Testing

/// The one reader of PostgreSQL URLs; both stores configure their connections through it.
@Suite("PostgreSQL URLs")
struct PostgresURLTests {
    @Test("a full URL gives user, decoded password, host, port and database")
    func fullURL() throws {
        let url = try PostgresURL(parsing: "postgres://stamp:p%40ss%3Aword@db.internal:6432/coordination")
        #expect(url == PostgresURL(username: "stamp", password: "p@ss:word", host: "db.internal", port: 6432, database: "coordination"))
        #expect(url.sslMode == .disable)
        let configuration = try PostgresConnectionSettings(url: url, passwords: PostgresPasswordSource(environment: [:])).clientConfiguration
        #expect(configuration.username == "stamp")
        #expect(configuration.password == "p@ss:word")
        #expect(configuration.host == "db.internal")
        #expect(configuration.port == 6432)
        #expect(configuration.database == "coordination")
    }

    @Test("every part may be percent-encoded, and an IPv6 host goes in brackets")
    func encodedPartsAndIPv6() throws {
        let url = try PostgresURL(parsing: "postgresql://audit%40svc:p%3Ass@[::1]:6543/shard%5F0")
        #expect(url == PostgresURL(username: "audit@svc", password: "p:ss", host: "::1", port: 6543, database: "shard_0"))
        #expect(try PostgresURL(parsing: "postgres://st%C3%A4mp@db%2Dinternal/caf%C3%A9").username == "stämp")
        #expect(try PostgresURL(parsing: "postgres://stamp@db%2Dinternal/audit").host == "db-internal")
        #expect(try PostgresURL(parsing: "postgres://stamp@db.internal/caf%C3%A9").database == "café")
    }

    @Test("the postgresql scheme, the default port, no password and an empty one are accepted")
    func variants() throws {
        let plain = try PostgresURL(parsing: "postgresql://postgres@127.0.0.1/stamp")
        #expect(plain.password == nil)
        #expect(plain.host == "127.0.0.1")
        #expect(plain.port == 5432)
        let bracketed = try PostgresURL(parsing: "postgres://postgres@[::1]/stamp")
        #expect(bracketed.host == "::1")
        #expect(bracketed.port == 5432)
        #expect(try PostgresURL(parsing: "postgres://stamp:@db.internal/audit").password == "")
        // The last @ ends the password and the first : the user, so an unencoded @ or : in the password is still read.
        #expect(try PostgresURL(parsing: "postgres://stamp:p@ss@db.internal/audit").password == "p@ss")
        #expect(try PostgresURL(parsing: "postgres://stamp:p:ss@db.internal/audit").password == "p:ss")
    }

    @Test(
        "malformed URLs are refused without repeating any part of them",
        arguments: [
            "mysql://stamp:MARKER-7f3a@db/coordination",
            "postgres:/stamp:MARKER-7f3a@db/coordination",
            "postgres://db.internal/coordination",
            "postgres://stamp:MARKER-7f3a@db.internal",
            "postgres://stamp:MARKER-7f3a@db.internal/",
            "postgres://stamp:MARKER-7f3a@:5432/coordination",
            "postgres://stamp:MARKER-7f3a@db.internal:port/coordination",
            "postgres://stamp:MARKER-7f3a@db.internal:/coordination",
            "postgres://stamp:MARKER-7f3a@db.internal:+5432/coordination",
            "postgres://stamp:MARKER-7f3a@db.internal:0/coordination",
            "postgres://stamp:MARKER-7f3a@db.internal:70000/coordination",
            "postgres://stamp:MARKER-7f3a@[::1/coordination",
            "postgres://stamp:MARKER-7f3a@[::1]5432/coordination",
            "postgres://stamp:MARKER-7f3a@db.internal/coordination?sslmode=prefer",
            "postgres://stamp:MARKER-7f3a@db.internal/coordination?sslmode=MARKER",
            "postgres://stamp:MARKER-7f3a@db.internal/coordination?application_name=MARKER",
            "postgres://stamp:MARKER-7f3a@db.internal/coordination?sslmode",
            "postgres://stamp:MARKER-7f3a@db.internal/coordination?sslmode=require&sslmode=disable",
            "postgres://stamp:MARKER-7f3a@db.internal/coordination?sslmode=require&sslrootcert=/MARKER.pem",
            "postgres://stamp:MARKER-7f3a@db.internal/coordination?sslrootcert=/MARKER.pem",
            "postgres://stamp:MARKER-7f3a@db.internal/coordination?sslmode=verify-full&sslrootcert=",
            "postgres://stamp:MARKER-7f3a@db.internal/coordination?sslmode=verify%zz",
            "postgres://stamp:MARKER-7f3a@db.internal/coordination?sslmode=verify-full&sslrootcert=/MARKER 1.pem",
            "postgres://stamp:MARKER-7f3a@db.internal/coordination#top",
            "postgres://stamp:MARKER-7f3a%zz@db.internal/coordination",
            "postgres://stamp:MARKER-7f3a@db.internal/coordination%zz",
            "postgres://stamp:MARKER-7f3a@db.internal/coordination%4",
            "postgres://stamp:MARKER-7f3a%FF@db.internal/coordination",
            "postgres://stamp:MARKER-7f3a@db%zz/coordination",
            "postgres://:MARKER-7f3a@db.internal/coordination",
            "postgres://stamp:MARKER-7f3a@db.internal/shards/0",
            "postgres://stamp:MARKER/7f3a@db.internal/coordination",
            "postgres://stamp:MARKER 7f3a@db.internal/coordination",
            "postgres://stamp:MARKER-7f3a@db.internal/my database",
        ]
    )
    func malformed(url: String) {
        let error = #expect(throws: DatabaseError.self) {
            try PostgresURL(parsing: url)
        }
        #expect(error?.code == .invalidLocation)
        #expect(error?.message.hasPrefix("invalid PostgreSQL URL: ") == true)
        let shown = error.map { "\($0) \(String(reflecting: $0))" } ?? ""
        #expect(!shown.contains("MARKER"), "\(shown)")
        #expect(!shown.contains("db.internal"), "\(shown)")
    }

    @Test("sslmode and sslrootcert are read from the query, percent-decoded; without sslmode TLS is disabled")
    func tlsParameters() throws {
        #expect(try PostgresURL(parsing: "postgres://stamp@db.internal/audit?sslmode=disable").sslMode == .disable)
        #expect(try PostgresURL(parsing: "postgres://stamp@db.internal/audit?sslmode=require").sslMode == .require)
        let verified = try PostgresURL(parsing: "postgresql://stamp@db.internal:6432/audit?sslmode=verify-full&sslrootcert=/etc/stamp/ca%20bundle.pem")
        #expect(verified == PostgresURL(
            username: "stamp", host: "db.internal", port: 6432, database: "audit", sslMode: .verifyFull, sslRootCertificate: "/etc/stamp/ca bundle.pem"
        ))
        let reordered = try PostgresURL(parsing: "postgres://stamp@db.internal/audit?sslrootcert=ca.pem&sslmode=verify-full")
        #expect(reordered.sslMode == .verifyFull)
        #expect(reordered.sslRootCertificate == "ca.pem")
        #expect(try PostgresURL(parsing: "postgres://stamp@db.internal/audit?sslmode=verify-full").sslRootCertificate == nil)
    }

    @Test("sslmode names the modes it accepts when it is refused")
    func unknownSSLMode() {
        let error = #expect(throws: DatabaseError.self) {
            try PostgresURL(parsing: "postgres://stamp@db.internal/audit?sslmode=verify-ca")
        }
        #expect(error?.message == "invalid PostgreSQL URL: sslmode must be disable, require, verify-full")
    }

    @Test("a / in the password must be encoded, and the refusal says so")
    func slashInPassword() {
        let error = #expect(throws: DatabaseError.self) {
            try PostgresURL(parsing: "postgres://stamp:pass/word@db.internal/coordination")
        }
        #expect(error?.message.contains("%2F") == true)
    }

    @Test(
        "the text reads back as the same URL, every part encoded where it must be",
        arguments: [
            PostgresURL(username: "stamp", password: "p@ss:w/rd%", host: "db.internal", port: 6432, database: "coordination"),
            PostgresURL(username: "audit@svc", host: "::1", database: "shard 0"),
            PostgresURL(username: "stämp", password: "", host: "127.0.0.1", port: 5433, database: "café"),
            PostgresURL(username: "stamp", host: "db.internal", database: "audit", sslMode: .require),
            PostgresURL(username: "stamp", host: "db.internal", database: "audit", sslMode: .verifyFull, sslRootCertificate: "/etc/stamp/ca&root.pem"),
        ]
    )
    func textRoundTrips(url: PostgresURL) throws {
        #expect(try PostgresURL(parsing: url.text) == url)
    }

    @Test("the text is written in full; the description hides the password")
    func textAndDescription() throws {
        let url = PostgresURL(username: "stamp", password: "se/cret", host: "::1", database: "audit")
        #expect(url.text == "postgres://stamp:se%2Fcret@[::1]:5432/audit")
        #expect(url.description == "postgres://stamp:***@[::1]:5432/audit")
        #expect("\(url)" == url.description)
        #expect(!String(reflecting: url).contains("cret"))
        #expect(PostgresURL(username: "stamp", host: "db", database: "audit").description == "postgres://stamp@db:5432/audit")
        let verified = PostgresURL(username: "stamp", password: "secret", host: "db", database: "audit", sslMode: .verifyFull, sslRootCertificate: "/etc/ca.pem")
        #expect(verified.text == "postgres://stamp:secret@db:5432/audit?sslmode=verify-full&sslrootcert=/etc/ca.pem")
        #expect(verified.description == "postgres://stamp:***@db:5432/audit?sslmode=verify-full&sslrootcert=/etc/ca.pem")
    }
}
