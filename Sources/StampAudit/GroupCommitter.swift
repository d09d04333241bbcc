import Synchronization

/// Commits rows written by concurrent requests in groups: one transaction for many rows, so a
/// shard sustains far more writes per second than it has commits.
///
/// A row that finds fewer than `maxConcurrentCommits` commits running starts a leader task: it
/// commits up to `maxBatch` waiting rows at a time (rows written under one shard map version),
/// answers each row's writer, and goes on while rows wait. Writers either wait (``insert(_:mapVersion:)``)
/// or are called back (``submit(_:mapVersion:completion:)``, which never suspends: an HTTP handler
/// on an event loop calls it directly). A write is acknowledged only after the commit holding it.
///
/// What one write does never fails another: a group the database refuses is split and committed
/// again in halves until the refused rows stand alone. What a shard does never holds a writer
/// unbounded: past `maxWaiting` waiting rows a row is refused at once (`overloaded`), and a commit
/// call that has not returned after `commitTimeout` fails its group's rows and every waiting one
/// (`unavailable`); until it returns, new rows are refused at once.
public final class GroupCommitter: Sendable {
    public typealias Commit = @Sendable (_ rows: [AuditRow], _ mapVersion: Int) async throws(AuditStoreError) -> [AuditInsertOutcome]
    /// Told what became of a submitted row.
    public typealias Completion = @Sendable (Result<AuditInsertOutcome, AuditStoreError>) -> Void

    public let maxBatch: Int
    public let maxConcurrentCommits: Int
    public let maxWaiting: Int
    public let commitTimeout: Duration
    private let clock: any Clock<Duration>
    private let commit: Commit
    private let state = Mutex(State())

    private struct Waiter {
        let row: AuditRow
        let mapVersion: Int
        let completion: Completion
    }

    private struct State {
        var waiting: [Waiter] = []
        var head = 0
        var leaders = 0
        var commits = 0
        var rows = 0
        /// Commits past their timeout that have not returned yet.
        var overdue = 0

        var waitingCount: Int { waiting.count - head }

        /// Up to `count` waiting rows from the first on, all written under the first's map version.
        mutating func take(_ count: Int) -> ArraySlice<Waiter> {
            let version = waiting[head].mapVersion
            var end = head + 1
            while end < min(waiting.count, head + count), waiting[end].mapVersion == version {
                end += 1
            }
            let taken = waiting[head..<end]
            head = end
            if head == waiting.count {
                waiting.removeAll(keepingCapacity: true)
                head = 0
            } else if head > 1024, head * 2 > waiting.count {
                waiting.removeFirst(head)
                head = 0
            }
            return taken
        }

        mutating func takeAll() -> ArraySlice<Waiter> {
            defer {
                waiting.removeAll(keepingCapacity: true)
                head = 0
            }
            return waiting[head...]
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
    ///   - maxWaiting: Most rows waiting for a commit; a row past it is refused at once.
    ///   - commitTimeout: How long a commit may take before its rows are answered with a failure.
    ///   - clock: The clock `commitTimeout` is measured on.
    ///   - commit: Stores rows in one transaction; ``AuditStore/insert(_:mapVersion:)``.
    public init(
        maxBatch: Int = 512,
        maxConcurrentCommits: Int = 1,
        maxWaiting: Int = 8192,
        commitTimeout: Duration = .seconds(5),
        clock: any Clock<Duration> = ContinuousClock(),
        commit: @escaping Commit
    ) {
        precondition(maxBatch >= 1 && maxConcurrentCommits >= 1 && maxWaiting >= 1 && commitTimeout > .zero)
        self.maxBatch = maxBatch
        self.maxConcurrentCommits = maxConcurrentCommits
        self.maxWaiting = maxWaiting
        self.commitTimeout = commitTimeout
        self.clock = clock
        self.commit = commit
    }

    /// Stores `row`, written under version `mapVersion` of the shard map, in the next group and
    /// returns what became of it (see ``AuditStore/insert(_:mapVersion:)``), once the group's
    /// commit is done.
    public func insert(_ row: AuditRow, mapVersion: Int) async throws(AuditStoreError) -> AuditInsertOutcome {
        try await withCheckedContinuation { (continuation: CheckedContinuation<Result<AuditInsertOutcome, AuditStoreError>, Never>) in
            submit(row, mapVersion: mapVersion) { continuation.resume(returning: $0) }
        }.get()
    }

    /// Stores `row`, written under version `mapVersion` of the shard map, in the next group and
    /// calls `completion` with what became of it once the group's commit is done, or at once when
    /// the row is refused. Returns at once.
    public func submit(_ row: AuditRow, mapVersion: Int, completion: @escaping Completion) {
        enum Admission { case lead, queued, refused(AuditStoreError) }
        let admission = state.withLock { state -> Admission in
            if state.overdue > 0 {
                return .refused(timedOut)
            }
            guard state.waitingCount < maxWaiting else {
                return .refused(AuditStoreError(.overloaded, "\(maxWaiting) writes wait for this shard already"))
            }
            state.waiting.append(Waiter(row: row, mapVersion: mapVersion, completion: completion))
            guard state.leaders < maxConcurrentCommits else { return .queued }
            state.leaders += 1
            return .lead
        }
        switch admission {
        case .lead: Task { await self.lead() }
        case .queued: break
        case .refused(let error): completion(.failure(error))
        }
    }

    private var timedOut: AuditStoreError {
        AuditStoreError(.unavailable, "the shard's database did not finish a commit within \(commitTimeout)")
    }

    /// Whether a group's writers were answered (by its commit, or by its timeout), and whether a
    /// commit call of the group returned since the timeout last looked.
    private final class Ticket: Sendable {
        private let answered = Atomic(false)
        private let progressed = Atomic(false)

        /// True for the first caller only.
        func claim() -> Bool {
            !answered.exchange(true, ordering: .acquiringAndReleasing)
        }

        /// Notes that a commit call of the group returned.
        func noteProgress() {
            progressed.store(true, ordering: .releasing)
        }

        /// Whether a commit call returned since the last look.
        func takeProgress() -> Bool {
            progressed.exchange(false, ordering: .acquiringAndReleasing)
        }
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
            let ticket = Ticket()
            // Each commit call of the group (more than one when it is split) has `commitTimeout`.
            let deadline = Task { [clock, commitTimeout] in
                repeat {
                    guard (try? await clock.sleep(for: commitTimeout)) != nil else { return }
                } while ticket.takeProgress()
                self.expire(group, ticket)
            }
            let results = await commitIsolatingRefusals(group.map(\.row), mapVersion: group.first!.mapVersion, ticket: ticket)
            deadline.cancel()
            let answering = state.withLock { state -> Bool in
                state.commits += 1
                state.rows += group.count
                guard ticket.claim() else {
                    state.overdue -= 1
                    return false
                }
                return true
            }
            guard answering else { continue }
            for (waiter, result) in zip(group, results) {
                waiter.completion(result)
            }
        }
    }

    /// Fails `group` and every waiting row once `group`'s commit is past its timeout, unless the
    /// commit answered first; new rows are refused until the commit returns.
    private func expire(_ group: ArraySlice<Waiter>, _ ticket: Ticket) {
        let waiting = state.withLock { state -> ArraySlice<Waiter>? in
            guard ticket.claim() else { return nil }
            state.overdue += 1
            return state.takeAll()
        }
        guard let waiting else { return }
        let error = timedOut
        for waiter in group {
            waiter.completion(.failure(error))
        }
        for waiter in waiting {
            waiter.completion(.failure(error))
        }
    }

    /// Commits `rows`; when the database refuses the group, commits its halves in turn, down to
    /// single rows, so that only the rows it refuses fail.
    private func commitIsolatingRefusals(_ rows: [AuditRow], mapVersion: Int, ticket: Ticket) async -> [Result<AuditInsertOutcome, AuditStoreError>] {
        do throws(AuditStoreError) {
            defer { ticket.noteProgress() }
            return try await commit(rows, mapVersion).map { .success($0) }
        } catch let error where error.code == .rejected && rows.count > 1 {
            let half = rows.count / 2
            let first = await commitIsolatingRefusals(Array(rows[..<half]), mapVersion: mapVersion, ticket: ticket)
            return first + (await commitIsolatingRefusals(Array(rows[half...]), mapVersion: mapVersion, ticket: ticket))
        } catch {
            return Array(repeating: .failure(error), count: rows.count)
        }
    }
}
