@testable import StampCore
import StampTesting
import Testing

/// The generator's lock-free path must make exactly the decisions of ``GeneratorState``.
@Suite("Lock-free path")
struct LockFreePathTests {
    static let start: Int64 = 1_767_225_600_000

    /// Random walks of a state (clock steps, batches, `after` bounds, time limits, lead changes): whenever
    /// the published word lets a request through without the lock, borrowed milliseconds included, `take` issues the same IDs and leaves
    /// the same state as counting them from the word.
    @Test(arguments: [1 as UInt64, 2, 3, 4, 5, 6, 7, 8])
    func lockFreeIssuesMatchTheStateMachine(seed: UInt64) throws {
        var random = SeededRandom(seed: seed)
        let layout = try IDLayout(parsing: "time=41,sequence=6,shard=8,node=8,epoch=2025-01-01T00:00:00Z")
        var state = GeneratorState(layout: layout, maxLeadMilliseconds: 3)
        var wall = Self.start
        var lockFreeRequests = 0
        var borrowingRequests = 0

        for _ in 0..<20_000 {
            switch Int.random(in: 0..<100, using: &random) {
            case 0..<20: wall += Int64.random(in: 1...3, using: &random)
            case 20..<25: wall -= Int64.random(in: 1...5, using: &random)
            case 25..<28: state.timeLimit = Bool.random(using: &random) ? nil : wall - layout.epochUnixMilliseconds + Int64.random(in: -1...2, using: &random)
            case 28..<30: state.maxLeadMilliseconds = Int64.random(in: -1...3, using: &random)
            default: break
            }
            let count = [1, 1, 1, 2, 5, 30, 64][Int.random(in: 0..<7, using: &random)]
            let time = wall - layout.epochUnixMilliseconds
            let word = state.publishedWord
            let position = Int64(bitPattern: word & ~GeneratorState.openBit)
            let after: (time: Int64, sequence: Int64)? = switch Int.random(in: 0..<4, using: &random) {
            case 0: (position >> layout.sequenceBits, position & layout.maxSequence)
            case 1: ((position + 1) >> layout.sequenceBits, (position + 1) & layout.maxSequence)
            case 2: (max(0, time - 2), 0)
            default: nil
            }
            let afterPosition = after.map { $0.time << layout.sequenceBits | $0.sequence } ?? -1

            var decided = state
            let decision = decided.take(count: count, wallUnixMilliseconds: wall, after: after)
            if let window = state.lockFreeWindow, let advanced = GeneratorState.issuing(count: Int64(count), atTime: time, afterPosition: afterPosition, from: word, window: window) {
                if advanced >> layout.sequenceBits != word >> layout.sequenceBits { borrowingRequests += 1 }
                lockFreeRequests += 1
                var counted = state
                counted.recordIssued(upTo: advanced)
                let startPosition = position + 1
                #expect(decision == .issue(.init(startTime: startPosition >> layout.sequenceBits, startSequence: startPosition & layout.maxSequence, count: count)))
                #expect(counted.lastTime == decided.lastTime)
                #expect(counted.lastSequence == decided.lastSequence)
                #expect(counted.lastWallTime == decided.lastWallTime)
                #expect(counted.statistics == decided.statistics)
                #expect(decided.publishedWord & ~GeneratorState.openBit == advanced & ~GeneratorState.openBit)
            }
            state = decided
        }
        #expect(lockFreeRequests > 1000, "the walk should often allow the lock-free path")
        #expect(borrowingRequests > 100, "the walk should often borrow a millisecond without the lock")
    }

    /// Many IDs in one millisecond go through the lock-free path; the counters stay exact and the IDs
    /// rise, across the first ID of each millisecond (decided under the lock) and batches.
    @Test func countersStayExactAcrossLockFreeIssues() throws {
        let layout = try IDLayout(parsing: "time=41,sequence=22,shard=0,node=0,epoch=2025-01-01T00:00:00Z")
        let clock = ManualWallClock(unixMilliseconds: Self.start)
        let generator = try IDGenerator(layout: layout, node: 0, maxLeadMilliseconds: 5, wallClock: clock)
        var last: StampID?
        var issued: UInt64 = 0
        for millisecond in 0..<5 {
            for call in 0..<1000 {
                if call % 10 == 0 {
                    let ids = try generator.next(shard: 0, count: 7, after: last)
                    #expect(ids.first! > last ?? StampID(rawValue: 0)!)
                    #expect(zip(ids, ids.dropFirst()).allSatisfy { $0 < $1 })
                    last = ids.last
                    issued += 7
                } else {
                    let id = try generator.next(shard: 0)
                    #expect(id > last ?? StampID(rawValue: 0)!)
                    last = id
                    issued += 1
                }
                if call % 250 == 0 { #expect(generator.statistics.issued == issued) }
            }
            #expect(last!.fields(in: layout).time == Self.start - layout.epochUnixMilliseconds + Int64(millisecond))
            clock.advance(milliseconds: 1)
        }
        let statistics = generator.statistics
        #expect(statistics.issued == issued)
        #expect(statistics.refusals == 0)
        #expect(statistics.backwardSteps == 0)
        #expect(generator.withState { $0.lastSequence } == Int64(issued / 5) - 1)
    }

    /// A time limit set through `withState` stops lock-free issuing at once, and lifting it resumes it.
    @Test func withStateClosesTheLockFreePath() throws {
        let layout = IDLayout.default
        let clock = ManualWallClock(unixMilliseconds: Self.start)
        let generator = try IDGenerator(layout: layout, node: 0, maxLeadMilliseconds: 1000, wallClock: clock)
        let now = Self.start - layout.epochUnixMilliseconds
        let first = try generator.next(shard: 0)
        _ = try generator.next(shard: 0)
        generator.withState { $0.timeLimit = now }
        #expect(throws: GeneratorError(refusal: .init(reason: .reservationExhausted, retryAfterMilliseconds: nil))) {
            try generator.next(shard: 0)
        }
        generator.withState { $0.timeLimit = now + 1 }
        let third = try generator.next(shard: 0)
        #expect(third.fields(in: layout).sequence == 2)
        #expect(third > first)
        let statistics = generator.statistics
        #expect(statistics.issued == 3)
        #expect(statistics.refusals == 1)
    }

    /// At the layout's ceiling the lock-free path serves borrowed milliseconds up to the lead exactly, and a
    /// time limit set meanwhile through `withState` bounds it at once.
    @Test func borrowedMillisecondsStopAtTheLeadAndTheLimit() throws {
        let layout = try IDLayout(parsing: "time=41,sequence=4,shard=9,node=9,epoch=2025-01-01T00:00:00Z")
        let clock = ManualWallClock(unixMilliseconds: Self.start)
        let generator = try IDGenerator(layout: layout, node: 0, maxLeadMilliseconds: 3, wallClock: clock)
        let now = Self.start - layout.epochUnixMilliseconds
        var last: StampID?
        for index in 0..<64 {
            let id = try generator.next(shard: 0)
            #expect(id > last ?? StampID(rawValue: 0)!)
            #expect(id.fields(in: layout).time == now + Int64(index / 16))
            last = id
        }
        #expect(throws: GeneratorError(refusal: .init(reason: .leadExceeded, retryAfterMilliseconds: 1))) {
            try generator.next(shard: 0)
        }
        clock.advance(milliseconds: 2)
        #expect(try generator.next(shard: 0).fields(in: layout).time == now + 4)
        generator.withState { $0.timeLimit = now + 5 }
        for _ in 0..<15 {
            #expect(try generator.next(shard: 0).fields(in: layout).time == now + 4)
        }
        #expect(throws: GeneratorError(refusal: .init(reason: .reservationExhausted, retryAfterMilliseconds: nil))) {
            try generator.next(shard: 0)
        }
        let statistics = generator.statistics
        #expect(statistics.issued == 80)
        #expect(statistics.refusals == 2)
        #expect(statistics.backwardSteps == 0)
    }
}
