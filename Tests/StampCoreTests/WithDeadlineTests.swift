import StampCore
import StampTesting
import Synchronization
import Testing

@Suite("A call under a deadline")
struct WithDeadlineTests {
    struct Failure: Error, Equatable {
        let reason: String
    }

    static let timedOut = Failure(reason: "timed out")

    @Test("a body that answers in time gives its answer, and its deadline stops waiting")
    func answerInTime() async throws {
        let clock = ManualClock()
        let release = Gate()
        let call = Task {
            try await withDeadline(.seconds(1), on: clock, timedOut: { Self.timedOut }) { () async throws(Failure) in
                await release.wait()
                return 42
            }
        }
        await clock.waitForSleepers(count: 1)
        release.open()
        #expect(try await call.value == 42)
        #expect(clock.sleeperCount == 0, "the deadline's timer was cancelled")
    }

    @Test("a body's error is thrown as it is")
    func failingBody() async {
        await #expect(throws: Failure(reason: "refused")) {
            try await withDeadline(.seconds(1), on: ManualClock(), timedOut: { Self.timedOut }) { () async throws(Failure) -> Int in
                throw Failure(reason: "refused")
            }
        }
    }

    @Test("a body that ignores cancellation cannot hold its caller past the deadline, and is cancelled")
    func hangingBody() async throws {
        let clock = ManualClock()
        let release = Gate()
        let (ended, end) = AsyncStream.makeStream(of: Bool.self)
        let call = Task {
            try await withDeadline(.seconds(2), on: clock, timedOut: { Self.timedOut }) { () async throws(Failure) in
                await release.wait()
                end.yield(Task.isCancelled)
                return 1
            }
        }
        await clock.waitForSleepers(count: 1)
        clock.advance(by: .seconds(2))
        await #expect(throws: Self.timedOut) { try await call.value }
        release.open()
        var endings = ended.makeAsyncIterator()
        #expect(await endings.next() == true, "the abandoned body was cancelled")
    }

    /// The deadline's timer runs on a task of its own and may fire before the body's task can be
    /// cancelled through it: a body must be cancelled however the two are ordered. A zero
    /// deadline makes the timer fire at once, so that both orders occur over many calls.
    @Test("a body is cancelled even when its deadline passes before the call has finished starting")
    func deadlineBeforeStart() async throws {
        let calls = 5_000
        let bodyClock = ManualClock()
        let never = ManualClock.Instant(offset: .seconds(3600))
        let uncancelled = Atomic(0)
        let (ended, end) = AsyncStream.makeStream(of: Void.self)
        for _ in 0..<calls {
            await #expect(throws: Self.timedOut) {
                try await withDeadline(.zero, on: ManualClock(), timedOut: { Self.timedOut }) { () async throws(Failure) in
                    try? await bodyClock.sleep(until: never)
                    if !Task.isCancelled { uncancelled.add(1, ordering: .relaxed) }
                    end.yield()
                    return 1
                }
            }
        }
        // Every call has returned, so every body has been cancelled or never will be: wake the
        // ones left asleep and count them.
        bodyClock.advance(by: .seconds(3600))
        var endings = ended.makeAsyncIterator()
        for _ in 0..<calls { await endings.next() }
        #expect(uncancelled.load(ordering: .relaxed) == 0)
    }
}

/// Holds its waiters until it is opened; unlike a stream, waiting on it ignores cancellation, as a
/// hung database call does.
private final class Gate: Sendable {
    private let state = Mutex<(isOpen: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, []))

    func wait() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let isOpen = state.withLock { state in
                if !state.isOpen { state.waiters.append(continuation) }
                return state.isOpen
            }
            if isOpen { continuation.resume() }
        }
    }

    func open() {
        let waiters = state.withLock { state in
            state.isOpen = true
            defer { state.waiters = [] }
            return state.waiters
        }
        waiters.forEach { $0.resume() }
    }
}
