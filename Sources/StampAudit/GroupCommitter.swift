import Synchronization

/// Commits rows written by concurrent requests in groups: one transaction for many rows, so a
/// shard sustains far more writes per second than it has commits.
///
/// A row that finds fewer than `maxConcurrentCommits` commits running starts a leader task: it
/// commits up to `maxBatch` waiting rows at a time, answers each row's writer, and goes on while
/// rows wait. Writers either wait (``insert(_:)``) or are called back (``submit(_:completion:)``,
/// which never suspends: an HTTP handler on an event loop calls it directly). A write is
/// acknowledged only after the commit holding it, and a failed commit fails exactly the rows it held.
public final class GroupCommitter: Sendable {
    public typealias Commit = @Sendable ([AuditRow]) async throws(AuditStoreError) -> [AuditInsertOutcome]
    /// Told what became of a submitted row.
    public typealias Completion = @Sendable (Result<AuditInsertOutcome, AuditStoreError>) -> Void

    public let maxBatch: Int
    public let maxConcurrentCommits: Int
    private let commit: Commit
    private let state = Mutex(State())

    private struct Waiter {
        let row: AuditRow
        let completion: Completion
    }

    private struct State {
        var waiting: [Waiter] = []
        var head = 0
        var leaders = 0
        var commits = 0
        var rows = 0

        var waitingCount: Int { waiting.count - head }

        mutating func take(_ count: Int) -> ArraySlice<Waiter> {
            let taken = waiting[head..<min(waiting.count, head + count)]
            head += taken.count
            if head == waiting.count {
                waiting.removeAll(keepingCapacity: true)
                head = 0
            } else if head > 1024, head * 2 > waiting.count {
                waiting.removeFirst(head)
                head = 0
            }
            return taken
        }
    }

    /// Rows waiting for a commit now.
    public var waiting: Int { state.withLock { $0.waitingCount } }

    /// Counts of commits made and rows they held, for metrics and tests.
    public var statistics: (commits: Int, rows: Int) { state.withLock { ($0.commits, $0.rows) } }

    /// - Parameters:
    ///   - maxBatch: Most rows in one commit.
    ///   - maxConcurrentCommits: Most commits running at once: a few, so that one group is
    ///     written while the one before waits for the disk (SQLite runs them on its one writer
    ///     in turn; PostgreSQL runs them side by side).
    ///   - commit: Stores rows in one transaction; ``AuditStore/insert(_:)``.
    public init(maxBatch: Int = 512, maxConcurrentCommits: Int = 1, commit: @escaping Commit) {
        precondition(maxBatch >= 1 && maxConcurrentCommits >= 1)
        self.maxBatch = maxBatch
        self.maxConcurrentCommits = maxConcurrentCommits
        self.commit = commit
    }

    /// Stores `row` in the next group and returns what became of it (see
    /// ``AuditStore/insert(_:)``), once the group's commit is done.
    public func insert(_ row: AuditRow) async throws(AuditStoreError) -> AuditInsertOutcome {
        try await withCheckedContinuation { (continuation: CheckedContinuation<Result<AuditInsertOutcome, AuditStoreError>, Never>) in
            submit(row) { continuation.resume(returning: $0) }
        }.get()
    }

    /// Stores `row` in the next group and calls `completion` with what became of it once the
    /// group's commit is done. Returns at once.
    public func submit(_ row: AuditRow, completion: @escaping Completion) {
        let lead = state.withLock { state -> Bool in
            state.waiting.append(Waiter(row: row, completion: completion))
            guard state.leaders < maxConcurrentCommits else { return false }
            state.leaders += 1
            return true
        }
        if lead { Task { await self.lead() } }
    }

    /// Commits groups of waiting rows, answering their writers, until no row waits.
    private func lead() async {
        while true {
            let group = state.withLock { state -> ArraySlice<Waiter>? in
                guard state.waitingCount > 0 else {
                    state.leaders -= 1
                    return nil
                }
                return state.take(maxBatch)
            }
            guard let group else { return }
            let rows = group.map(\.row)
            let result: Result<[AuditInsertOutcome], AuditStoreError>
            do throws(AuditStoreError) {
                result = .success(try await commit(rows))
            } catch {
                result = .failure(error)
            }
            state.withLock { state in
                state.commits += 1
                state.rows += rows.count
            }
            for (offset, waiter) in group.enumerated() {
                waiter.completion(result.map { $0[offset] })
            }
        }
    }
}
