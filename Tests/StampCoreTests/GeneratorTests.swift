import Dispatch
import Foundation
import StampCore
import StampTesting
import Synchronization
import Testing

@Suite("Generator")
struct GeneratorTests {
    static let start: Int64 = 1_767_225_600_000

    /// Random wall-clock walks, with forward moves and backward steps of 1 ms, 5 ms, 1 s and more than
    /// the maximum lead: IDs never repeat and always rise, and a request is refused exactly when its
    /// last ID would put logical time more than `maxLead` ahead of the wall clock.
    @Test(arguments: [1 as UInt64, 2, 3, 4, 5, 6, 7, 8])
    func randomClockWalks(seed: UInt64) throws {
        var random = SeededRandom(seed: seed)
        let maxLead: Int64 = 1000
        let layout = IDLayout.default
        let clock = ManualWallClock(unixMilliseconds: Self.start)
        let generator = try IDGenerator(layout: layout, node: 3, maxLeadMilliseconds: maxLead, wallClock: clock)
        var lastID: Int64 = -1
        var lastPosition: (time: Int64, sequence: Int64) = (-1, layout.maxSequence)
        var issued = 0, refusals = 0, backwardSteps: UInt64 = 0, observed = false
        var orderViolations = 0, fieldViolations = 0, leadViolations = 0

        for _ in 0..<2000 {
            let before = clock.unixMilliseconds()
            switch Int.random(in: 0..<100, using: &random) {
            case 0..<50: clock.advance(milliseconds: Int64.random(in: 0...3, using: &random))
            case 50..<60: clock.advance(milliseconds: -1)
            case 60..<66: clock.advance(milliseconds: -5)
            case 66..<69: clock.advance(milliseconds: -1000)
            case 69..<71: clock.advance(milliseconds: -(maxLead + Int64.random(in: 1...2000, using: &random)))
            case 71..<80: clock.advance(milliseconds: Int64.random(in: 100...3000, using: &random))
            default: break
            }
            if observed, clock.unixMilliseconds() < before { backwardSteps += 1 }
            observed = true
            let wall = clock.unixMilliseconds() - layout.epochUnixMilliseconds
            let count = [1, 1, 7, 100, 4096, 20_000][Int.random(in: 0..<6, using: &random)]
            let shard = Int.random(in: 0...layout.maxShard, using: &random)

            // The expected decision, worked out from the rule of DESIGN.md.
            let start: (time: Int64, sequence: Int64) =
                wall > lastPosition.time ? (wall, 0)
                : lastPosition.sequence < layout.maxSequence ? (lastPosition.time, lastPosition.sequence + 1)
                : (lastPosition.time + 1, 0)
            let endTime = start.time + (start.sequence + Int64(count) - 1) / layout.idsPerMillisecond
            let shouldRefuse = endTime - wall > maxLead

            do {
                let ids = try generator.next(shard: shard, count: count)
                #expect(!shouldRefuse, "issued although the lead would be \(endTime - wall) ms")
                #expect(ids.count == count)
                for id in ids {
                    if id.rawValue <= lastID { orderViolations += 1 }
                    lastID = id.rawValue
                    let fields = id.fields(in: layout)
                    if fields.shard != shard || fields.node != 3 { fieldViolations += 1 }
                    if fields.time - wall > maxLead { leadViolations += 1 }
                }
                lastPosition = ids.last!.position(in: layout)
                #expect(ids.first!.position(in: layout) == start)
                issued += count
            } catch {
                #expect(shouldRefuse, "refused (\(error)) although the lead would be \(endTime - wall) ms")
                #expect(error.code == .leadExceeded)
                #expect(error.retryAfterMilliseconds == endTime - wall - maxLead)
                refusals += 1
            }
        }
        #expect(orderViolations == 0)
        #expect(fieldViolations == 0)
        #expect(leadViolations == 0)
        let statistics = generator.statistics
        #expect(statistics.issued == UInt64(issued))
        #expect(statistics.refusals == UInt64(refusals))
        #expect(statistics.backwardSteps == backwardSteps)
        #expect(issued > 0 && refusals > 0, "the walk should exercise both outcomes")
    }

    @Test func sequenceExhaustionBorrowsThenWaits() throws {
        let layout = IDLayout.default
        let clock = ManualWallClock(unixMilliseconds: Self.start)
        let generator = try IDGenerator(layout: layout, node: 1, maxLeadMilliseconds: 2, wallClock: clock)
        let now = Self.start - layout.epochUnixMilliseconds

        let first = try (0..<4096).map { _ in try generator.next(shard: 0) }
        #expect(first.map { $0.fields(in: layout).time } == Array(repeating: now, count: 4096))
        #expect(first.map { $0.fields(in: layout).sequence } == (0..<4096).map(Int64.init))

        // Sequence exhausted: the next millisecond is borrowed, twice (maxLead = 2).
        let borrowed = try (0..<8192).map { _ in try generator.next(shard: 0) }
        #expect(borrowed.first!.fields(in: layout).time == now + 1)
        #expect(borrowed.last!.fields(in: layout).time == now + 2)
        #expect(generator.statistics.leadMilliseconds == 2)

        // Past maxLead: refused, with how long to wait.
        #expect(throws: GeneratorError.self) { try generator.next(shard: 0) }
        do {
            _ = try generator.next(shard: 0)
        } catch {
            #expect(error.code == .leadExceeded)
            #expect(error.retryAfterMilliseconds == 1)
            #expect(error.isRefusal)
        }
        clock.advance(milliseconds: 1)
        let after = try generator.next(shard: 0)
        #expect(after.fields(in: layout).time == now + 3)
        #expect(after.fields(in: layout).sequence == 0)
        #expect(after > borrowed.last!)
    }

    @Test func asyncFormWaitsOnTheInjectedClock() async throws {
        let layout = IDLayout.default
        let wall = ManualWallClock(unixMilliseconds: Self.start)
        let clock = ManualClock()
        let generator = try IDGenerator(layout: layout, node: 1, maxLeadMilliseconds: 0, wallClock: wall)
        _ = try generator.next(shard: 2, count: 4096)

        async let waited = generator.nextWaiting(shard: 2, count: 10, clock: clock)
        await clock.waitForSleepers(count: 1)
        #expect(clock.sleeperCount == 1)
        wall.advance(milliseconds: 1)
        clock.advance(by: .milliseconds(1))
        let ids = try await waited
        #expect(ids.count == 10)
        #expect(ids.first!.fields(in: layout).time == Self.start - layout.epochUnixMilliseconds + 1)
        #expect(generator.statistics.refusals == 1)
    }

    @Test(arguments: [1 as Int64, 5, 1000])
    func backwardStepWithinMaxLeadIsAbsorbed(step: Int64) throws {
        let layout = IDLayout.default
        let clock = ManualWallClock(unixMilliseconds: Self.start)
        let generator = try IDGenerator(layout: layout, node: 0, maxLeadMilliseconds: 1000, wallClock: clock)
        let before = try generator.next(shard: 0)
        clock.advance(milliseconds: -step)
        let after = try generator.next(shard: 0)
        #expect(after > before)
        #expect(after.fields(in: layout).time == before.fields(in: layout).time)
        #expect(generator.statistics.backwardSteps == 1)
        #expect(generator.statistics.largestBackwardStepMilliseconds == step)
        #expect(generator.statistics.leadMilliseconds == step)
    }

    @Test func backwardStepBeyondMaxLeadIsRefusedUntilTheClockCatchesUp() throws {
        let layout = IDLayout.default
        let clock = ManualWallClock(unixMilliseconds: Self.start)
        let generator = try IDGenerator(layout: layout, node: 0, maxLeadMilliseconds: 1000, wallClock: clock)
        let before = try generator.next(shard: 0)
        clock.advance(milliseconds: -1500)
        do {
            _ = try generator.next(shard: 0)
            Issue.record("issued 1.5 s ahead of the wall clock")
        } catch {
            #expect(error.code == .leadExceeded)
            #expect(error.retryAfterMilliseconds == 500)
        }
        clock.advance(milliseconds: 499)
        #expect(throws: GeneratorError.self) { try generator.next(shard: 0) }
        clock.advance(milliseconds: 1)
        #expect(try generator.next(shard: 0) > before)
    }

    @Test func afterMovesLogicalTimePastAnotherNodesID() throws {
        let layout = IDLayout.default
        let clock = ManualWallClock(unixMilliseconds: Self.start)
        let generator = try IDGenerator(layout: layout, node: 0, maxLeadMilliseconds: 1000, wallClock: clock)
        let now = Self.start - layout.epochUnixMilliseconds
        let foreign = StampID(time: now + 500, sequence: 4095, shard: 31, node: 31, layout: layout)
        let ids = try generator.next(shard: 0, count: 3, after: foreign)
        #expect(ids.allSatisfy { $0 > foreign })
        #expect(ids.first!.fields(in: layout).time == now + 501)
        let tooFar = StampID(time: now + 1001, sequence: 0, shard: 0, node: 1, layout: layout)
        do {
            _ = try generator.next(shard: 0, count: 1, after: tooFar)
            Issue.record("accepted an after bound beyond maxLead")
        } catch {
            #expect(error.code == .afterTooFarAhead)
            #expect(!error.isRefusal)
        }
        // An older bound changes nothing.
        let next = try generator.next(shard: 0, count: 1, after: StampID(rawValue: 1)!)
        #expect(next.first! > ids.last!)
    }

    @Test func timeLimitAndAdvance() throws {
        let layout = IDLayout.default
        let clock = ManualWallClock(unixMilliseconds: Self.start)
        let generator = try IDGenerator(layout: layout, node: 0, maxLeadMilliseconds: 1000, wallClock: clock)
        let now = Self.start - layout.epochUnixMilliseconds
        generator.withState { $0.timeLimit = now + 1 }
        _ = try generator.next(shard: 0, count: 4096)
        do {
            _ = try generator.next(shard: 0)
            Issue.record("issued at the time limit")
        } catch {
            #expect(error.code == .reservationExhausted)
        }
        generator.withState { state in
            state.timeLimit = nil
            state.advance(toTimeAtLeast: now + 100)
        }
        let id = try generator.next(shard: 0)
        #expect(id.fields(in: layout).time == now + 100)
        #expect(id.fields(in: layout).sequence == 0)
    }

    @Test func badArgumentsAreRejected() throws {
        let generator = try IDGenerator(node: 0)
        for (shard, count) in [(-1, 1), (32, 1), (0, 0), (0, -5), (0, IDGenerator.maxBatch + 1)] {
            #expect(throws: GeneratorError.self) { try generator.next(shard: shard, count: count) }
        }
        #expect(throws: GeneratorError.self) { try IDGenerator(node: 32) }
        #expect(throws: GeneratorError.self) { try IDGenerator(node: -1) }
        #expect(generator.statistics.issued == 0)
    }

    @Test func clockBeforeEpochIsRefused() throws {
        let clock = ManualWallClock(unixMilliseconds: IDLayout.default.epochUnixMilliseconds - 10)
        let generator = try IDGenerator(node: 0, wallClock: clock)
        do {
            _ = try generator.next(shard: 0)
            Issue.record("issued before the epoch")
        } catch {
            #expect(error.code == .clockBeforeEpoch)
            #expect(error.retryAfterMilliseconds == 10)
        }
    }

    /// Four threads draw 4 million IDs from one generator: no duplicates, each thread's IDs rise.
    @Test func concurrentDrawsAreUniqueAndOrderedPerThread() throws {
        let layout = try IDLayout(parsing: "time=35,sequence=22,shard=2,node=4,epoch=2025-01-01T00:00:00Z")
        let generator = try IDGenerator(layout: layout, node: 15, maxLeadMilliseconds: 10, wallClock: ManualWallClock(unixMilliseconds: Self.start))
        let threads = 4, perThread = 1_000_000 // shards 0...3
        let results = Mutex<[[Int64]]>(Array(repeating: [], count: threads))
        DispatchQueue.concurrentPerform(iterations: threads) { thread in
            var ids: [Int64] = []
            ids.reserveCapacity(perThread)
            for index in 0..<perThread {
                let id = index % 2 == 0 ? try? generator.next(shard: thread) : try? generator.next(shard: thread, count: 1).first
                ids.append(id?.rawValue ?? -1)
            }
            results.withLock { $0[thread] = ids }
        }
        let perThreadIDs = results.withLock { $0 }
        var orderViolations = 0, failures = 0
        for ids in perThreadIDs {
            failures += ids.filter { $0 < 0 }.count
            orderViolations += zip(ids, ids.dropFirst()).filter { $0 >= $1 }.count
        }
        var all = perThreadIDs.flatMap { $0 }
        all.sort()
        let duplicates = zip(all, all.dropFirst()).filter { $0 == $1 }.count
        #expect(all.count == threads * perThread)
        #expect(failures == 0)
        #expect(duplicates == 0)
        #expect(orderViolations == 0)
        #expect(generator.statistics.issued == UInt64(threads * perThread))
    }

    /// Three threads draw while a fourth moves the wall clock forwards and backwards, raises the time
    /// limit (as renewals raise the reservation) and changes the maximum lead: no duplicates, each
    /// thread's IDs rise, and no ID reaches the limit in force when it was drawn.
    @Test(arguments: [1 as UInt64, 2, 3])
    func drawsStayUniqueOrderedAndBelowTheLimitWhileClockAndLimitsChange(seed: UInt64) throws {
        let layout = try IDLayout(parsing: "time=41,sequence=6,shard=8,node=8,epoch=2025-01-01T00:00:00Z")
        let wallClock = ManualWallClock(unixMilliseconds: Self.start)
        let generator = try IDGenerator(layout: layout, node: 3, maxLeadMilliseconds: 3, wallClock: wallClock)
        let epochTime = Self.start - layout.epochUnixMilliseconds
        // Raised here before the generator, so that a drawer reading it after a draw never sees less
        // than the limit that draw was decided under.
        let limit = Atomic<Int64>(epochTime + 2)
        generator.withState { $0.timeLimit = epochTime + 2 }
        let moving = Atomic(true)
        let attempts = Atomic(0)
        let drawers = 3
        let results = Mutex<[[(id: StampID, limit: Int64)]]>(Array(repeating: [], count: drawers))
        // A thread each, all at once: the drawers run until the mover is done, so none may wait for a free worker.
        Self.onThreadsOfTheirOwn(drawers + 1) { thread in
            if thread == drawers {
                var random = SeededRandom(seed: seed)
                var wall = Self.start
                for step in 0..<5_000 {
                    // Each change waits for the drawers to have tried about once each since the last.
                    while attempts.load(ordering: .relaxed) < step * drawers { sched_yield() }
                    switch Int.random(in: 0..<100, using: &random) {
                    case 0..<30: wall += Int64.random(in: 1...3, using: &random)
                    case 30..<40: wall -= Int64.random(in: 1...5, using: &random)
                    case 40..<60:
                        let raised = max(limit.load(ordering: .relaxed), wall - layout.epochUnixMilliseconds + Int64.random(in: -1...6, using: &random))
                        limit.store(raised, ordering: .sequentiallyConsistent)
                        generator.withState { $0.timeLimit = raised }
                    case 60..<65:
                        let lead = Int64.random(in: 0...4, using: &random)
                        generator.withState { $0.maxLeadMilliseconds = lead }
                    default: break
                    }
                    wallClock.set(unixMilliseconds: wall)
                }
                moving.store(false, ordering: .sequentiallyConsistent)
                return
            }
            var drawn: [(id: StampID, limit: Int64)] = []
            var draws = 0
            while moving.load(ordering: .sequentiallyConsistent) {
                draws += 1
                attempts.add(1, ordering: .relaxed)
                let count = [1, 1, 2, 5][draws % 4]
                guard let ids = try? generator.next(shard: thread, count: count) else { continue }
                let limitAfter = limit.load(ordering: .sequentiallyConsistent)
                drawn.append(contentsOf: ids.map { ($0, limitAfter) })
            }
            results.withLock { $0[thread] = drawn }
        }
        let perThread = results.withLock { $0 }
        var orderViolations = 0, atOrPastLimit = 0
        for drawn in perThread {
            orderViolations += zip(drawn, drawn.dropFirst()).filter { $0.id >= $1.id }.count
            atOrPastLimit += drawn.filter { $0.id.fields(in: layout).unixMilliseconds - layout.epochUnixMilliseconds >= $0.limit }.count
        }
        let all = perThread.flatMap { $0.map(\.id) }
        // How many draws succeed depends on how the threads interleave (most are refused at the
        // limit): on a loaded machine about a thousand, never none.
        #expect(all.count > 100, "the drawers must get IDs for the test to mean anything")
        #expect(Set(all).count == all.count, "duplicates")
        #expect(orderViolations == 0)
        #expect(atOrPastLimit == 0)
        #expect(generator.statistics.issued == UInt64(all.count))
    }

    /// Runs `body(0)` to `body(count - 1)` each on a thread of its own, and returns when all have returned.
    static func onThreadsOfTheirOwn(_ count: Int, _ body: @escaping @Sendable (Int) -> Void) {
        let finished = DispatchSemaphore(value: 0)
        for index in 0..<count {
            Thread {
                body(index)
                finished.signal()
            }.start()
        }
        for _ in 0..<count { finished.wait() }
    }
}
