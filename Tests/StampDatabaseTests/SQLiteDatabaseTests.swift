import GRDB
import StampCore
import StampDatabase
import Synchronization
import Testing

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

@Suite("SQLite database")
struct SQLiteDatabaseTests {
    /// Runs `body` with a fresh temporary folder that does not exist yet, removed afterwards.
    private func withTemporaryFolder(_ body: (URL) async throws -> Void) async throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("stamp-database-tests-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: folder) }
        try await body(folder)
    }

    /// Runs `body` with the path of a file in missing directories of a fresh temporary folder.
    private func withTemporaryFile(_ body: (String) async throws -> Void) async throws {
        try await withTemporaryFolder { folder in
            try await body(folder.appendingPathComponent("nested/deeper/database.sqlite").path)
        }
    }

    @Test("the file and its directories are created, in WAL mode committing without an fsync of its own, and reads cannot write")
    func setsUpTheFile() async throws {
        try await withTemporaryFile { path in
            let database = SQLiteDatabase(path: path)
            let (journal, synchronous) = try await database.immediateTransaction { db in
                (try String.fetchOne(db, sql: "PRAGMA journal_mode"), try Int.fetchOne(db, sql: "PRAGMA synchronous"))
            }
            #expect(journal == "wal")
            #expect(synchronous == 1, "NORMAL: the WAL file's grouped sync makes commits durable")
            #expect(FileManager.default.fileExists(atPath: path))
            await #expect(throws: GRDB.DatabaseError.self) {
                try await database.read { db in try db.execute(sql: "CREATE TABLE refused (name TEXT)") }
            }
            database.close()
        }
    }

    @Test("a transaction commits what its body did, and rolls it back when the body throws")
    func immediateTransactions() async throws {
        struct Planned: Error {}
        try await withTemporaryFile { path in
            let database = SQLiteDatabase(path: path)
            try await database.immediateTransaction { db in
                try db.execute(sql: "CREATE TABLE items (name TEXT)")
                try db.execute(sql: "INSERT INTO items VALUES ('kept')")
            }
            await #expect(throws: Planned.self) {
                try await database.immediateTransaction { db in
                    try db.execute(sql: "INSERT INTO items VALUES ('undone')")
                    throw Planned()
                }
            }
            let names = try await database.read { db in try String.fetchAll(db, sql: "SELECT name FROM items") }
            database.close()
            #expect(names == ["kept"])
        }
    }

    @Test("a transaction waits while another connection holds the write lock, and reads do not")
    func waitsForAnotherWriter() async throws {
        try await withTemporaryFile { path in
            let database = SQLiteDatabase(path: path)
            try await database.immediateTransaction { db in try db.execute(sql: "CREATE TABLE items (name TEXT)") }
            var configuration = Configuration()
            configuration.allowsUnsafeTransactions = true
            let other = try DatabaseQueue(path: path, configuration: configuration)
            try await other.writeWithoutTransaction { db in
                try db.execute(sql: "BEGIN IMMEDIATE")
                try db.execute(sql: "INSERT INTO items VALUES ('other')")
            }
            #expect(try await database.read { db in try Int.fetchOne(db, sql: "SELECT count(*) FROM items") } == 0)
            try await withThrowingTaskGroup { group in
                group.addTask {
                    try await database.immediateTransaction { db in try db.execute(sql: "INSERT INTO items VALUES ('mine')") }
                }
                try await other.writeWithoutTransaction { try $0.execute(sql: "COMMIT") }
                try await group.waitForAll()
            }
            #expect(try await database.read { db in try String.fetchAll(db, sql: "SELECT name FROM items ORDER BY rowid") } == ["other", "mine"])
            try other.close()
            database.close()
        }
    }

    @Test("concurrent transactions each return after a sync of the WAL file, sharing syncs")
    func transactionsShareSyncs() async throws {
        try await withTemporaryFile { path in
            let database = SQLiteDatabase(path: path)
            try await database.immediateTransaction { db in try db.execute(sql: "CREATE TABLE items (n INTEGER)") }
            #expect(database.syncs == 1)
            try await withThrowingTaskGroup { group in
                for n in 0..<64 {
                    group.addTask { try await database.immediateTransaction { db in try db.execute(sql: "INSERT INTO items VALUES (?)", arguments: [n]) } }
                }
                try await group.waitForAll()
            }
            #expect(database.syncs >= 2 && database.syncs <= 65)
            #expect(try await database.read { db in try Int.fetchOne(db, sql: "SELECT count(*) FROM items") } == 64)
            let before = database.syncs
            try await database.syncCommitted()
            #expect(database.syncs == before + 1)
            database.close()
        }
    }

    @Test("waiting for a lock tries every 100 µs for 2 ms, then every millisecond, for 10 seconds in all")
    func busyWait() {
        let waits = (0...)
            .lazy
            .map(SQLiteDatabase.BusyWait.interval(afterTries:))
            .prefix { $0 != nil }
            .map { $0! }
        let intervals = Array(waits)
        #expect(intervals.prefix(20).allSatisfy { $0 == .microseconds(100) })
        #expect(intervals.dropFirst(20).allSatisfy { $0 == .milliseconds(1) })
        let total = intervals.reduce(Duration.zero, +)
        #expect(total <= SQLiteDatabase.busyTimeout && total > SQLiteDatabase.busyTimeout - .milliseconds(2))
    }

    @Test("a closed database refuses at once, and closing again does nothing")
    func closedDatabaseRefuses() async throws {
        try await withTemporaryFile { path in
            let database = SQLiteDatabase(path: path)
            _ = try await database.read { db in try Int.fetchOne(db, sql: "SELECT 1") }
            database.close()
            database.close()
            let error = await #expect(throws: StampDatabase.DatabaseError.self) {
                try await database.read { db in try Int.fetchOne(db, sql: "SELECT 1") }
            }
            #expect(error?.code == .unavailable)
        }
    }

    @Test("a file that cannot be created is unavailable, and the database opens on the next try")
    func unopenableFile() async throws {
        try await withTemporaryFolder { folder in
            // A file where the parent directory should be.
            let blocked = folder.appendingPathComponent("blocked")
            let path = blocked.appendingPathComponent("database.sqlite").path
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
            #expect(FileManager.default.createFile(atPath: blocked.path, contents: Data()))
            let database = SQLiteDatabase(path: path)
            let error = await #expect(throws: StampDatabase.DatabaseError.self) {
                try await database.read { db in try Int.fetchOne(db, sql: "SELECT 1") }
            }
            #expect(error?.code == .unavailable)
            try FileManager.default.removeItem(at: blocked)
            #expect(try await database.read { db in try Int.fetchOne(db, sql: "SELECT 1") } == 1)
            database.close()
        }
    }

    /// `stamp demo` starts three generator nodes on one new coordination file: each opens it at
    /// the same moment, and the one that loses the race to set up the file must wait, not fail.
    @Test("many databases opening one new file at once all open it", arguments: 0..<20)
    func simultaneousFirstOpens(round: Int) async throws {
        try await withTemporaryFile { path in
            let databases = (0..<6).map { _ in SQLiteDatabase(path: path) }
            let failures = await withTaskGroup(of: String?.self) { group in
                for (index, database) in databases.enumerated() {
                    group.addTask {
                        do {
                            try await database.immediateTransaction { db in
                                try db.execute(sql: "CREATE TABLE IF NOT EXISTS opened (id INTEGER PRIMARY KEY)")
                                try db.execute(sql: "INSERT INTO opened VALUES (?)", arguments: [index])
                            }
                            return nil
                        } catch {
                            return "database \(index): \(error) \(String(describing: (error as? StampDatabase.DatabaseError)?.cause))"
                        }
                    }
                }
                return await group.reduce(into: [String]()) { if let failure = $1 { $0.append(failure) } }
            }
            #expect(failures == [], "round \(round)")
            let rows = try await databases[0].read { db in try Int.fetchOne(db, sql: "SELECT count(*) FROM opened") }
            #expect(rows == databases.count)
            for database in databases { database.close() }
        }
    }

    /// SQLite refuses to switch a file to WAL while another connection writes it, at once and
    /// without calling the busy handler: the open waits and tries again instead of failing.
    @Test("an open refused because another connection writes the file is tried again until it succeeds")
    func openWaitsForAWriter() async throws {
        try await withTemporaryFile { path in
            try FileManager.default.createDirectory(at: URL(fileURLWithPath: path).deletingLastPathComponent(), withIntermediateDirectories: true)
            var configuration = Configuration()
            configuration.allowsUnsafeTransactions = true
            let writer = try DatabaseQueue(path: path, configuration: configuration)
            try await writer.writeWithoutTransaction { db in
                try db.execute(sql: "CREATE TABLE items (name TEXT); BEGIN IMMEDIATE; INSERT INTO items VALUES ('pending')")
            }
            let pauses = Mutex(0)
            let database = SQLiteDatabase(path: path) { _ in
                let first = pauses.withLock { pauses in
                    pauses += 1
                    return pauses == 1
                }
                if first { try? writer.writeWithoutTransaction { db in try db.execute(sql: "COMMIT") } }
            }
            let rows = try await database.read { db in try Int.fetchOne(db, sql: "SELECT count(*) FROM items") }
            #expect(rows == 1)
            #expect(pauses.withLock { $0 } >= 1, "the first try was refused")
            database.close()
            try writer.close()
        }
    }
}
