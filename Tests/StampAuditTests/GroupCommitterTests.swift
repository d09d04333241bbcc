import StampAudit
import StampCore
import Synchronization
import Testing

@Suite struct GroupCommitterTests {
    /// A commit function that holds each commit until the test releases it, and records batches.
    final class GatedCommits: Sendable {
        private let state = Mutex<(batches: [[Int64]], gates: [CheckedContinuation<Void, Never>], failing: Set<Int64>)>(([], [], []))
        private let started: AsyncStream<Int>
        private let startedContinuation: AsyncStream<Int>.Continuation

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
            await withCheckedContinuation { continuation in
                state.withLock { $0.gates.append(continuation) }
                startedContinuation.yield(count)
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
        let committer = GroupCommitter(maxBatch: 100) { rows throws(AuditStoreError) in try await commits.commit(rows) }
        try await withThrowingTaskGroup(of: (Int64, AuditInsertOutcome).self) { group in
            group.addTask { (2, try await committer.insert(Self.row(2))) }
            await commits.waitForCommits(1)
            // While the first commit runs, 20 more rows queue up.
            for id in Int64(3)...22 {
                group.addTask { (id, try await committer.insert(Self.row(id))) }
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
        let committer = GroupCommitter(maxBatch: 3) { rows throws(AuditStoreError) in try await commits.commit(rows) }
        try await withThrowingTaskGroup(of: (Int64, AuditInsertOutcome?).self) { group in
            group.addTask { (2, try? await committer.insert(Self.row(2))) }
            await commits.waitForCommits(1)
            for id in Int64(4)...8 {
                group.addTask { (id, try? await committer.insert(Self.row(id))) }
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
        let committer = GroupCommitter(maxBatch: 100) { rows throws(AuditStoreError) in try await commits.commit(rows) }
        let answers = Mutex<[Int64: AuditInsertOutcome]>([:])
        let (done, finished) = AsyncStream.makeStream(of: Void.self)
        for id in Int64(2)...11 {
            committer.submit(Self.row(id)) { result in
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
}
