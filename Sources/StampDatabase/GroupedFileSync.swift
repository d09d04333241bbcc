import Dispatch
import Synchronization

/// Makes a file's writes durable in groups: ``sync()`` returns once an `fsync` that began after
/// the call has completed, and every caller that asks while one runs shares the next.
///
/// This is how an SQLite file commits: each transaction commits without waiting for the disk
/// (`synchronous = NORMAL` in WAL mode, which holds the write lock only while the pages are
/// written), then its caller waits for the WAL file's next `fsync` before answering. The disk
/// sees one `fsync` per group of commits, from every connection and process, instead of one per
/// commit under the lock, and no commit is acknowledged before it is on disk.
public final class GroupedFileSync: Sendable {
    /// Flushes the file to disk, blocking its thread until done.
    public typealias SyncFile = @Sendable () throws -> Void

    private struct State {
        var running = false
        var waiting: [CheckedContinuation<Void, any Error>] = []
        var syncs = 0
    }

    private let syncFile: SyncFile
    private let state = Mutex(State())
    private let queue: DispatchQueue

    public init(label: String, syncFile: @escaping SyncFile) {
        self.syncFile = syncFile
        queue = DispatchQueue(label: label)
    }

    /// How many `fsync`s have completed.
    public var syncs: Int { state.withLock { $0.syncs } }

    /// How many callers wait for an `fsync` that has not begun.
    public var waitingCount: Int { state.withLock { $0.waiting.count } }

    /// Returns once everything written to the file before the call is on disk; throws what the
    /// `fsync` threw.
    public func sync() async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            let start = state.withLock { state -> Bool in
                state.waiting.append(continuation)
                guard !state.running else { return false }
                state.running = true
                return true
            }
            if start { syncWaiting() }
        }
    }

    /// Syncs for everyone waiting now (they all asked before this `fsync` begins), then for those
    /// who asked meanwhile, until none wait.
    private func syncWaiting() {
        let group = state.withLock { state in
            defer { state.waiting = [] }
            return state.waiting
        }
        queue.async { [self] in
            let result = Result { try syncFile() }
            let more = state.withLock { state -> Bool in
                state.syncs += 1
                if state.waiting.isEmpty {
                    state.running = false
                    return false
                }
                return true
            }
            for caller in group {
                caller.resume(with: result)
            }
            if more { syncWaiting() }
        }
    }
}
