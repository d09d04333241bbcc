import Synchronization

/// Commits rows written by concurrent requests in groups: one transaction for many rows, so a
/// shard sustains far more writes per second than it has commits.
///
/// There is no background task. A request that finds fewer than `maxConcurrentCommits` commits
/// running leads: it commits its own row with up to `maxBatch - 1` rows that are waiting, then
/// hands the lead to the oldest request still waiting, if any. Every other request waits until a
/// leader has committed its row. A write is acknowledged only after the commit holding it, and a
/// failed commit fails exactly the rows it held.
public final class GroupCommitter: Sendable {
    public typealias Commit = @Sendable ([AuditRow]) async throws(AuditStoreError) -> [AuditInsertOutcome]

    public let maxBatch: Int
    public let maxConcurrentCommits: Int
    private let commit: Commit
    private let state = Mutex(State())

    private enum Signal {
        case done(Result<AuditInsertOutcome, AuditStoreError>)
        case lead
    }

    private struct Waiter {
        let row: AuditRow
        let continuation: CheckedContinuation<Signal, Never>
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
        let signal = await withCheckedContinuation { (continuation: CheckedContinuation<Signal, Never>) in
            let lead = state.withLock { state -> Bool in
                if state.leaders < maxConcurrentCommits {
                    state.leaders += 1
                    return true
                }
                state.waiting.append(Waiter(row: row, continuation: continuation))
                return false
            }
            if lead { continuation.resume(returning: .lead) }
        }
        switch signal {
        case .done(let result):
            return try result.get()
        case .lead:
            return try await lead(with: row).get()
        }
    }

    /// Commits `own` with the oldest waiting rows, answers their requests, and passes the lead on.
    private func lead(with own: AuditRow) async -> Result<AuditInsertOutcome, AuditStoreError> {
        let followers = state.withLock { $0.take(maxBatch - 1) }
        let rows = [own] + followers.map(\.row)
        let result: Result<[AuditInsertOutcome], AuditStoreError>
        do throws(AuditStoreError) {
            result = .success(try await commit(rows))
        } catch {
            result = .failure(error)
        }
        for (offset, follower) in followers.enumerated() {
            follower.continuation.resume(returning: .done(result.map { $0[offset + 1] }))
        }
        let next = state.withLock { state -> Waiter? in
            state.commits += 1
            state.rows += rows.count
            if state.waitingCount > 0 { return state.take(1).first }
            state.leaders -= 1
            return nil
        }
        next?.continuation.resume(returning: .lead)
        return result.map { $0[0] }
    }
}
