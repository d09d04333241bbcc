import ArgumentParser
import Foundation
import Logging
import StampClient
import StampCore
import Synchronization

struct Load: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Drive a running cluster through the client library and check every ID it gets.",
        discussion: """
        Each client is a separate StampIDClient with its own connections. With --rate above 0 the requests start \
        on a fixed schedule whatever the answers (open loop), and latency counts from the scheduled start; with \
        --rate 0 each client asks again as soon as it has an answer (closed loop), as fast as it can. A progress \
        line goes to standard error once a second; the report ends in one line of key=value figures. The exit \
        status is non-zero when any ID was seen twice or any client saw its IDs out of order.
        """
    )

    @OptionGroup var nodes: NodesOption

    @Option(help: "IDs per second over all clients; 0 asks as fast as possible.")
    var rate: Int = 1000

    @Option(help: ArgumentHelp("How long to run: 500ms, 30s, 2m.", valueName: "duration"))
    var duration: String = "10s"

    @Option(help: "How many independent clients share the rate.")
    var clients: Int = 1

    @Option(help: "Shard (database) ID to ask for.")
    var shard: Int = 0

    @Option(help: ArgumentHelp("Prefetch buffer size per client (0: no prefetch).", valueName: "n"))
    var prefetch: Int = 0

    @Option(help: ArgumentHelp("Requests each client keeps in flight before it coalesces further calls into one request (0: every call is its own request).", valueName: "n"))
    var requestsInFlight: Int = StampClientConfiguration.Coalescing().requestsInFlight

    @Option(help: ArgumentHelp("How often each client rereads /v1/cluster.", valueName: "duration"))
    var discoveryInterval: String = "2s"

    func validate() throws {
        guard rate >= 0, rate <= 10_000_000 else { throw ValidationError("--rate must be between 0 and 10000000") }
        guard (1...256).contains(clients) else { throw ValidationError("--clients must be between 1 and 256") }
        guard shard >= 0 else { throw ValidationError("--shard must be 0 or more") }
        guard (0...10_000).contains(prefetch) else { throw ValidationError("--prefetch must be between 0 and 10000") }
        guard (0...1000).contains(requestsInFlight) else { throw ValidationError("--requests-in-flight must be between 0 and 1000") }
        _ = try DurationText.parse(duration, name: "--duration")
        _ = try DurationText.parse(discoveryInterval, name: "--discovery-interval")
    }

    func run() async throws {
        let length = try DurationText.parse(duration, name: "--duration")
        var configuration = StampClientConfiguration(nodes: nodes.urls, discoveryInterval: try DurationText.parse(discoveryInterval, name: "--discovery-interval"))
        if prefetch > 0 { configuration.prefetch = StampClientConfiguration.Prefetch(capacity: prefetch) }
        configuration.coalescing = requestsInFlight > 0 ? StampClientConfiguration.Coalescing(requestsInFlight: requestsInFlight) : nil
        let logger = ClientLogging.logger(level: .error)
        let stampClients = (0..<clients).map { _ in StampIDClient(configuration: configuration, logger: logger) }
        let recorders = (0..<clients).map { _ in LoadRecorder() }
        let clock = ContinuousClock()
        let start = clock.now
        let end = start.advanced(by: length)
        let shard = self.shard
        let ratePerClient = Double(rate) / Double(clients)

        await withTaskGroup(of: Void.self) { services in
            for client in stampClients {
                services.addTask { try? await client.run() }
            }
            await withTaskGroup(of: Void.self) { drivers in
                for (client, recorder) in zip(stampClients, recorders) {
                    drivers.addTask {
                        if ratePerClient > 0 {
                            await Self.openLoop(client: client, recorder: recorder, shard: shard, rate: ratePerClient, start: start, end: end)
                        } else {
                            await Self.closedLoop(client: client, recorder: recorder, shard: shard, end: end)
                        }
                    }
                }
                drivers.addTask {
                    await Self.progress(recorders: recorders, clients: stampClients, start: start, end: end)
                }
                await drivers.waitForAll()
            }
            services.cancelAll()
        }

        let elapsed = start.duration(to: clock.now)
        let report = LoadReport(recorders: recorders, statistics: stampClients.map(\.statistics), elapsed: elapsed)
        print(report.text)
        if report.duplicates > 0 || report.orderViolations > 0 { throw ExitCode.failure }
    }

    /// Starts one request every `1/rate` seconds until `end`, whatever the answers; latency counts
    /// from each request's scheduled start, so that a slow answer cannot hide the queue behind it.
    static func openLoop(client: StampIDClient<ContinuousClock>, recorder: LoadRecorder, shard: Int, rate: Double, start: ContinuousClock.Instant, end: ContinuousClock.Instant) async {
        let clock = ContinuousClock()
        // Each start time is computed from its index, so rounding never drifts the schedule.
        var index: Int64 = 0
        func dueTime(_ index: Int64) -> ContinuousClock.Instant {
            start.advanced(by: .nanoseconds(Int64((Double(index) * 1e9 / rate).rounded())))
        }
        await withDiscardingTaskGroup { group in
            var due = start
            while due < end {
                let now = clock.now
                if due > now { try? await clock.sleep(until: due) }
                // Every request already due starts now, so the schedule holds even when the loop wakes late.
                while due <= clock.now, due < end {
                    let scheduled = due
                    index += 1
                    due = dueTime(index)
                    // A client that cannot keep up would queue without bound; past the limit a call is not started.
                    guard recorder.inFlight.load(ordering: .relaxed) < LoadRecorder.inFlightLimit else {
                        recorder.recordNotStarted()
                        continue
                    }
                    recorder.inFlight.add(1, ordering: .relaxed)
                    let floor = recorder.floor
                    group.addTask {
                        defer { recorder.inFlight.subtract(1, ordering: .relaxed) }
                        do throws(StampClientError) {
                            let id = try await client.nextID(shard: shard)
                            recorder.record(id: id, floor: floor, latency: scheduled.duration(to: clock.now))
                        } catch {
                            recorder.recordFailure(error)
                        }
                    }
                }
            }
        }
    }

    /// Asks for one ID after another until `end`.
    static func closedLoop(client: StampIDClient<ContinuousClock>, recorder: LoadRecorder, shard: Int, end: ContinuousClock.Instant) async {
        let clock = ContinuousClock()
        var batch = LoadRecorder.Batch()
        var now = clock.now
        while now < end {
            let started = now
            do {
                let id = try await client.nextID(shard: shard)
                now = clock.now
                batch.record(id: id, latency: started.duration(to: now))
            } catch {
                now = clock.now
                recorder.recordFailure(error)
            }
            if batch.ids.count >= 4096 {
                recorder.merge(&batch)
            }
        }
        recorder.merge(&batch)
    }

    /// Prints a progress line to standard error once a second.
    static func progress(recorders: [LoadRecorder], clients: [StampIDClient<ContinuousClock>], start: ContinuousClock.Instant, end: ContinuousClock.Instant) async {
        let clock = ContinuousClock()
        var tick = start
        while true {
            tick = tick.advanced(by: .seconds(1))
            guard tick <= end else { return }
            do {
                try await clock.sleep(until: tick)
            } catch {
                return
            }
            var window = LoadRecorder.Window()
            for recorder in recorders { recorder.drainWindow(into: &window) }
            let retries = clients.map(\.statistics.retries).reduce(0, +)
            window.latencies.sort()
            let p99 = Percentiles.value(window.latencies, 0.99)
            let seconds = Int((start.duration(to: tick) / .seconds(1)).rounded())
            printError("t=\(seconds)s ids/s=\(window.ids) errors=\(window.failures) retries=\(retries) p99_ms=\(Percentiles.milliseconds(p99))")
        }
    }
}

/// What one load client saw: every ID, per-client order, failures and latencies.
final class LoadRecorder: Sendable {
    struct Batch {
        var ids: [Int64] = []
        var latencies: [Int64] = []
        var failures = 0
        var orderViolations = 0
        var failuresByCode: [String: Int] = [:]
        var last: Int64 = -1

        mutating func record(id: StampID, latency: Duration) {
            if id.rawValue <= last { orderViolations += 1 }
            last = max(last, id.rawValue)
            ids.append(id.rawValue)
            latencies.append(Percentiles.nanoseconds(latency))
        }
    }

    struct Window {
        var ids = 0
        var failures = 0
        var latencies: [Int64] = []
    }

    private struct State {
        var total = Batch()
        var window = Window()
    }

    private let state = Mutex(State())

    /// Most calls of one open-loop client in flight at once.
    static let inFlightLimit = 4096

    /// Calls of this client in flight now.
    let inFlight = Atomic<Int>(0)

    /// The greatest ID this client has received so far: every ID of a request started now must exceed it.
    var floor: Int64 { state.withLock { $0.total.last } }

    func record(id: StampID, floor: Int64, latency: Duration) {
        let nanoseconds = Percentiles.nanoseconds(latency)
        state.withLock { state in
            if id.rawValue <= floor { state.total.orderViolations += 1 }
            state.total.last = max(state.total.last, id.rawValue)
            state.total.ids.append(id.rawValue)
            state.total.latencies.append(nanoseconds)
            state.window.ids += 1
            state.window.latencies.append(nanoseconds)
        }
    }

    /// Counts a call that was due but not started because too many were in flight.
    func recordNotStarted() {
        let first = state.withLock { state in
            state.total.failures += 1
            state.window.failures += 1
            state.total.failuresByCode["not-started", default: 0] += 1
            return state.total.failuresByCode["not-started"] == 1
        }
        if first { printError("calls are not started while \(Self.inFlightLimit) are in flight: the client cannot keep up with the rate") }
    }

    /// Counts a failed call under its code; the first failure of each code is printed in full.
    func recordFailure(_ error: StampClientError) {
        let first = state.withLock { state in
            state.total.failures += 1
            state.window.failures += 1
            state.total.failuresByCode[error.code.rawValue, default: 0] += 1
            return state.total.failuresByCode[error.code.rawValue] == 1
        }
        if first { printError("first \(error.code.rawValue) failure: \(error)") }
    }

    /// Adds a closed-loop client's batch, whose order the client checked itself, and empties it.
    func merge(_ batch: inout Batch) {
        state.withLock { state in
            if let first = batch.ids.first, first <= state.total.last { state.total.orderViolations += 1 }
            state.total.ids += batch.ids
            state.total.latencies += batch.latencies
            state.total.failures += batch.failures
            state.total.orderViolations += batch.orderViolations
            state.total.last = max(state.total.last, batch.last)
            state.window.ids += batch.ids.count
            state.window.failures += batch.failures
            state.window.latencies += batch.latencies
        }
        let last = batch.last
        batch = Batch()
        batch.last = last
    }

    func drainWindow(into window: inout Window) {
        state.withLock { state in
            window.ids += state.window.ids
            window.failures += state.window.failures
            window.latencies += state.window.latencies
            state.window = Window()
        }
    }

    var total: Batch { state.withLock { $0.total } }
}

/// The figures of a load run, and their text.
struct LoadReport {
    let ids: Int
    let failures: Int
    let duplicates: Int
    let orderViolations: Int
    let text: String

    init(recorders: [LoadRecorder], statistics: [StampClientStatistics], elapsed: Duration) {
        let totals = recorders.map(\.total)
        var all = totals.flatMap(\.ids)
        all.sort()
        var duplicates = 0
        for index in all.indices.dropFirst() where all[index] == all[index - 1] { duplicates += 1 }
        var latencies = totals.flatMap(\.latencies)
        latencies.sort()
        let seconds = max(elapsed / .seconds(1), 0.001)
        let requests = statistics.map(\.requests).reduce(0, +)
        let retries = statistics.map(\.retries).reduce(0, +)
        let failovers = statistics.map(\.failovers).reduce(0, +)
        let attempts = statistics.map(\.attempts).reduce(0, +)
        let prefetched = statistics.map(\.prefetchHits).reduce(0, +)
        let discarded = statistics.map(\.prefetchDiscarded).reduce(0, +)
        ids = all.count
        failures = totals.map(\.failures).reduce(0, +)
        let failuresByCode = totals.map(\.failuresByCode).reduce(into: [String: Int]()) { $0.merge($1, uniquingKeysWith: +) }
        self.duplicates = duplicates
        orderViolations = totals.map(\.orderViolations).reduce(0, +)
        let rate = Int((Double(ids) / seconds).rounded())
        let p99 = Percentiles.milliseconds(Percentiles.value(latencies, 0.99))
        text = """
        duration:          \(String(format: "%.1f", seconds)) s
        calls:             \(ids + failures) (\(ids) IDs, \(failures) failed\(failuresByCode.isEmpty ? "" : ": " + failuresByCode.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")))
        requests to nodes: \(requests) (\(attempts) attempts, \(retries) retries, \(failovers) failovers)
        prefetch:          \(prefetched) IDs from buffers, \(discarded) discarded as old
        duplicates:        \(duplicates)
        order violations:  \(orderViolations)
        latency (ms):      p50 \(Percentiles.milliseconds(Percentiles.value(latencies, 0.5))) p99 \(p99) p99.9 \(Percentiles.milliseconds(Percentiles.value(latencies, 0.999))) max \(Percentiles.milliseconds(latencies.last ?? 0))
        ids=\(ids) failed=\(failures) duplicates=\(duplicates) order_violations=\(orderViolations) rate=\(rate) p99_ms=\(p99)
        """
    }
}

/// Percentiles of sorted latency samples in nanoseconds.
enum Percentiles {
    static func value(_ sorted: [Int64], _ quantile: Double) -> Int64 {
        guard !sorted.isEmpty else { return 0 }
        let rank = Int((quantile * Double(sorted.count)).rounded(.up)) - 1
        return sorted[min(sorted.count - 1, max(0, rank))]
    }

    static func milliseconds(_ nanoseconds: Int64) -> String {
        String(format: "%.3f", Double(nanoseconds) / 1e6)
    }

    static func nanoseconds(_ duration: Duration) -> Int64 {
        duration.components.seconds * 1_000_000_000 + duration.components.attoseconds / 1_000_000_000
    }
}
