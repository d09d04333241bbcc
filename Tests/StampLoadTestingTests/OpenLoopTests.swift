import NIOPosix
import StampTesting
import Synchronization
import Testing
@testable import StampLoadTesting

@Suite("Open-loop schedule")
struct OpenLoopScheduleTests {
    @Test func eachTimeComesFromItsIndex() {
        var schedule = OpenLoopSchedule(rates: [3], duration: .seconds(1))
        var offsets: [Duration] = []
        while let slot = schedule.nextSlot() { offsets.append(slot.offset) }
        // 1/3 s rounds to the nanosecond each time from the index, never adding up the rounding.
        #expect(offsets == [.zero, .nanoseconds(333_333_333), .nanoseconds(666_666_667)])
    }

    @Test func streamsMergeInTimeOrderAndTheFirstStreamWinsATie() {
        var schedule = OpenLoopSchedule(rates: [2, 4], duration: .seconds(1))
        var slots: [(Int, Int64)] = []
        while let slot = schedule.nextSlot() { slots.append((slot.stream, slot.index)) }
        // Times: stream 0 at 0 and 0.5 s, stream 1 at 0, 0.25, 0.5 and 0.75 s.
        #expect(slots.map(\.0) == [0, 1, 1, 0, 1, 1])
        #expect(slots.map(\.1) == [0, 0, 1, 1, 2, 3])
    }

    @Test func aStreamAtRateZeroStartsNothingAndTheEndIsExclusive() {
        var schedule = OpenLoopSchedule(rates: [10, 0], duration: .milliseconds(300))
        var slots: [OpenLoopSchedule.Slot] = []
        while let slot = schedule.nextSlot() { slots.append(slot) }
        #expect(slots.allSatisfy { $0.stream == 0 })
        #expect(slots.map(\.offset) == [.zero, .milliseconds(100), .milliseconds(200)], "the request due at 300 ms is past the end")
        #expect(schedule.nextSlot() == nil)
    }
}

@Suite("Open-loop pacer")
struct OpenLoopPacerTests {
    @Test func withoutAWakeIntervalItWakesForEachRequestAtItsTime() {
        let clock = ManualClock()
        let start = clock.now
        var pacer = OpenLoopPacer(OpenLoopSchedule(rates: [10], duration: .milliseconds(300)), from: start)
        #expect(pacer.nextWake == start)
        #expect(pacer.wake(at: start).map(\.slot.index) == [0])
        #expect(pacer.nextWake == start.advanced(by: .milliseconds(100)))
        // A late wake-up hands out everything due by then, each with its own due instant.
        let late = pacer.wake(at: start.advanced(by: .milliseconds(250)))
        #expect(late.map(\.slot.index) == [1, 2])
        #expect(late.map(\.due.offset) == [.milliseconds(100), .milliseconds(200)])
        #expect(pacer.nextWake == nil, "the request due at 300 ms is past the end")
    }

    @Test func withAWakeIntervalTheNextWakeUpIsNoSoonerThanTheIntervalAfterTheLast() {
        let clock = ManualClock()
        let start = clock.now
        var pacer = OpenLoopPacer(OpenLoopSchedule(rates: [1000], duration: .milliseconds(25)), from: start, wakeInterval: .milliseconds(10))
        #expect(pacer.wake(at: start).map(\.slot.index) == [0])
        #expect(pacer.nextWake == start.advanced(by: .milliseconds(10)), "the next request is due at 1 ms")
        #expect(pacer.wake(at: start.advanced(by: .milliseconds(10))).map(\.slot.index) == Array(1...10))
        // Woken late, at 23 ms: the next wake-up is 10 ms after that, and the schedule ends at 25 ms.
        #expect(pacer.wake(at: start.advanced(by: .milliseconds(23))).map(\.slot.index) == Array(11...23))
        #expect(pacer.nextWake == start.advanced(by: .milliseconds(33)))
        #expect(pacer.wake(at: start.advanced(by: .milliseconds(33))).map(\.slot.index) == [24])
        #expect(pacer.nextWake == nil)
    }

    @Test func aRequestDueLaterThanTheIntervalIsWokenForAtItsTime() {
        let clock = ManualClock()
        let start = clock.now
        var pacer = OpenLoopPacer(OpenLoopSchedule(rates: [2], duration: .seconds(1)), from: start, wakeInterval: .milliseconds(10))
        _ = pacer.wake(at: start)
        #expect(pacer.nextWake == start.advanced(by: .milliseconds(500)))
    }
}

@Suite("Open-loop runner")
struct OpenLoopRunnerTests {
    /// The requests a runner started, with their due instants, and a gate that holds them in flight.
    final class Started: Sendable {
        let slots = Mutex<[(slot: OpenLoopSchedule.Slot, due: ManualClock.Instant, at: ManualClock.Instant)]>([])
        let notStarted = Mutex<[Int64]>([])
        let finished = Atomic<Int>(0)
    }

    @Test func requestsStartAtTheirTimesWhateverTheAnswers() async {
        let clock = ManualClock()
        let runner = OpenLoopRunner(clock: clock, inFlightLimit: 100)
        let started = Started()
        let start = clock.now
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                await runner.run(OpenLoopSchedule(rates: [10], duration: .milliseconds(350)), from: start) { slot, due in
                    started.slots.withLock { $0.append((slot, due, clock.now)) }
                    // No answer until the run's clock has passed the end: the loop must not wait for it.
                    try? await clock.sleep(until: start.advanced(by: .seconds(10)), tolerance: nil)
                    started.finished.add(1, ordering: .relaxed)
                } notStarted: { _ in }
            }
            // The first request is due at once; the runner then sleeps until the second, at 100 ms.
            await clock.waitForSleepers(count: 2)
            #expect(started.slots.withLock { $0.count } == 1)
            clock.advance(by: .milliseconds(100))
            await clock.waitForSleepers(count: 3)
            #expect(started.slots.withLock { $0.count } == 2)
            // A late wake-up starts every request already due at once.
            clock.advance(by: .milliseconds(250))
            await clock.waitForSleepers(count: 4)
            #expect(runner.inFlight == 4)
            clock.advance(by: .seconds(10))
        }
        let slots = started.slots.withLock { $0 }
        #expect(slots.map(\.due.offset) == [.zero, .milliseconds(100), .milliseconds(200), .milliseconds(300)], "latency counts from the due time")
        #expect(slots.map(\.at.offset) == [.zero, .milliseconds(100), .milliseconds(350), .milliseconds(350)])
        #expect(started.finished.load(ordering: .relaxed) == 4, "the run returns once every request has finished")
        #expect(runner.inFlight == 0)
    }

    @Test func aRequestDueWhileTheLimitIsInFlightIsNotStarted() async {
        let clock = ManualClock()
        let runner = OpenLoopRunner(clock: clock, inFlightLimit: 2)
        let started = Started()
        let start = clock.now
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                await runner.run(OpenLoopSchedule(rates: [1000], duration: .milliseconds(5)), from: start) { slot, due in
                    started.slots.withLock { $0.append((slot, due, clock.now)) }
                    try? await clock.sleep(until: start.advanced(by: .seconds(1)), tolerance: nil)
                } notStarted: { slot in
                    started.notStarted.withLock { $0.append(slot.index) }
                }
            }
            await clock.waitForSleepers(count: 2)
            clock.advance(by: .milliseconds(5))
            await clock.waitForSleepers(count: 2)
            clock.advance(by: .seconds(1))
        }
        #expect(started.slots.withLock { $0.map(\.slot.index) } == [0, 1])
        #expect(started.notStarted.withLock { $0 } == [2, 3, 4])
    }

    @Test func cancellationStopsTheScheduleAndWaitsForTheStartedRequests() async {
        let clock = ManualClock()
        let runner = OpenLoopRunner(clock: clock, inFlightLimit: 10)
        let started = Started()
        let start = clock.now
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                await runner.run(OpenLoopSchedule(rates: [1], duration: .seconds(60)), from: start) { slot, due in
                    started.slots.withLock { $0.append((slot, due, clock.now)) }
                    started.finished.add(1, ordering: .relaxed)
                } notStarted: { _ in }
            }
            await clock.waitForSleepers(count: 1)
            group.cancelAll()
        }
        #expect(started.slots.withLock { $0.count } == 1)
        #expect(started.finished.load(ordering: .relaxed) == 1)
    }

    @Test func withAWakeIntervalTheRunnerWakesOncePerIntervalAndStartsWhatCameDue() async {
        let clock = ManualClock()
        let runner = OpenLoopRunner(clock: clock, inFlightLimit: 3, wakeInterval: .milliseconds(10))
        let started = Started()
        let (notStarted, notStartedSink) = AsyncStream.makeStream(of: Int64.self)
        let start = clock.now
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                // 1,000 requests a second for 20 ms: one due each millisecond.
                await runner.run(OpenLoopSchedule(rates: [1000], duration: .milliseconds(20)), from: start) { slot, due in
                    started.slots.withLock { $0.append((slot, due, clock.now)) }
                    try? await clock.sleep(until: start.advanced(by: .seconds(1)), tolerance: nil)
                } notStarted: { slot in
                    notStartedSink.yield(slot.index)
                }
                notStartedSink.finish()
            }
            // The first is due at once (1 in flight); the runner sleeps 10 ms, not 1.
            await clock.waitForSleepers(count: 2)
            clock.advance(by: .milliseconds(10))
            await clock.waitForSleepers(count: 4)
            clock.advance(by: .milliseconds(10))
            // Slots 11 to 19 come due at 20 ms with 3 still in flight.
            var skipped: [Int64] = []
            for await index in notStarted {
                skipped.append(index)
                if index == 19 { break }
            }
            #expect(skipped == Array(3...19))
            clock.advance(by: .seconds(1))
        }
        let slots = started.slots.withLock { $0 }
        #expect(slots.map(\.slot.index) == [0, 1, 2], "the limit of 3 in flight holds")
        #expect(slots.map(\.at.offset) == [.zero, .milliseconds(10), .milliseconds(10)], "slots 1 to 10 came due together at 10 ms")
        #expect(slots.map(\.due.offset) == [.zero, .milliseconds(1), .milliseconds(2)], "each keeps its own due instant")
    }

    @Test func theProgressTickerTicksEverySecondUntilItsLastInstant() async {
        let clock = ManualClock()
        let ticks = Recorded<Int>()
        let start = clock.now
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                await ProgressTicker.run(clock: clock, from: start, until: start.advanced(by: .milliseconds(2500))) { seconds in
                    ticks.append(seconds)
                }
            }
            for _ in 0..<2 {
                await clock.waitForSleepers(count: 1)
                clock.advance(by: .seconds(1))
            }
        }
        #expect(ticks.all == [1, 2], "no tick past the last instant")
    }
}

/// Values a task records and a test reads afterwards.
final class Recorded<Value: Sendable>: Sendable {
    private let values = Mutex<[Value]>([])
    func append(_ value: Value) { values.withLock { $0.append(value) } }
    var all: [Value] { values.withLock { $0 } }
}

@Suite("Event-loop open loop")
struct EventLoopOpenLoopTests {
    /// What the requests of a run were: started (slot indices), not started, and those held in flight.
    final class Requests: @unchecked Sendable {
        var started: [Int64] = []
        var notStarted: [Int64] = []
    }

    @Test func requestsDuePastTheLimitAreNotStartedAndTheRunEndsWhenEveryStartedOneHasFinished() async throws {
        let eventLoop = MultiThreadedEventLoopGroup.singleton.next()
        let loop = EventLoopOpenLoop(eventLoop: eventLoop, inFlightLimit: 5, wakeInterval: .milliseconds(1))
        let requests = Requests()
        let (lastSkipped, lastSkippedSink) = AsyncStream.makeStream(of: Void.self)
        // A schedule that began a second ago: all 10 of its requests are due at the first wake-up.
        let start = ContinuousClock.now.advanced(by: .seconds(-1))
        async let run: Void = loop.run(OpenLoopSchedule(rates: [10], duration: .seconds(1)), from: start) { slot, due in
            #expect(due == start.advanced(by: slot.offset))
            requests.started.append(slot.index)
        } notStarted: { slot in
            requests.notStarted.append(slot.index)
            if slot.index == 9 { lastSkippedSink.finish() }
        }
        for await _ in lastSkipped {}
        let (started, skipped) = try await eventLoop.submit { (requests.started, requests.notStarted) }.get()
        #expect(started == [0, 1, 2, 3, 4])
        #expect(skipped == [5, 6, 7, 8, 9])
        #expect(loop.inFlight == 5)
        try await eventLoop.submit { for _ in 0..<5 { loop.finished() } }.get()
        await run
        #expect(loop.inFlight == 0)
    }

    @Test func everyRequestOfTheScheduleStartsInOrder() async throws {
        let eventLoop = MultiThreadedEventLoopGroup.singleton.next()
        let loop = EventLoopOpenLoop(eventLoop: eventLoop, inFlightLimit: 100, wakeInterval: .milliseconds(1))
        let requests = Requests()
        await loop.run(OpenLoopSchedule(rates: [200, 100], duration: .milliseconds(50)), from: .now) { slot, _ in
            requests.started.append(Int64(slot.stream * 100) + slot.index)
            loop.finished()
        } notStarted: { slot in
            requests.notStarted.append(slot.index)
        }
        let started = try await eventLoop.submit { requests.started }.get()
        #expect(started.filter { $0 < 100 } == Array(0..<10))
        #expect(started.filter { $0 >= 100 } == Array(100..<105))
        #expect(try await eventLoop.submit { requests.notStarted }.get().isEmpty)
    }

    @Test func cancellationEndsTheSchedule() async {
        let eventLoop = MultiThreadedEventLoopGroup.singleton.next()
        let loop = EventLoopOpenLoop(eventLoop: eventLoop, inFlightLimit: 10, wakeInterval: .zero)
        let run = Task {
            // Nothing is due for an hour.
            await loop.run(OpenLoopSchedule(rates: [1], duration: .seconds(10)), from: .now.advanced(by: .seconds(3600))) { _, _ in
                Issue.record("no request is due")
            } notStarted: { _ in }
        }
        run.cancel()
        await run.value
        #expect(loop.inFlight == 0)
    }
}
