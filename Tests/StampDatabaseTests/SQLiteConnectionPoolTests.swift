import Logging
import SQLiteNIO
import StampCore
import StampDatabase
import Synchronization
import Testing

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

@Suite("SQLite connection pool")
struct SQLiteConnectionPoolTests {
    /// A logger that drops everything, so tests never touch the global logging system.
    static let logger = Logger(label: "stamp.database-tests", factory: { _ in SwiftLogNoOpLogHandler() })

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

    @Test("a connection waits out other connections' locks, runs in WAL mode, commits fully, then runs the set-up")
    func setsUpEveryConnection() async throws {
        try await withTemporaryFile { path in
            let pool = SQLiteConnectionPool(path: path, capacity: 1, setUp: ["PRAGMA query_only = ON"], logger: Self.logger)
            let settings = try await pool.withConnection { connection in
                var settings: [String: SQLiteInt64] = [:]
                for pragma in ["busy_timeout", "synchronous", "query_only"] {
                    settings[pragma] = try await connection.query("PRAGMA \(pragma)").first?.columns.first?.data.integer
                }
                return (settings, try await connection.query("PRAGMA journal_mode").first?.columns.first?.data.string)
            }
            await pool.close()
            #expect(settings.0["busy_timeout"] == SQLiteInt64(SQLiteConnectionPool.busyTimeout.wholeMilliseconds))
            #expect(SQLiteConnectionPool.busyTimeout == .seconds(10))
            #expect(settings.0["synchronous"] == 2, "FULL")
            #expect(settings.0["query_only"] == 1)
            #expect(settings.1 == "wal")
            #expect(FileManager.default.fileExists(atPath: path), "the file and its directories are created")
        }
    }

    @Test("no more operations than the capacity run at once, each on a connection of its own, all reused", arguments: [1, 3])
    func capacityBoundsOperations(capacity: Int) async throws {
        try await withTemporaryFile { path in
            let pool = SQLiteConnectionPool(path: path, capacity: capacity, logger: Self.logger)
            let tally = Tally()
            try await withThrowingTaskGroup { group in
                for _ in 0..<24 {
                    group.addTask {
                        try await pool.withConnection { connection in
                            tally.state.withLock { tally in
                                tally.running += 1
                                tally.most = max(tally.most, tally.running)
                                tally.connections.insert(ObjectIdentifier(connection))
                            }
                            _ = try await connection.query("SELECT 1")
                            await Task.yield()
                            tally.state.withLock { tally in
                                tally.running -= 1
                                tally.done += 1
                            }
                        }
                    }
                }
                try await group.waitForAll()
            }
            await pool.close()
            let result = tally.state.withLock { $0 }
            #expect(result.done == 24)
            #expect(result.most <= capacity)
            #expect(result.connections.count <= capacity)
        }
    }

    /// What the operations of ``capacityBoundsOperations(capacity:)`` saw.
    final class Tally: Sendable {
        let state = Mutex<(running: Int, most: Int, connections: Set<ObjectIdentifier>, done: Int)>((0, 0, [], 0))
    }

    @Test("an immediate transaction commits what its body did, and rolls it back when the body throws")
    func immediateTransactions() async throws {
        struct Planned: Error {}
        try await withTemporaryFile { path in
            let pool = SQLiteConnectionPool(path: path, capacity: 2, logger: Self.logger)
            try await pool.withImmediateTransaction { connection in
                _ = try await connection.query("CREATE TABLE items (name TEXT)")
                _ = try await connection.query("INSERT INTO items VALUES ('kept')")
            }
            await #expect(throws: Planned.self) {
                try await pool.withImmediateTransaction { connection in
                    _ = try await connection.query("INSERT INTO items VALUES ('undone')")
                    throw Planned()
                }
            }
            let names = try await pool.withConnection { connection in
                try await connection.query("SELECT name FROM items").compactMap { $0.column("name")?.string }
            }
            await pool.close()
            #expect(names == ["kept"])
        }
    }

    @Test("a closed pool refuses at once, and closing again does nothing")
    func closedPoolRefuses() async throws {
        try await withTemporaryFile { path in
            let pool = SQLiteConnectionPool(path: path, capacity: 2, logger: Self.logger)
            _ = try await pool.withConnection { try await $0.query("SELECT 1") }
            await pool.close()
            await pool.close()
            let error = await #expect(throws: DatabaseError.self) {
                try await pool.withConnection { try await $0.query("SELECT 1") }
            }
            #expect(error?.code == .unavailable)
        }
    }

    @Test("a file that cannot be created is unavailable, and the pool stays usable for the next try")
    func unopenableFile() async throws {
        try await withTemporaryFolder { folder in
            // A file where the parent directory should be.
            let blocked = folder.appendingPathComponent("blocked")
            let path = blocked.appendingPathComponent("database.sqlite").path
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
            #expect(FileManager.default.createFile(atPath: blocked.path, contents: Data()))
            let pool = SQLiteConnectionPool(path: path, capacity: 1, logger: Self.logger)
            let error = await #expect(throws: DatabaseError.self) {
                try await pool.withConnection { try await $0.query("SELECT 1") }
            }
            #expect(error?.code == .unavailable)
            try FileManager.default.removeItem(at: blocked)
            _ = try await pool.withConnection { try await $0.query("SELECT 1") }
            await pool.close()
        }
    }
}
