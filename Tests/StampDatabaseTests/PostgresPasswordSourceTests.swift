import Foundation
import StampDatabase
import Testing

/// Passwords for URLs without one: `PGPASSWORD`, then the password file, as libpq reads them.
@Suite("PostgreSQL passwords from the environment")
struct PostgresPasswordSourceTests {
    let url = PostgresURL(username: "audit", host: "db.internal", port: 6432, database: "shard_1")

    /// A folder of its own for one test's password files, deleted by the caller.
    static func folder() throws -> URL {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("stamp-passwords-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        return folder
    }

    /// Writes `text` to `name` in `folder` with the permissions `mode`, and returns its path.
    static func write(_ text: String, to name: String, in folder: URL, mode: Int = 0o600) throws -> String {
        let file = folder.appendingPathComponent(name)
        try Data(text.utf8).write(to: file)
        try FileManager.default.setAttributes([.posixPermissions: mode], ofItemAtPath: file.path)
        return file.path
    }

    @Test("the URL's own password comes first, then PGPASSWORD, which beats the password file")
    func order() throws {
        let folder = try Self.folder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let file = try Self.write("*:*:*:*:from-file\n", to: "pgpass", in: folder)
        let source = PostgresPasswordSource(environment: ["PGPASSWORD": "from-variable", "PGPASSFILE": file])
        var withPassword = url
        withPassword.password = "from-url"
        #expect(try source.password(for: withPassword)?.password == "from-url")
        #expect(try source.password(for: withPassword)?.origin == .url)
        #expect(try source.password(for: url)?.password == "from-variable")
        #expect(try source.password(for: url)?.origin == .environment)
        let fileOnly = PostgresPasswordSource(environment: ["PGPASSFILE": file])
        #expect(try fileOnly.password(for: url)?.password == "from-file")
        #expect(try fileOnly.password(for: url)?.origin == .passwordFile(path: file))
    }

    @Test("the first line whose host, port, database and user match gives the password; * matches anything, \\ escapes")
    func matching() throws {
        let folder = try Self.folder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let file = try Self.write(
            """
            # comments and lines of other databases are skipped
            db.internal:6432:shard_0:audit:wrong-database
            db.internal:5432:shard_1:audit:wrong-port
            other.internal:*:*:*:wrong-host
            db.internal:6432:shard_1:stamp:wrong-user
            db.internal:6432:*:audit:p\\:ss\\\\word
            *:*:*:*:too-late
            """,
            to: "pgpass", in: folder
        )
        let source = PostgresPasswordSource(environment: ["PGPASSFILE": file])
        #expect(try source.password(for: url)?.password == #"p:ss\word"#)
        var other = url
        other.host = "elsewhere"
        #expect(try source.password(for: other)?.password == "too-late")
    }

    @Test("without PGPASSFILE the file is ~/.pgpass; a missing file, or no line that matches, gives no password")
    func defaultFileAndNone() throws {
        let folder = try Self.folder()
        defer { try? FileManager.default.removeItem(at: folder) }
        #expect(try PostgresPasswordSource(environment: ["HOME": folder.path]).password(for: url) == nil)
        #expect(try PostgresPasswordSource(environment: [:]).password(for: url) == nil)
        let file = try Self.write("db.internal:6432:shard_1:audit:from-home\n", to: ".pgpass", in: folder)
        let source = PostgresPasswordSource(environment: ["HOME": folder.path])
        #expect(try source.password(for: url)?.password == "from-home")
        #expect(try source.password(for: url)?.origin == .passwordFile(path: file))
        var other = url
        other.database = "shard_2"
        #expect(try source.password(for: other) == nil)
    }

    @Test("a password file that other users may read is refused with the way to fix it", arguments: [0o640, 0o604, 0o660])
    func openFileIsRefused(mode: Int) throws {
        let folder = try Self.folder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let file = try Self.write("*:*:*:*:MARKER-7f3a\n", to: "pgpass", in: folder, mode: mode)
        let error = #expect(throws: DatabaseError.self) {
            try PostgresPasswordSource(environment: ["PGPASSFILE": file]).password(for: url)
        }
        #expect(error?.code == .invalidConfiguration)
        #expect(error?.message.contains("chmod 600") == true)
        #expect(error?.message.contains(file) == true)
        #expect(error?.message.contains("MARKER") == false)
    }

    @Test("the connection settings send the password the source finds")
    func settingsUseTheSource() throws {
        let settings = try PostgresConnectionSettings(url: url, passwords: PostgresPasswordSource(environment: ["PGPASSWORD": "from-variable"]))
        #expect(settings.clientConfiguration.password == "from-variable")
        #expect(try PostgresConnectionSettings(url: url, passwords: PostgresPasswordSource(environment: [:])).clientConfiguration.password == nil)
    }
}
