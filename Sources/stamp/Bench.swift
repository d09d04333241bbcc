import ArgumentParser
import Dispatch
import Foundation
import StampCore
import Synchronization

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Generate IDs in-process as fast as possible and check every one.",
        discussion: """
        Each thread draws from one shared generator and checks that its own IDs increase; at the end all IDs \
        are merged to count duplicates. Before measuring, the generator runs until its lead reaches --max-lead \
        (at most 2 s), so that borrowed milliseconds do not inflate the result: the rate is what the node \
        sustains. The ceiling is the layout's IDs per second for one node.
        """
    )

    @Option(help: "Threads drawing IDs at once.")
    var threads: Int = 1

    @Option(help: "Seconds to measure.")
    var duration: Double = 5

    @Option(help: "Milliseconds logical time may run ahead of the wall clock.")
    var maxLead: Int64 = 1000

    @OptionGroup var layoutOptions: LayoutOptions

    func validate() throws {
        guard (1...256).contains(threads) else { throw ValidationError("--threads must be between 1 and 256") }
        guard duration > 0, duration <= 600 else { throw ValidationError("--duration must be above 0 and at most 600 seconds") }
        guard maxLead >= 0 else { throw ValidationError("--max-lead must not be negative") }
    }

    func run() throws {
        let layout = try layoutOptions.resolved()
        let generator = try IDGenerator(layout: layout, node: 0, maxLeadMilliseconds: maxLead)
        let expectedPerThread = min(Int(Double(layout.idsPerSecondPerNode) * duration / Double(threads) * 1.1), 100_000_000)
        let results = ThreadResults(count: threads, capacity: expectedPerThread)
        warmUp(generator)

        let clock = ContinuousClock()
        let start = clock.now
        let deadline = start + .milliseconds(Int64(duration * 1000))
        DispatchQueue.concurrentPerform(iterations: threads) { thread in
            results.store(Self.draw(from: generator, until: deadline, clock: clock, into: results.takeBuffer(at: thread)), at: thread)
        }
        let elapsed = start.duration(to: clock.now)
        let all = results.all
        let total = all.reduce(0) { $0 + $1.ids.count }
        let violations = all.reduce(0) { $0 + $1.orderViolations }
        let duplicates = Self.countDuplicates(all.map(\.ids))
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        let rate = Double(total) / seconds
        let ratio = rate / Double(layout.idsPerSecondPerNode)
        print("layout \(layout)")
        print("threads \(threads), \(String(format: "%.2f", seconds)) s, \(total) IDs")
        print("\(Int(rate)) IDs/s, \(String(format: "%.2f", seconds * 1e9 / Double(max(total, 1)))) ns per ID, \(String(format: "%.2f", ratio * 100))% of the ceiling (\(layout.idsPerSecondPerNode) IDs/s per node)")
        print("ids=\(total) duplicates=\(duplicates) order_violations=\(violations) ids_per_second=\(Int(rate)) ceiling_ratio=\(String(format: "%.4f", ratio))")
        if duplicates > 0 || violations > 0 { throw ExitCode.failure }
    }

    /// Draws until the lead reaches the maximum (the first refusal) or 2 s have passed.
    private func warmUp(_ generator: IDGenerator) {
        let clock = ContinuousClock()
        let stop = clock.now + .seconds(2)
        while clock.now < stop {
            do {
                _ = try generator.next(shard: 0, count: Int(min(generator.layout.idsPerMillisecond, 4096)))
            } catch {
                return
            }
        }
    }

    private static func draw(from generator: IDGenerator, until deadline: ContinuousClock.Instant, clock: ContinuousClock, into buffer: consuming [Int64]) -> ThreadResult {
        var ids = buffer
        var last: Int64 = -1
        var violations = 0
        repeat {
            for _ in 0..<1024 {
                do {
                    let id = try generator.next(shard: 0).rawValue
                    if id <= last { violations += 1 }
                    last = id
                    ids.append(id)
                } catch {
                    var pause = timespec(tv_sec: 0, tv_nsec: Int(error.retryAfterMilliseconds ?? 1) * 1_000_000)
                    nanosleep(&pause, nil)
                }
            }
        } while clock.now < deadline
        return ThreadResult(ids: violations == 0 ? ids : ids.sorted(), orderViolations: violations)
    }

    /// Counts values that appear more than once across sorted arrays, by merging them.
    static func countDuplicates(_ lists: [[Int64]]) -> Int {
        var heads = [Int](repeating: 0, count: lists.count)
        var previous: Int64?
        var duplicates = 0
        while true {
            var best = -1
            for index in lists.indices where heads[index] < lists[index].count {
                if best < 0 || lists[index][heads[index]] < lists[best][heads[best]] { best = index }
            }
            guard best >= 0 else { return duplicates }
            let value = lists[best][heads[best]]
            if value == previous { duplicates += 1 }
            previous = value
            heads[best] += 1
        }
    }
}

struct ThreadResult: Sendable {
    var ids: [Int64]
    var orderViolations: Int
}

/// Per-thread results, written once by each thread of `concurrentPerform`.
final class ThreadResults: Sendable {
    private let results: Mutex<[ThreadResult]>

    /// Prepares one empty buffer of `capacity` IDs per thread, with every page already touched so that
    /// page faults do not count against the generator while measuring.
    init(count: Int, capacity: Int) {
        results = Mutex((0..<count).map { _ in
            var ids = [Int64](repeating: 0, count: capacity)
            ids.removeAll(keepingCapacity: true)
            return ThreadResult(ids: ids, orderViolations: 0)
        })
    }

    /// Hands the buffer prepared for `index` over to its thread, which then owns it alone.
    func takeBuffer(at index: Int) -> [Int64] {
        results.withLock { results in
            defer { results[index].ids = [] }
            return results[index].ids
        }
    }

    func store(_ result: ThreadResult, at index: Int) {
        results.withLock { $0[index] = result }
    }

    var all: [ThreadResult] { results.withLock { $0 } }
}
