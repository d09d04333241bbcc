import Logging
import SQLiteNIO
import StampCore
import Synchronization

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Lends up to `capacity` SQLite connections on one file, each to one operation at a time,
/// opening them on first use: the one place SQLite files are opened and set up.
///
/// Each connection waits up to ``busyTimeout`` for another connection's lock, runs in WAL mode and
/// commits with `synchronous = FULL`. With a capacity of 1 the pool is a gate: the store's one
/// connection, lent to one operation at a time.
///
/// A connection runs one statement at a time, and a transaction spans several statements, so an
/// operation holds its connection from start to end; operations beyond the capacity wait their
/// turn in order. Connections of other pools on the same file, in this process or another, wait
/// on SQLite's file locks instead.
///
/// Every connection runs its statements on a thread of its own. While SQLite waits for another
/// connection's lock it blocks that thread; on a shared thread pool, connections waiting for each
/// other in one process could take every thread, leaving the lock holder none to finish with.
public final class SQLiteConnectionPool: Sendable {
    private struct Opened: Sendable {
        var connection: SQLiteConnection
        var threadPool: NIOThreadPool
    }

    private struct State {
        /// Turns not taken; an operation takes one before it touches a connection.
        var freeTurns: Int
        var isClosed = false
        var idle: [Opened] = []
        var opened: [Opened] = []
        var waiters: [CheckedContinuation<Bool, Never>] = []
    }

    /// How long a statement waits for another connection's lock before failing with `SQLITE_BUSY`.
    public static let busyTimeout: Duration = .seconds(10)

    private let path: String
    private let capacity: Int
    private let setUp: [String]
    private let logger: Logger
    private let state: Mutex<State>

    /// Creates a pool of at most `capacity` connections to the file at `path`; each runs `setUp`
    /// once it is open, after the busy timeout, WAL mode and full synchronous commits are set.
    /// The file and its parent directories are created when the first connection opens.
    public init(path: String, capacity: Int, setUp: [String] = [], logger: Logger) {
        self.path = path
        self.capacity = capacity
        self.setUp = setUp
        self.logger = logger
        self.state = Mutex(State(freeTurns: capacity))
    }

    /// Runs `body` with a connection no other operation holds; fails with ``DatabaseError`` when
    /// the pool is closed or the file cannot be opened, and with what `body` or SQLite throws.
    public func withConnection<Result: Sendable>(_ body: (SQLiteConnection) async throws -> Result) async throws -> Result {
        guard await takeTurn(evenIfClosed: false) else {
            throw DatabaseError(.unavailable, "the SQLite database is closed")
        }
        defer { passTurn() }
        let opened = try await idleOrNewConnection()
        defer { state.withLock { $0.idle.append(opened) } }
        return try await body(opened.connection)
    }

    /// Runs `body` in a `BEGIN IMMEDIATE` transaction on a connection no other operation holds:
    /// commits when `body` returns and returns after the commit; rolls back when `body` throws.
    ///
    /// `BEGIN IMMEDIATE` takes the file's write lock at once, waiting up to ``busyTimeout`` for
    /// another connection to release it, so `body` runs with the lock held.
    public func withImmediateTransaction<Result: Sendable>(_ body: (SQLiteConnection) async throws -> Result) async throws -> Result {
        try await withConnection { connection in
            _ = try await connection.query("BEGIN IMMEDIATE")
            do {
                let result = try await body(connection)
                _ = try await connection.query("COMMIT")
                return result
            } catch {
                do {
                    _ = try await connection.query("ROLLBACK")
                } catch {
                    // Only the kind of failure: SQLite's messages may quote the statement.
                    logger.debug("rolling back an SQLite transaction failed", metadata: Self.metadata(error))
                }
                throw error
            }
        }
    }

    /// Waits for running operations, then closes every connection and stops its thread; later
    /// operations fail. Closing again does nothing.
    public func close() async {
        let wasClosed = state.withLock { state in
            defer { state.isClosed = true }
            return state.isClosed
        }
        if wasClosed { return }
        // Holding every turn, for good, leaves no operation running and none to come.
        for _ in 0..<capacity {
            _ = await takeTurn(evenIfClosed: true)
        }
        let opened = state.withLock { state in
            defer { (state.opened, state.idle) = ([], []) }
            return state.opened
        }
        for each in opened {
            do {
                // The future form: the async one refuses to run in a cancelled task, and closing
                // often happens in one (a service group shutting down).
                try await each.connection.close().get()
                try await each.threadPool.shutdownGracefully()
            } catch {
                logger.debug("closing an SQLite connection failed", metadata: ["stamp.error": "\(error)"])
            }
        }
    }

    deinit {
        // A pool dropped without close() still stops its threads.
        for each in state.withLock({ $0.opened }) {
            each.threadPool.shutdownGracefully { _ in }
        }
    }

    /// What may be logged about `error`: its kind, never its message.
    public static func metadata(_ error: any Error) -> Logger.Metadata {
        if let error = error as? SQLiteError { return ["stamp.sqlite.reason": "\(error.reason)"] }
        return ["stamp.error.type": "\(type(of: error))"]
    }

    private func idleOrNewConnection() async throws -> Opened {
        if let idle = state.withLock({ $0.idle.popLast() }) { return idle }
        try createParentDirectory()
        let threadPool = NIOThreadPool(numberOfThreads: 1)
        threadPool.start()
        let connection: SQLiteConnection
        do {
            connection = try await SQLiteConnection.open(
                storage: .file(path: path),
                threadPool: threadPool,
                logger: logger,
                on: MultiThreadedEventLoopGroup.singleton.any()
            )
        } catch {
            try? await threadPool.shutdownGracefully()
            throw error
        }
        do {
            // The busy timeout comes first: switching to WAL needs a lock another connection may hold.
            _ = try await connection.query("PRAGMA busy_timeout = \(Self.busyTimeout.wholeMilliseconds)")
            _ = try await connection.query("PRAGMA journal_mode = WAL")
            _ = try await connection.query("PRAGMA synchronous = FULL")
            for statement in setUp {
                _ = try await connection.query(statement)
            }
        } catch {
            try? await connection.close()
            try? await threadPool.shutdownGracefully()
            throw error
        }
        let opened = Opened(connection: connection, threadPool: threadPool)
        state.withLock { $0.opened.append(opened) }
        return opened
    }

    private func createParentDirectory() throws {
        guard let slash = path.lastIndex(of: "/"), slash != path.startIndex else { return }
        let directory = String(path[..<slash])
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw DatabaseError(.unavailable, "could not create the directory for the SQLite database", cause: error)
        }
    }

    /// Waits for a turn; `false`, at once, when the pool is closed and `evenIfClosed` is not set.
    ///
    /// The check and the queueing happen under one lock, so no operation queues behind ``close()``.
    private func takeTurn(evenIfClosed: Bool) async -> Bool {
        await withCheckedContinuation { (continuation: CheckedContinuation<Bool, Never>) in
            let answer = state.withLock { state -> Bool? in
                if state.isClosed && !evenIfClosed { return false }
                if state.freeTurns == 0 {
                    state.waiters.append(continuation)
                    return nil
                }
                state.freeTurns -= 1
                return true
            }
            if let answer { continuation.resume(returning: answer) }
        }
    }

    private func passTurn() {
        // The next waiter inherits the turn, so no newcomer can slip in between.
        let next = state.withLock { state -> CheckedContinuation<Bool, Never>? in
            if state.waiters.isEmpty {
                state.freeTurns += 1
                return nil
            }
            return state.waiters.removeFirst()
        }
        next?.resume(returning: true)
    }
}
