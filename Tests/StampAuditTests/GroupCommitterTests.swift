import StampAudit
import StampCore
import StampTesting
import Synchronization
import Testing

@Suite struct GroupCommitterTests {
    /// A commit function that holds each commit until the test releases it, and records batches.
    final class GatedCommits: Sendable {
        private let state = Mutex<(batches: [[Int64]], gates: [CheckedContinuation<Void, Never>], failing: Set<Int64>)>(([], [], []))
        private let started: AsyncStream<Int>
        private let startedContinuation: AsyncStream<Int>.Continuation
        private let isOpen = Atomic(false)

        init(failing: Set<Int64> = []) {
            (started, startedContinuation) = AsyncStream.makeStream()
            state.withLock { $0.failing = failing }
        }

        var batches: [[Int64]] { state.withLock { $0.batches } }

        func commit(_ rows: [AuditRow]) async throws(AuditStoreError) -> [AuditInsertOutcome] {
            let ids = rows.map(\.id.rawValue)
            let count = state.withLock { state in
                state.batches.append(ids)
                return state.batches.count
            }
            if isOpen.load(ordering: .acquiring) {
                startedContinuation.yield(count)
            } else {
                await withCheckedContinuation { continuation in
                    state.withLock { $0.gates.append(continuation) }
                    startedContinuation.yield(count)
                }
            }
            if state.withLock({ !$0.failing.isDisjoint(with: ids) }) {
                throw AuditStoreError(.unavailable, "refused")
            }
            // Odd IDs stand for rows whose key was taken.
            return ids.map { $0 % 2 == 0 ? .stored : .repeated }
        }

        /// Waits until `count` commits have started.
        func waitForCommits(_ count: Int) async {
            for await started in started where started >= count { return }
        }

        /// Lets every waiting commit finish, and every later one run without waiting.
        func open() {
            isOpen.store(true, ordering: .releasing)
            release()
        }

        /// Lets every waiting commit finish.
        func release() {
            for gate in state.withLock({ state in defer { state.gates = [] }; return state.gates }) {
                gate.resume()
            }
        }
    }

    static func row(_ id: Int64) -> AuditRow {
        AuditRow(id: StampID(rawValue: id)!, user: "u", field: "f", actor: "a", reason: "", before: nil, after: [1], idempotencyKey: "k\(id)", requestDigest: [])
    }

    @Test func rowsArrivingDuringACommitGoInTheNextOneTogether() async throws {
        let commits = GatedCommits()
        let committer = GroupCommitter(maxBatch: 100) { rows, _ throws(AuditStoreError) in try await commits.commit(rows) }
        try await withThrowingTaskGroup(of: (Int64, AuditInsertOutcome).self) { group in
            group.addTask { (2, try await committer.insert(Self.row(2), mapVersion: 1)) }
            await commits.waitForCommits(1)
            // While the first commit runs, 20 more rows queue up.
            for id in Int64(3)...22 {
                group.addTask { (id, try await committer.insert(Self.row(id), mapVersion: 1)) }
            }
            while committer.waiting < 20 { await Task.yield() }
            commits.release()
            await commits.waitForCommits(2)
            commits.release()
            var results: [Int64: AuditInsertOutcome] = [:]
            for try await (id, stored) in group { results[id] = stored }
            #expect(results.count == 21)
            #expect(results.allSatisfy { $0.value == ($0.key % 2 == 0 ? .stored : .repeated) }, "each row gets its own answer")
        }
        #expect(commits.batches.count == 2)
        #expect(commits.batches[0] == [2])
        #expect(commits.batches[1].count == 20, "the waiting rows were committed as one group")
        #expect(committer.statistics == (commits: 2, rows: 21))
    }

    @Test func aFailedCommitFailsExactlyItsRows() async throws {
        let commits = GatedCommits(failing: [5])
        let committer = GroupCommitter(maxBatch: 3) { rows, _ throws(AuditStoreError) in try await commits.commit(rows) }
        try await withThrowingTaskGroup(of: (Int64, AuditInsertOutcome?).self) { group in
            group.addTask { (2, try? await committer.insert(Self.row(2), mapVersion: 1)) }
            await commits.waitForCommits(1)
            for id in Int64(4)...8 {
                group.addTask { (id, try? await committer.insert(Self.row(id), mapVersion: 1)) }
            }
            while committer.waiting < 5 { await Task.yield() }
            // Batches of at most 3 rows: [2], then three of 4...8 (one of them 5, which fails), then the other two.
            commits.release()
            for count in 2...3 {
                await commits.waitForCommits(count)
                commits.release()
            }
            var results: [Int64: AuditInsertOutcome?] = [:]
            for try await (id, stored) in group { results[id] = stored }
            let failedBatch = try #require(commits.batches.first { $0.contains(5) })
            #expect(failedBatch.count == 3)
            for id in Int64(4)...8 {
                #expect((results[id]! == nil) == failedBatch.contains(id), "row \(id)")
            }
        }
        #expect(commits.batches.map(\.count) == [1, 3, 2])
    }
    /// A submitted row's writer is called back once its commit is done, never before, with the
    /// row's own outcome; rows submitted during a commit go in the next one together.
    @Test func submittedRowsAreAnsweredAfterTheirCommit() async throws {
        let commits = GatedCommits()
        let committer = GroupCommitter(maxBatch: 100) { rows, _ throws(AuditStoreError) in try await commits.commit(rows) }
        let answers = Mutex<[Int64: AuditInsertOutcome]>([:])
        let (done, finished) = AsyncStream.makeStream(of: Void.self)
        for id in Int64(2)...11 {
            committer.submit(Self.row(id), mapVersion: 1) { result in
                let count = answers.withLock { answers in
                    answers[id] = try? result.get()
                    return answers.count
                }
                if count == 10 { finished.yield() }
            }
            if id == 2 { await commits.waitForCommits(1) }
        }
        #expect(committer.waiting == 9)
        #expect(answers.withLock { $0.isEmpty }, "no row is answered before its commit")
        commits.release()
        await commits.waitForCommits(2)
        #expect(answers.withLock { $0.keys.sorted() } == [2], "the first commit answered its own row only")
        commits.release()
        for await _ in done { break }
        #expect(answers.withLock { $0 }.allSatisfy { $0.value == ($0.key % 2 == 0 ? .stored : .repeated) })
        #expect(commits.batches.map(\.count) == [1, 9])
    }

    /// Submits `id` and returns a stream that yields its result once.
    static func submit(_ committer: GroupCommitter, _ id: Int64, mapVersion: Int = 1) -> AsyncStream<Result<AuditInsertOutcome, AuditStoreError>> {
        let (stream, continuation) = AsyncStream.makeStream(of: Result<AuditInsertOutcome, AuditStoreError>.self)
        committer.submit(row(id), mapVersion: mapVersion) { result in
            continuation.yield(result)
            continuation.finish()
        }
        return stream
    }

    static func first(_ stream: AsyncStream<Result<AuditInsertOutcome, AuditStoreError>>) async -> Result<AuditInsertOutcome, AuditStoreError>? {
        for await result in stream { return result }
        return nil
    }

    /// A row the database refuses (a constraint, bad bytes) fails alone: the group holding it is
    /// committed again in halves, and every other row of it is stored.
    @Test func aRowTheDatabaseRefusesFailsAlone() async throws {
        let commits = GatedCommits()
        let committer = GroupCommitter(maxBatch: 100) { rows, _ throws(AuditStoreError) in
            let outcomes = try await commits.commit(rows)
            if rows.contains(where: { $0.id.rawValue == 8 }) { throw AuditStoreError(.rejected, "refused") }
            return outcomes
        }
        let first = Self.submit(committer, 2)
        await commits.waitForCommits(1)
        let queued = (Int64(4)...19).filter { $0 % 2 == 0 }.map { ($0, Self.submit(committer, $0)) }
        while committer.waiting < queued.count { await Task.yield() }
        commits.open()
        #expect(try await Self.first(first)?.get() == .stored)
        var failed: [Int64] = []
        for (id, stream) in queued {
            switch await Self.first(stream) {
            case .success(let outcome): #expect(outcome == .stored)
            case .failure(let error): #expect(error.code == .rejected); failed.append(id)
            case nil: Issue.record("row \(id) got no answer")
            }
        }
        #expect(failed == [8])
        #expect(commits.batches[1].count == 8, "the queued rows were tried as one group first")
    }

    /// Rows are committed in groups of one shard map version: the store checks that version
    /// against the newest its shard holds.
    @Test func rowsOfAnotherMapVersionGoInAGroupOfTheirOwn() async throws {
        let commits = GatedCommits()
        let versions = Mutex<[Int]>([])
        let committer = GroupCommitter(maxBatch: 100) { rows, mapVersion throws(AuditStoreError) in
            versions.withLock { $0.append(mapVersion) }
            return try await commits.commit(rows)
        }
        let streams = [Self.submit(committer, 2, mapVersion: 1)]
        await commits.waitForCommits(1)
        let queued = [(4, 1), (6, 1), (8, 2), (10, 2), (12, 1)].map { Self.submit(committer, Int64($0.0), mapVersion: $0.1) }
        while committer.waiting < 5 { await Task.yield() }
        for count in 2...4 {
            commits.release()
            await commits.waitForCommits(count)
        }
        commits.release()
        for stream in streams + queued {
            #expect(try await Self.first(stream)?.get() == .stored)
        }
        #expect(commits.batches == [[2], [4, 6], [8, 10], [12]])
        #expect(versions.withLock { $0 } == [1, 1, 2, 1])
    }

    /// Past `maxWaiting` waiting rows, a row is refused at once instead of queueing without bound.
    @Test func pastMaxWaitingARowIsRefusedAtOnce() async throws {
        let commits = GatedCommits()
        let committer = GroupCommitter(maxBatch: 100, maxWaiting: 3) { rows, _ throws(AuditStoreError) in try await commits.commit(rows) }
        let first = Self.submit(committer, 2)
        await commits.waitForCommits(1)
        let queued = [4, 6, 8].map { Self.submit(committer, Int64($0)) }
        let refused = await Self.first(Self.submit(committer, 10))
        #expect(throws: AuditStoreError.self) { try refused?.get() }
        if case .failure(let error) = refused { #expect(error.code == .overloaded) }
        commits.release()
        await commits.waitForCommits(2)
        commits.release()
        for stream in [first] + queued {
            #expect(try await Self.first(stream)?.get() == .stored)
        }
        #expect(commits.batches == [[2], [4, 6, 8]])
    }

    /// A commit that never returns holds nobody past its timeout: its rows and every waiting row
    /// fail as unavailable, new rows are refused at once while it hangs, and rows are taken again
    /// once it returns.
    @Test func aCommitThatNeverReturnsFailsItsRowsAtTheTimeout() async throws {
        let commits = GatedCommits()
        let clock = ManualClock()
        let committer = GroupCommitter(maxBatch: 100, commitTimeout: .seconds(5), clock: clock) { rows, _ throws(AuditStoreError) in try await commits.commit(rows) }
        let hung = Self.submit(committer, 2)
        await commits.waitForCommits(1)
        let queued = [4, 6].map { Self.submit(committer, Int64($0)) }
        await clock.waitForSleepers(count: 1)
        clock.advance(by: .seconds(5))
        for stream in [hung] + queued {
            let result = await Self.first(stream)
            guard case .failure(let error) = result else {
                Issue.record("expected a failure, got \(String(describing: result))")
                continue
            }
            #expect(error.code == .unavailable)
        }
        guard case .failure(let refused) = await Self.first(Self.submit(committer, 8)) else {
            Issue.record("a row was taken while the commit hangs")
            return
        }
        #expect(refused.code == .unavailable)
        commits.release()
        while committer.statistics.commits < 1 { await Task.yield() }
        let later = Self.submit(committer, 10)
        await commits.waitForCommits(2)
        commits.release()
        #expect(try await Self.first(later)?.get() == .stored)
        #expect(commits.batches == [[2], [10]])
    }
}
