import Logging
import SQLiteNIO
import StampCoordination
import Synchronization

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Lends the store's one SQLite connection to one operation at a time, opening it on first use.
///
/// A connection runs one statement at a time, and a transaction spans several statements, so
/// operations of one store take turns. Other stores on the same file, in this process or another,
/// hold connections of their own and wait on SQLite's file locks instead.
///
/// The connection runs its statements on a thread of its own. While SQLite waits for another
/// connection's lock it blocks that thread; on a shared pool, stores waiting for each other in one
/// process could take every thread, leaving the lock holder none to finish its transaction.
final class ConnectionGate: Sendable {
    private struct State {
        var isHeld = false
        var isClosed = false
        var connection: SQLiteConnection?
        var threadPool: NIOThreadPool?
        var waiters: [CheckedContinuation<Void, Never>] = []
    }

    /// How long a statement waits for another connection's lock before failing with `SQLITE_BUSY`.
    static let busyTimeoutMilliseconds = 10_000

    private let path: String
    private let logger: Logger
    private let state = Mutex(State())

    init(path: String, logger: Logger) {
        self.path = path
        self.logger = logger
    }

    /// Runs `body` with the connection once no other operation of this store holds it.
    func withConnection<Result: Sendable>(_ body: (SQLiteConnection) async throws -> Result) async throws -> Result {
        await acquire()
        defer { relinquish() }
        return try await body(try await openedConnection())
    }

    /// Waits for running operations, then closes the connection and stops its thread; later operations fail.
    func close() async {
        await acquire()
        defer { relinquish() }
        let (connection, threadPool) = state.withLock { state in
            state.isClosed = true
            defer { (state.connection, state.threadPool) = (nil, nil) }
            return (state.connection, state.threadPool)
        }
        do {
            // The future form: the async one refuses to run in a cancelled task and would leave
            // the connection open.
            try await connection?.close().get()
            try await threadPool?.shutdownGracefully()
        } catch {
            logger.debug("closing the SQLite connection failed", metadata: ["stamp.error": "\(error)"])
        }
    }

    deinit {
        // A store dropped without close() still stops its thread.
        state.withLock { $0.threadPool }?.shutdownGracefully { _ in }
    }

    private func openedConnection() async throws -> SQLiteConnection {
        let (connection, isClosed) = state.withLock { ($0.connection, $0.isClosed) }
        if isClosed { throw CoordinationError(.unavailable, "the SQLite store is closed") }
        if let connection { return connection }
        try createParentDirectory()
        let threadPool = NIOThreadPool(numberOfThreads: 1)
        threadPool.start()
        let opened: SQLiteConnection
        do {
            opened = try await SQLiteConnection.open(
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
            _ = try await opened.query("PRAGMA busy_timeout = \(Self.busyTimeoutMilliseconds)")
            _ = try await opened.query("PRAGMA journal_mode = WAL")
            _ = try await opened.query("PRAGMA synchronous = FULL")
        } catch {
            try? await opened.close()
            try? await threadPool.shutdownGracefully()
            throw error
        }
        state.withLock { state in (state.connection, state.threadPool) = (opened, threadPool) }
        return opened
    }

    private func createParentDirectory() throws {
        guard let slash = path.lastIndex(of: "/"), slash != path.startIndex else { return }
        let directory = String(path[..<slash])
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw CoordinationError(.unavailable, "could not create the directory for the SQLite store", cause: error)
        }
    }

    private func acquire() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let isFree = state.withLock { state in
                if state.isHeld {
                    state.waiters.append(continuation)
                    return false
                }
                state.isHeld = true
                return true
            }
            if isFree { continuation.resume() }
        }
    }

    private func relinquish() {
        // The next waiter inherits the hold, so no newcomer can slip in between.
        let next = state.withLock { state -> CheckedContinuation<Void, Never>? in
            if state.waiters.isEmpty {
                state.isHeld = false
                return nil
            }
            return state.waiters.removeFirst()
        }
        next?.resume()
    }
}
