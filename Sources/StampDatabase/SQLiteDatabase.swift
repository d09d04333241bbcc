import GRDB
import Logging
import StampCore
import Synchronization

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// One SQLite file, opened on first use as a GRDB `DatabasePool`: the one place SQLite files are
/// opened and set up.
///
/// The file runs in WAL mode. One writing connection, on a queue of its own, runs every
/// transaction of the process in turn, each `BEGIN IMMEDIATE`, keeping its prepared statements;
/// reads run on up to `readerCount` read-only connections of their own and see the last commit
/// without waiting for a write in progress. Other processes on the same file take turns on
/// SQLite's write lock; a connection waits for it as ``BusyWait`` says.
///
/// A transaction survives a power loss once it returns: it commits without waiting for the disk
/// (`synchronous = NORMAL`, so the write lock is held only while its pages are written), then
/// waits for the WAL file's next `fsync`, which it shares with every commit of the process that
/// came meanwhile (``GroupedFileSync``). That is `synchronous = FULL`'s promise at a fraction of
/// its `fsync`s and lock time.
///
/// Statements run on GRDB's threads, never on an event loop or Swift's cooperative pool, so a
/// commit's `fsync` or a wait for another process's lock blocks neither.
public final class SQLiteDatabase: Sendable {
    /// How long a statement waits for another connection's lock before failing with `SQLITE_BUSY`.
    public static let busyTimeout: Duration = .seconds(10)

    private let path: String
    private let readerCount: Int
    private let pool = Mutex<Opened?>(nil)
    private let isClosed = Atomic<Bool>(false)
    private let openPause: @Sendable (Duration) -> Void

    /// A database on the file at `path`; the file and its parent directories are created when
    /// the first operation opens it. `openPause` blocks between tries of a refused open (tests
    /// pass one that also ends what holds the file).
    public init(path: String, readerCount: Int = 2, openPause: @escaping @Sendable (Duration) -> Void = BusyWait.pause) {
        precondition(readerCount >= 1)
        self.path = path
        self.readerCount = readerCount
        self.openPause = openPause
    }

    /// Runs `body` on a reading connection, in a transaction that sees the last commit.
    ///
    /// Fails with ``DatabaseError`` when the database is closed or the file cannot be opened, and
    /// with what `body` or SQLite throws (GRDB's `DatabaseError`).
    public func read<Result: Sendable>(_ body: @escaping @Sendable (Database) throws -> Result) async throws -> Result {
        try await opened().pool.read(body)
    }

    /// Runs `body` in a `BEGIN IMMEDIATE` transaction on the writing connection: commits when
    /// `body` returns and returns after the commit; rolls back when `body` throws.
    ///
    /// `BEGIN IMMEDIATE` takes the file's write lock at once, waiting for another process to
    /// release it, so `body` runs with the lock held.
    public func immediateTransaction<Result: Sendable>(_ body: @escaping @Sendable (Database) throws -> Result) async throws -> Result {
        let opened = try opened()
        let result = try await opened.pool.writeWithoutTransaction { db in
            var result: Result?
            try db.inTransaction(.immediate) {
                result = try body(db)
                return .commit
            }
            return result!
        }
        try await opened.wal.sync()
        return result
    }

    /// Returns once every commit made to the file so far, by any process, is on disk: for an
    /// answer that rests on a commit read rather than made (another request's write, say).
    public func syncCommitted() async throws {
        try await opened().wal.sync()
    }

    /// How many times the WAL file has been synced.
    public var syncs: Int { pool.withLock { $0?.wal.syncs ?? 0 } }

    /// Waits for running operations, then closes every connection; later operations fail.
    /// Closing again does nothing.
    public func close() {
        guard !isClosed.exchange(true, ordering: .sequentiallyConsistent) else { return }
        // Operations that took the pool before the flag was set finish first: closing waits for them.
        guard let opened = pool.withLock({ pool in defer { pool = nil }; return pool }) else { return }
        try? opened.pool.close()
        #if canImport(Glibc)
        _ = Glibc.close(opened.walDescriptor)
        #else
        _ = Darwin.close(opened.walDescriptor)
        #endif
    }

    /// What may be logged about `error`: its kind, never its message (SQLite's may quote the statement).
    public static func metadata(_ error: any Error) -> Logger.Metadata {
        if let error = error as? GRDB.DatabaseError { return ["stamp.sqlite.code": "\(error.extendedResultCode)"] }
        return ["stamp.error.type": "\(type(of: error))"]
    }

    /// Whether SQLite refused the operation for what it is (a constraint, the schema, a bad
    /// value), as opposed to failing to run it (a lock, I/O, a closed file).
    public static func isRefusal(_ error: any Error) -> Bool {
        guard let error = error as? GRDB.DatabaseError else { return false }
        return [.SQLITE_CONSTRAINT, .SQLITE_ERROR, .SQLITE_PERM, .SQLITE_AUTH, .SQLITE_SCHEMA, .SQLITE_TOOBIG, .SQLITE_MISMATCH, .SQLITE_RANGE, .SQLITE_ABORT]
            .contains(error.resultCode)
    }

    /// The file's pool and its WAL file, open.
    private struct Opened: Sendable {
        let pool: DatabasePool
        let walDescriptor: Int32
        let wal: GroupedFileSync
    }

    /// The file's pool, opened on first use; a failed open is tried again by the next operation.
    ///
    /// Switching a new file to WAL needs the file to itself, and SQLite refuses the switch at
    /// once, without waiting, while another process writes the file (three nodes starting on one
    /// new coordination file do): a refused open is tried again as ``BusyWait`` says.
    private func opened() throws(DatabaseError) -> Opened {
        try pool.withLock { (pool) throws(DatabaseError) -> Opened in
            guard !isClosed.load(ordering: .sequentiallyConsistent) else {
                throw DatabaseError(.unavailable, "the SQLite database is closed")
            }
            if let pool { return pool }
            var tries = 0
            while true {
                do {
                    let opened = try openFile()
                    pool = opened
                    return opened
                } catch let error as GRDB.DatabaseError where error.resultCode == .SQLITE_BUSY {
                    guard let interval = BusyWait.interval(afterTries: tries) else { throw Self.openFailed(error) }
                    tries += 1
                    openPause(interval)
                } catch let error as DatabaseError {
                    throw error
                } catch {
                    throw Self.openFailed(error)
                }
            }
        }
    }

    private static func openFailed(_ error: any Error) -> DatabaseError {
        let code = (error as? GRDB.DatabaseError).map { " (SQLite code \($0.extendedResultCode))" } ?? ""
        return DatabaseError(.unavailable, "could not open the SQLite database\(code)", cause: error)
    }

    private func openFile() throws -> Opened {
        var configuration = Configuration()
        configuration.busyMode = .callback(BusyWait.shouldRetry)
        configuration.maximumReaderCount = readerCount
        configuration.label = "stamp.sqlite"
        try FileManager.default.createDirectory(at: URL(fileURLWithPath: path).deletingLastPathComponent(), withIntermediateDirectories: true)
        // The pool switches the file to WAL, sets `synchronous = NORMAL`, and leaves a WAL
        // file, which stays while a connection is open.
        let databasePool = try DatabasePool(path: path, configuration: configuration)
        let descriptor = open(path + "-wal", O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else {
            try? databasePool.close()
            throw DatabaseError(.unavailable, "could not open the SQLite database's WAL file (errno \(errno))")
        }
        let wal = GroupedFileSync(label: "stamp.sqlite.sync") {
            guard fsync(descriptor) == 0 else {
                throw DatabaseError(.unavailable, "could not sync the SQLite database's WAL file (errno \(errno))")
            }
        }
        return Opened(pool: databasePool, walDescriptor: descriptor, wal: wal)
    }

    /// How a connection waits for another's write lock: processes on one machine write the same
    /// files, and a commit holds the lock for about one `fsync`.
    ///
    /// SQLite's own busy timeout sleeps 1, 2, 5, 10 ms and longer between tries, far longer than a
    /// commit holds the lock, so a waiting process idled while the file was free. This tries
    /// every 100 µs for the first 2 ms, then every millisecond, and gives up after about
    /// ``SQLiteDatabase/busyTimeout``.
    public enum BusyWait {
        static let quickTries = 20
        static let quickInterval: Duration = .microseconds(100)
        static let slowInterval: Duration = .milliseconds(1)
        static let slowTries = Int((busyTimeout - quickInterval * quickTries) / slowInterval)

        /// How long to sleep before try `tries + 1`, or `nil` to give up.
        public static func interval(afterTries tries: Int) -> Duration? {
            if tries < quickTries { return quickInterval }
            return tries < quickTries + slowTries ? slowInterval : nil
        }

        @Sendable static func shouldRetry(_ tries: Int) -> Bool {
            guard let interval = interval(afterTries: tries) else { return false }
            pause(interval)
            return true
        }

        /// Blocks the calling thread for `interval`.
        @Sendable public static func pause(_ interval: Duration) {
            usleep(UInt32(interval.wholeNanoseconds / 1000))
        }
    }
}
