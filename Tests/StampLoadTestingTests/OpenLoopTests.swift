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

    @Test func withAWakeIntervalTheDueRequestsAreHandedOverTogetherAndEachCountsUntilFinished() async {
        let clock = ManualClock()
        let runner = OpenLoopRunner(clock: clock, inFlightLimit: 5, wakeInterval: .milliseconds(10))
        let batches = Recorded<[Int64]>()
        let notStarted = Recorded<Int64>()
        let start = clock.now
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                // 1,000 requests a second for 25 ms: one due each millisecond.
                await runner.run(OpenLoopSchedule(rates: [1000], duration: .milliseconds(25)), from: start) { due in
                    batches.append(due.map(\.slot.index))
                    #expect(due.allSatisfy { $0.due == start.advanced(by: $0.slot.offset) }, "each keeps its own due instant")
                } notStarted: { slot in
                    notStarted.append(slot.index)
                }
            }
            // The first is due at once; the next wake-up is 10 ms later, not 1 ms.
            await clock.waitForSleepers(count: 1)
            #expect(batches.all == [[0]])
            clock.advance(by: .milliseconds(10))
            await clock.waitForSleepers(count: 1)
            // Slots 1 to 10 came due: 4 fit under the limit of 5 in flight, the rest are not started.
            #expect(batches.all == [[0], [1, 2, 3, 4]])
            #expect(notStarted.all == Array(5...10))
            for _ in 0..<5 { runner.finished() }
            clock.advance(by: .milliseconds(10))
            await clock.waitForSleepers(count: 1)
            #expect(batches.all.last == [11, 12, 13, 14, 15])
            for _ in 0..<5 { runner.finished() }
            clock.advance(by: .milliseconds(10))
            // The run ends once every request handed over has finished.
            while runner.inFlight < 4 { await Task.yield() }
            #expect(runner.inFlight == 4)
            for _ in 0..<4 { runner.finished() }
        }
        #expect(batches.all.last == [21, 22, 23, 24])
        #expect(notStarted.all == Array(5...10) + Array(16...20))
        #expect(runner.inFlight == 0)
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
