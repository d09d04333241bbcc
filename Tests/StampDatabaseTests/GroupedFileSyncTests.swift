import Dispatch
import StampDatabase
import Synchronization
import Testing

@Suite struct GroupedFileSyncTests {
    /// An `fsync` stand-in that blocks until the test lets it go, and says when each one begins.
    final class GatedSync: Sendable {
        private let gate = DispatchSemaphore(value: 0)
        private let started = Mutex(0)
        let began: AsyncStream<Int>
        private let beganContinuation: AsyncStream<Int>.Continuation

        init() {
            (began, beganContinuation) = AsyncStream.makeStream()
        }

        /// Runs on the sync's own thread, blocked until released.
        func sync() {
            beganContinuation.yield(started.withLock { started in
                started += 1
                return started
            })
            gate.wait()
        }

        func release() {
            gate.signal()
        }

        var count: Int { started.withLock { $0 } }
    }

    /// Records the order things finished in.
    final class Finished: Sendable {
        let order = Mutex<[String]>([])
        func add(_ name: String) { order.withLock { $0.append(name) } }
    }

    @Test func callersWhoAskDuringAnFsyncShareTheNextOne() async throws {
        let gate = GatedSync()
        let sync = GroupedFileSync(label: "test") { gate.sync() }
        let finished = Finished()
        var began = gate.began.makeAsyncIterator()
        try await withThrowingTaskGroup { group in
            group.addTask { try await sync.sync(); finished.add("first") }
            #expect(await began.next() == 1)
            // The first fsync may have begun before these writes: they need the next one.
            for name in ["second", "third", "fourth"] {
                group.addTask { try await sync.sync(); finished.add(name) }
            }
            while sync.waitingCount < 3 { await Task.yield() }
            gate.release()
            #expect(await began.next() == 2)
            #expect(finished.order.withLock { $0 }.allSatisfy { $0 == "first" }, "the others wait for an fsync that began after they asked")
            gate.release()
            try await group.waitForAll()
        }
        #expect(gate.count == 2, "three callers, one fsync")
        #expect(sync.syncs == 2)
        #expect(finished.order.withLock { $0 }.sorted() == ["first", "fourth", "second", "third"])
    }

    @Test func aFailedFsyncFailsItsCallersAndNotTheNext() async throws {
        struct DiskFull: Error {}
        let failing = Mutex(true)
        let sync = GroupedFileSync(label: "test") {
            if failing.withLock({ $0 }) { throw DiskFull() }
        }
        await #expect(throws: DiskFull.self) { try await sync.sync() }
        failing.withLock { $0 = false }
        try await sync.sync()
        #expect(sync.syncs == 2)
    }
}
