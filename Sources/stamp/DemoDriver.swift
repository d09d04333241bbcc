import ArgumentParser
import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import ServiceLifecycle
import StampAudit
import StampLoadBalancer
import StampShardMap
import Synchronization

/// Sends the writes and reads on their schedule, and shows progress.
struct DemoDriver: Sendable {
    let http: HTTPClient
    let base: String
    let writerToken: String
    let readerToken: String
    let plan: DemoPlan
    let recorder: DemoRecorder
    /// Makes this run's idempotency keys unique.
    let run = UUID().uuidString.prefix(8).lowercased()

    /// Most requests in flight at once; a request due past it is counted as not started. The HTTP
    /// client's pool queues what its connections cannot take, and a long queue only adds latency.
    static let inFlightLimit = 1024
    /// The client policy: per-attempt timeout, then up to 3 retries 1 s apart.
    static let attemptTimeout = TimeAmount.seconds(2)
    static let retries = 3
    static let fields = ["email", "phone", "address"]

    init(http: HTTPClient, base: String, writerToken: String, readerToken: String, plan: DemoPlan, recorder: DemoRecorder) {
        self.http = http
        self.base = base
        self.writerToken = writerToken
        self.readerToken = readerToken
        self.plan = plan
        self.recorder = recorder
    }

    /// Runs the schedule for the plan's duration, then waits for every request in flight.
    func drive() async {
        let clock = ContinuousClock()
        let start = clock.now
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await progress(start: start) }
            await schedule(start: start, end: start.advanced(by: plan.duration))
            group.cancelAll()
        }
    }

    /// Starts each write and read at its scheduled time whatever the answers (open loop).
    private func schedule(start: ContinuousClock.Instant, end: ContinuousClock.Instant) async {
        let clock = ContinuousClock()
        let writeRate = Double(plan.rate)
        let readRate = writeRate * plan.readFraction / (1 - plan.readFraction)
        // Each start time is computed from its index, so rounding never drifts the schedule.
        func due(_ index: Int64, rate: Double) -> ContinuousClock.Instant {
            rate > 0 ? start.advanced(by: .nanoseconds(Int64((Double(index) * 1e9 / rate).rounded()))) : end
        }
        var writes: Int64 = 0
        var reads: Int64 = 0
        var random = SystemRandomNumberGenerator()
        await withDiscardingTaskGroup { group in
            while true {
                let nextWrite = due(writes, rate: writeRate)
                let nextRead = due(reads, rate: readRate)
                let isWrite = nextWrite <= nextRead
                let scheduled = isWrite ? nextWrite : nextRead
                guard scheduled < end else { break }
                if scheduled > clock.now {
                    do {
                        try await clock.sleep(until: scheduled)
                    } catch {
                        break
                    }
                }
                if isWrite { writes += 1 } else { reads += 1 }
                guard recorder.inFlight.load(ordering: .relaxed) < Self.inFlightLimit else {
                    recorder.notStarted(write: isWrite, reason: "over \(Self.inFlightLimit) requests in flight")
                    continue
                }
                let user = Int.random(in: 0..<plan.users, using: &random)
                if isWrite {
                    guard let claim = recorder.claim(near: user) else {
                        recorder.notStarted(write: true, reason: "no user without a write in flight")
                        continue
                    }
                    recorder.inFlight.add(1, ordering: .relaxed)
                    group.addTask {
                        await write(claim, scheduled: scheduled)
                        recorder.inFlight.subtract(1, ordering: .relaxed)
                    }
                } else {
                    recorder.inFlight.add(1, ordering: .relaxed)
                    group.addTask {
                        await read(user: user, scheduled: scheduled)
                        recorder.inFlight.subtract(1, ordering: .relaxed)
                    }
                }
            }
        }
    }

    /// One logical write: retried with the same idempotency key, so that it is stored once.
    private func write(_ claim: DemoRecorder.Claim, scheduled: ContinuousClock.Instant) async {
        let field = Self.fields[claim.sequence % Self.fields.count]
        let body = #"{"field":"\#(field)","before":"\#(field)-\#(claim.sequence)","after":"\#(field)-\#(claim.sequence + 1)","actor":"demo","reason":"demo"}"#
        var request = HTTPClientRequest(url: "\(base)/v1/users/user-\(claim.user)/events")
        request.method = .POST
        request.headers.add(name: "Authorization", value: "Bearer \(writerToken)")
        request.headers.add(name: "Idempotency-Key", value: "demo-\(run)-\(claim.user)-\(claim.sequence)")
        request.headers.add(name: "Content-Type", value: "application/json")
        request.body = .bytes(ByteBuffer(string: body))
        var failure = "not sent"
        for attempt in 0...Self.retries {
            if attempt > 0 {
                recorder.countRetry()
                do {
                    try await Task.sleep(for: .seconds(1))
                } catch {
                    break
                }
            }
            do {
                let response = try await http.execute(request, timeout: Self.attemptTimeout)
                let answer = try await response.body.collect(upTo: 64 * 1024)
                let status = response.status.code
                if status == 201, let id = Self.id(in: answer) {
                    let replayed = response.headers.first(name: "Idempotent-Replayed") == "true"
                    recorder.acknowledge(claim, id: id, latency: scheduled.duration(to: .now), replayed: replayed)
                    return
                }
                failure = status == 201 ? "201 without an id" : "HTTP \(status)"
                // A request the server refused for what it is would be refused again.
                guard status >= 500 || status == 408 || status == 429 else { break }
            } catch {
                failure = Self.describe(error)
            }
        }
        recorder.fail(claim, reason: failure)
    }

    /// One history read of a user.
    private func read(user: Int, scheduled: ContinuousClock.Instant) async {
        var request = HTTPClientRequest(url: "\(base)/v1/users/user-\(user)/events?limit=50")
        request.headers.add(name: "Authorization", value: "Bearer \(readerToken)")
        do {
            let response = try await http.execute(request, timeout: Self.attemptTimeout)
            _ = try await response.body.collect(upTo: 4 << 20)
            if response.status == .ok {
                recorder.read(latency: scheduled.duration(to: .now))
            } else {
                recorder.readFailed(reason: "read: HTTP \(response.status.code)")
            }
        } catch {
            recorder.readFailed(reason: "read: \(Self.describe(error))")
        }
    }

    /// Prints a progress line to standard error once a second until cancelled; on a terminal the line is rewritten in place.
    private func progress(start: ContinuousClock.Instant) async {
        let clock = ContinuousClock()
        let terminal = isatty(STDERR_FILENO) == 1
        var tick = start
        while true {
            tick = tick.advanced(by: .seconds(1))
            do {
                try await clock.sleep(until: tick)
            } catch {
                break
            }
            var window = recorder.drainWindow()
            window.latencies.sort()
            let seconds = Int((start.duration(to: tick) / .seconds(1)).rounded())
            let line = "t=\(seconds)s writes/s=\(window.writes) reads/s=\(window.reads) failed=\(window.failures) in_flight=\(recorder.inFlight.load(ordering: .relaxed)) p99_ms=\(DemoReport.milliseconds(Percentiles.value(window.latencies, 0.99)))"
            if terminal {
                FileHandle.standardError.write(Data("\r\(line)\u{1B}[K".utf8))
            } else {
                printError(line)
            }
        }
        if terminal { FileHandle.standardError.write(Data("\n".utf8)) }
    }

    /// The decimal `"id"` member of a write's answer.
    static func id(in body: ByteBuffer) -> Int64? {
        let text = String(buffer: body)
        guard let member = text.range(of: #""id":""#) else { return nil }
        return Int64(text[member.upperBound...].prefix { $0.isASCII && $0.isNumber })
    }

    static func describe(_ error: any Error) -> String {
        if let error = error as? HTTPClientError { return "\(error)" }
        return String(describing: type(of: error)) + ": \(error)"
    }
}

/// Everything the driver saw: per user, the IDs of acknowledged writes in write order; totals;
/// and the figures of the current progress window.
final class DemoRecorder: Sendable {
    /// A user taken for one write, and the write's sequence number among that user's writes.
    struct Claim: Sendable {
        let user: Int
        let sequence: Int
    }

    struct User: Sendable {
        var busy = false
        var writes = 0
        var acknowledged: [Int64] = []
    }

    struct Window: Sendable {
        var writes = 0
        var reads = 0
        var failures = 0
        var latencies: [Int64] = []
    }

    struct Totals: Sendable {
        var acknowledged = 0
        var replayed = 0
        var retries = 0
        var failed = 0
        var notStarted = 0
        var reads = 0
        var readsFailed = 0
        var failures: [String: Int] = [:]
        var latencies: [Int64] = []
        var readLatencies: [Int64] = []
    }

    struct Snapshot: Sendable {
        /// Users that were written to, with their acknowledged IDs in write order.
        var users: [(user: Int, acknowledged: [Int64])]
        var totals: Totals
    }

    private struct State {
        var users: [User]
        var window = Window()
        var totals = Totals()
    }

    private let state: Mutex<State>
    /// Requests in flight now.
    let inFlight = Atomic<Int>(0)

    init(users: Int) {
        state = Mutex(State(users: Array(repeating: User(), count: users)))
    }

    /// Takes the first user from `user` on without a write in flight, looking at no more than 64.
    func claim(near user: Int) -> Claim? {
        state.withLock { state in
            let count = state.users.count
            for offset in 0..<min(count, 64) {
                let index = (user + offset) % count
                if !state.users[index].busy {
                    state.users[index].busy = true
                    state.users[index].writes += 1
                    return Claim(user: index, sequence: state.users[index].writes)
                }
            }
            return nil
        }
    }

    func acknowledge(_ claim: Claim, id: Int64, latency: Duration, replayed: Bool) {
        let nanoseconds = Percentiles.nanoseconds(latency)
        state.withLock { state in
            state.users[claim.user].busy = false
            state.users[claim.user].acknowledged.append(id)
            state.totals.acknowledged += 1
            if replayed { state.totals.replayed += 1 }
            state.totals.latencies.append(nanoseconds)
            state.window.writes += 1
            state.window.latencies.append(nanoseconds)
        }
    }

    func fail(_ claim: Claim, reason: String) {
        let first = state.withLock { state in
            state.users[claim.user].busy = false
            state.totals.failed += 1
            state.window.failures += 1
            state.totals.failures[reason, default: 0] += 1
            return state.totals.failures[reason] == 1
        }
        if first { printError("first failed write (\(reason))") }
    }

    func notStarted(write: Bool, reason: String) {
        let first = state.withLock { state in
            if write { state.totals.notStarted += 1 } else { state.totals.readsFailed += 1 }
            state.window.failures += 1
            state.totals.failures["not started: \(reason)", default: 0] += 1
            return state.totals.failures["not started: \(reason)"] == 1
        }
        if first { printError("a request was not started: \(reason); the machine cannot keep up with the rate") }
    }

    func countRetry() {
        state.withLock { $0.totals.retries += 1 }
    }

    func read(latency: Duration) {
        let nanoseconds = Percentiles.nanoseconds(latency)
        state.withLock { state in
            state.totals.reads += 1
            state.totals.readLatencies.append(nanoseconds)
            state.window.reads += 1
        }
    }

    func readFailed(reason: String) {
        let first = state.withLock { state in
            state.totals.readsFailed += 1
            state.window.failures += 1
            state.totals.failures[reason, default: 0] += 1
            return state.totals.failures[reason] == 1
        }
        if first { printError("first failed read (\(reason))") }
    }

    func drainWindow() -> Window {
        state.withLock { state in
            defer { state.window = Window() }
            return state.window
        }
    }

    func snapshot() -> Snapshot {
        state.withLock { state in
            let users = state.users.indices.filter { state.users[$0].writes > 0 }.map { ($0, state.users[$0].acknowledged) }
            return Snapshot(users: users, totals: state.totals)
        }
    }
}
