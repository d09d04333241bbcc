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

struct Demo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the whole system on this machine under load, then check every stored row.",
        discussion: """
        Starts, on loopback and in a temporary folder: 3 generator nodes on one coordination store, 3 shard \
        databases, 3 audit servers and a load balancer in front of them (HAProxy or nginx when installed, else a \
        built-in round-robin proxy). It then drives audit writes and history reads through the balancer at a fixed \
        rate (open loop: latency counts from each request's scheduled start), with a progress line on standard \
        error once a second. At most one write per user is in flight, so each user's writes have an order.

        Afterwards it reads every written user's history back and checks that every acknowledged write is stored \
        once, that no ID appears twice in any shard, and that each user's rows are in write order. The report ends \
        in one line: writes=N rows=M duplicates=D order_violations=V rate=R p99_ms=P. The exit status is non-zero \
        when any check or any request failed. Every started process is stopped at the end, also on SIGINT or \
        SIGTERM.

        With --postgres, the coordination store and the shards are PostgreSQL databases: on the server that \
        --postgres-url or STAMP_DEMO_POSTGRES_URL names (its user must be allowed to create databases; \
        stamp_demo_coordination and stamp_demo_shard_0..2 are dropped and created), else on a throwaway cluster \
        started with initdb and pg_ctl from PATH or the newest /usr/lib/postgresql/*/bin.
        """
    )

    @Option(help: ArgumentHelp("How long to drive load: 500ms, 30s, 2m.", valueName: "duration"))
    var duration: String = "10s"

    @Option(help: "Audit writes per second, started on a fixed schedule.")
    var rate: Int = 500

    @Option(help: "How many users the writes are spread over.")
    var users: Int = 10_000

    @Option(help: ArgumentHelp("Fraction of requests that are history reads, from 0 up to (not including) 1.", valueName: "fraction"))
    var reads: Double = 0.1

    @Flag(help: "Keep the coordination store and the shards on PostgreSQL instead of SQLite.")
    var postgres = false

    @Option(name: .customLong("postgres-url"), help: ArgumentHelp("A PostgreSQL server to use for --postgres instead of a throwaway cluster. [env: STAMP_DEMO_POSTGRES_URL]", valueName: "url"))
    var postgresURL: String?

    @Flag(help: "Keep the temporary folder (logs and databases) and print its path.")
    var keep = false

    @Option(help: ArgumentHelp("Log level of the demo and the processes it starts: trace, debug, info, notice, warning, error or critical.", valueName: "level"))
    var logLevel: String = "notice"

    func validate() throws {
        _ = try plan()
    }

    /// The run the options describe.
    func plan() throws -> DemoPlan {
        guard (1...1_000_000).contains(rate) else { throw ValidationError("--rate must be between 1 and 1000000") }
        guard (1...1_000_000).contains(users) else { throw ValidationError("--users must be between 1 and 1000000") }
        guard reads >= 0, reads < 1 else { throw ValidationError("--reads must be at least 0 and below 1") }
        guard let level = Logger.Level(rawValue: logLevel) else {
            throw ValidationError("--log-level must be one of trace, debug, info, notice, warning, error, critical")
        }
        let length = try DurationText.parse(duration, name: "--duration")
        var database = DemoPlan.Database.sqlite
        if let url = postgresURL ?? (postgres ? ProcessInfo.processInfo.environment["STAMP_DEMO_POSTGRES_URL"] : nil) {
            guard url.hasPrefix("postgres://") || url.hasPrefix("postgresql://"), URLComponents(string: url)?.host != nil else {
                throw ValidationError("--postgres-url must be postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE")
            }
            database = .postgresServer(url: url)
        } else if postgres {
            database = .throwawayPostgres
        }
        return DemoPlan(duration: length, rate: rate, users: users, readFraction: reads, database: database, keep: keep, logLevel: level)
    }

    func run() async throws {
        let plan = try plan()
        var logger = Logger(label: "stamp.demo") { StreamLogHandler.standardError(label: $0) }
        logger.logLevel = plan.logLevel
        let demo = DemoService(plan: plan, logger: logger)
        let group = ServiceGroup(
            configuration: ServiceGroupConfiguration(
                services: [.init(service: demo, successTerminationBehavior: .gracefullyShutdownGroup)],
                gracefulShutdownSignals: [.sigterm, .sigint],
                logger: logger
            )
        )
        try await group.run()
        switch demo.outcome {
        case .passed(let report):
            print(report)
        case .failedChecks(let report):
            print(report)
            throw ExitCode.failure
        case .failed(let message):
            printError("stamp demo: \(message)")
            throw ExitCode.failure
        case .interrupted, nil:
            printError("stamp demo: interrupted; every started process was stopped")
            throw ExitCode(130)
        }
    }
}

/// What to run, from the command line.
struct DemoPlan: Sendable {
    enum Database: Sendable {
        case sqlite
        case throwawayPostgres
        case postgresServer(url: String)
    }

    var duration: Duration
    var rate: Int
    var users: Int
    var readFraction: Double
    var database: Database
    var keep: Bool
    var logLevel: Logger.Level

    static let generatorCount = 3
    static let auditServerCount = 3
    static let shardCount = 3
}

/// How a demo run ended.
enum DemoOutcome: Sendable {
    case passed(String)
    case failedChecks(String)
    case failed(String)
    case interrupted
}


/// The demo as a service: runs until done, or until graceful shutdown (SIGINT, SIGTERM) cancels
/// it; either way every process it started is stopped, and its folder deleted, before it returns.
final class DemoService: Service, Sendable {
    let plan: DemoPlan
    let logger: Logger
    private let result = Mutex<DemoOutcome?>(nil)

    init(plan: DemoPlan, logger: Logger) {
        self.plan = plan
        self.logger = logger
    }

    /// How the run ended; `nil` until ``run()`` returns.
    var outcome: DemoOutcome? { result.withLock { $0 } }

    func run() async throws {
        let folder: URL
        do {
            folder = try DemoFolder.make()
        } catch {
            result.withLock { $0 = .failed("cannot create a temporary folder: \(error)") }
            return
        }
        let processes = ChildProcesses()
        let topology = DemoTopology(plan: plan, folder: folder, processes: processes, logger: logger)
        let outcome: DemoOutcome
        do {
            outcome = try await cancelWhenGracefulShutdown {
                try await topology.run()
            }
        } catch {
            outcome = Task.isShuttingDownGracefully || error is CancellationError ? .interrupted : .failed("\(error)")
        }
        await processes.stopAll()
        if plan.keep {
            printError("kept the folder \(folder.path)")
        } else {
            try? FileManager.default.removeItem(at: folder)
        }
        result.withLock { $0 = outcome }
    }
}

/// A failure of the demo's set-up, with a message to show.
struct DemoError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// Starts the topology in the folder, drives load through the balancer and checks what was stored.
struct DemoTopology: Sendable {
    let plan: DemoPlan
    let folder: URL
    let processes: ChildProcesses
    let logger: Logger
    let writerToken = "demo-writer-\(UUID().uuidString)"
    let readerToken = "demo-reader-\(UUID().uuidString)"

    func run() async throws -> DemoOutcome {
        var configuration = HTTPClient.Configuration()
        configuration.connectionPool = HTTPClient.Configuration.ConnectionPool(idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: 256)
        configuration.timeout = HTTPClient.Configuration.Timeout(connect: .seconds(2), read: .seconds(10))
        configuration.redirectConfiguration = .disallow
        let http = HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: configuration)
        do {
            let outcome = try await run(http: http)
            try? await http.shutdown()
            return outcome
        } catch {
            try? await http.shutdown()
            throw error
        }
    }

    private func run(http: HTTPClient) async throws -> DemoOutcome {
        let logs = folder.appendingPathComponent("logs")
        try FileManager.default.createDirectory(at: logs, withIntermediateDirectories: true)
        let level = plan.logLevel.rawValue
        printError("stamp demo: folder \(folder.path)")

        let databases = try await prepareDatabases(logs: logs)
        let mapPath = folder.appendingPathComponent("shard-map.json").path
        try ShardMap.even(databases: databases.shards).write(to: mapPath)

        let generatorPorts = try (0..<DemoPlan.generatorCount).map { _ in try FreePort.next() }
        let generators = try generatorPorts.enumerated().map { index, port in
            try processes.start(
                name: "generator-\(index)",
                executable: ChildProcesses.stampExecutable,
                arguments: ["serve", "--listen", "127.0.0.1:\(port)", "--store", databases.coordination, "--shard-map", mapPath, "--log-level", level],
                log: logs.appendingPathComponent("generator-\(index).log"),
                directory: folder
            )
        }
        for (generator, port) in zip(generators, generatorPorts) {
            try await waitUntilReady(generator, url: "http://127.0.0.1:\(port)/health/ready", http: http)
        }
        let generatorURLs = generatorPorts.map { "http://127.0.0.1:\($0)" }
        printError("  generators:    \(generatorURLs.joined(separator: " ")) (coordination store: \(databases.kind))")

        let secrets = [
            "STAMP_AUDIT_DATA_KEY": ValueSealer.generateKey(),
            "STAMP_AUDIT_WRITER_TOKEN": writerToken,
            "STAMP_AUDIT_READER_TOKEN": readerToken,
        ]
        let auditPorts = try (0..<DemoPlan.auditServerCount).map { _ in try FreePort.next() }
        let auditServers = try auditPorts.enumerated().map { index, port in
            try processes.start(
                name: "audit-\(index)",
                executable: ChildProcesses.stampExecutable,
                arguments: ["audit", "serve", "--listen", "127.0.0.1:\(port)", "--shard-map", mapPath, "--generators", generatorURLs.joined(separator: ","), "--log-level", level],
                environment: secrets,
                log: logs.appendingPathComponent("audit-\(index).log"),
                directory: folder
            )
        }
        for (server, port) in zip(auditServers, auditPorts) {
            try await waitUntilReady(server, url: "http://127.0.0.1:\(port)/health/ready", http: http)
        }
        printError("  audit servers: \(auditPorts.map { "http://127.0.0.1:\($0)" }.joined(separator: " ")) (\(DemoPlan.shardCount) shards: \(databases.kind))")

        let balancerPort = try FreePort.next()
        let balancerURL = "http://127.0.0.1:\(balancerPort)"
        if let external = ExternalBalancer.find() {
            let balancer = try external.start(port: balancerPort, backends: auditPorts, folder: folder, logs: logs, processes: processes)
            try await waitUntilReady(balancer, url: "\(balancerURL)/health/ready", http: http)
            printError("  load balancer: \(external.name) at \(balancerURL)")
            return try await driveAndVerify(http: http, base: balancerURL, balancer: external.name, databases: databases.kind)
        }
        let proxy = try await RoundRobinProxy.bind(
            configuration: RoundRobinProxy.Configuration(port: balancerPort, backends: auditPorts.map { RoundRobinProxy.Configuration.Backend(port: $0) }),
            logger: logger
        )
        printError("  load balancer: built-in round-robin at \(balancerURL)")
        return try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await proxy.run() }
            defer { group.cancelAll() }
            return try await driveAndVerify(http: http, base: balancerURL, balancer: "built-in round-robin", databases: databases.kind)
        }
    }

    /// Drives the load, then reads every written user's history back and reports.
    private func driveAndVerify(http: HTTPClient, base: String, balancer: String, databases: String) async throws -> DemoOutcome {
        let recorder = DemoRecorder(users: plan.users)
        let driver = DemoDriver(http: http, base: base, writerToken: writerToken, readerToken: readerToken, plan: plan, recorder: recorder)
        let clock = ContinuousClock()
        let started = clock.now
        await driver.drive()
        let drove = started.duration(to: clock.now)
        try Task.checkCancellation()
        let snapshot = recorder.snapshot()
        let checkStarted = clock.now
        let verification = try await DemoVerifier(http: http, base: base, readerToken: readerToken).verify(snapshot.users)
        let report = DemoReport(
            plan: plan,
            folder: folder,
            setting: "\(DemoPlan.generatorCount) generators, \(DemoPlan.auditServerCount) audit servers, \(DemoPlan.shardCount) shards on \(databases), load balancer: \(balancer)",
            totals: snapshot.totals,
            verification: verification,
            drove: drove,
            checked: checkStarted.duration(to: clock.now)
        )
        return report.passed ? .passed(report.text) : .failedChecks(report.text)
    }

    /// Where the coordination store and the shards live: SQLite files in the folder, or PostgreSQL databases created fresh.
    private func prepareDatabases(logs: URL) async throws -> (coordination: String, shards: [String], kind: String) {
        let server: String
        switch plan.database {
        case .sqlite:
            return (
                "sqlite:\(folder.appendingPathComponent("coordination.sqlite").path)",
                (0..<DemoPlan.shardCount).map { "sqlite:shard-\($0).sqlite" },
                "SQLite"
            )
        case .throwawayPostgres:
            server = try await ThrowawayCluster.start(in: folder, processes: processes).url
        case .postgresServer(let url):
            server = url
        }
        let names = ["stamp_demo_coordination"] + (0..<DemoPlan.shardCount).map { "stamp_demo_shard_\($0)" }
        let psql = try PostgresTools.tool("psql")
        var arguments = [server, "-v", "ON_ERROR_STOP=1", "-q"]
        for name in names {
            arguments += ["-c", "DROP DATABASE IF EXISTS \(name) WITH (FORCE)", "-c", "CREATE DATABASE \(name)"]
        }
        try await ToolRun.run(psql, arguments, log: logs.appendingPathComponent("psql.log"))
        let urls = try names.map { try PostgresTools.url(server, database: $0) }
        return (urls[0], Array(urls.dropFirst()), "PostgreSQL")
    }

    /// Waits until `url` answers 200, polling every 100 ms for at most a minute: a started process
    /// gives no other sign that it is ready. Fails at once when the process ends.
    private func waitUntilReady(_ child: ChildProcess, url: String, http: HTTPClient) async throws {
        let clock = ContinuousClock()
        let deadline = clock.now.advanced(by: .seconds(60))
        while clock.now < deadline {
            guard child.isRunning else {
                throw DemoError("\(child.name) exited with status \(child.exitStatus); the end of \(child.log.path):\n\(child.logTail())")
            }
            if let response = try? await http.execute(HTTPClientRequest(url: url), timeout: .seconds(1)) {
                _ = try? await response.body.collect(upTo: 1 << 16)
                if response.status == .ok { return }
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw DemoError("\(child.name) was not ready within 60 s; the end of \(child.log.path):\n\(child.logTail())")
    }
}

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

/// Reads every written user's full history back through the balancer and compares it with what was acknowledged.
struct DemoVerifier: Sendable {
    let http: HTTPClient
    let base: String
    let readerToken: String

    static let concurrency = 32
    static let pageSize = 500

    struct Result: Sendable {
        var users = 0
        var unreadableUsers = 0
        var rows = 0
        var rowsPerShard: [Int: Int] = [:]
        var duplicates = 0
        var lost = 0
        var orderViolations = 0
        var foreignRows = 0
        var firstProblem: String?
    }

    private struct History: Sendable {
        let user: Int
        let acknowledged: [Int64]
        var ids: [Int64] = []
        var shards: [Int] = []
        var foreign = 0
        var problem: String?
    }

    private struct Page: Decodable {
        struct Event: Decodable {
            let id: String
            let userId: String
            let shard: Int?
        }

        let events: [Event]
        let next: String?
    }

    func verify(_ users: [(user: Int, acknowledged: [Int64])]) async throws -> Result {
        // Each worker stops at its first unreadable user, so that a broken server fails the check
        // quickly; the users it did not get to count as unreadable.
        let (histories, skipped) = try await withThrowingTaskGroup(of: ([History], Int).self) { group in
            for worker in 0..<Self.concurrency {
                group.addTask {
                    var histories: [History] = []
                    let indices = Array(stride(from: worker, to: users.count, by: Self.concurrency))
                    for (done, index) in indices.enumerated() {
                        try Task.checkCancellation()
                        let history = await history(of: users[index].user, acknowledged: users[index].acknowledged)
                        histories.append(history)
                        if history.problem != nil { return (histories, indices.count - done - 1) }
                    }
                    return (histories, 0)
                }
            }
            var all: [History] = []
            var skipped = 0
            for try await part in group {
                all += part.0
                skipped += part.1
            }
            return (all, skipped)
        }

        var result = Result(users: users.count, unreadableUsers: skipped)
        var seen = Set<Int64>()
        for history in histories {
            if let problem = history.problem {
                result.unreadableUsers += 1
                result.firstProblem = result.firstProblem ?? problem
            }
            result.rows += history.ids.count
            result.foreignRows += history.foreign
            for shard in history.shards { result.rowsPerShard[shard, default: 0] += 1 }
            for id in history.ids where !seen.insert(id).inserted { result.duplicates += 1 }
            let stored = Set(history.ids)
            let acknowledged = Set(history.acknowledged)
            result.lost += history.acknowledged.count { !stored.contains($0) }
            // The stored order is ascending ID; compare it with the write order over the rows both know.
            let storedOrder = history.ids.sorted().filter { acknowledged.contains($0) }
            let writeOrder = history.acknowledged.filter { stored.contains($0) }
            if storedOrder != writeOrder { result.orderViolations += 1 }
        }
        return result
    }

    /// Every page of one user's history, newest first; a page is tried up to 3 times.
    private func history(of user: Int, acknowledged: [Int64]) async -> History {
        var history = History(user: user, acknowledged: acknowledged)
        var cursor: String?
        while true {
            var page: Page?
            var failure = ""
            for attempt in 0..<3 {
                if attempt > 0 { try? await Task.sleep(for: .seconds(1)) }
                do {
                    var request = HTTPClientRequest(url: "\(base)/v1/users/user-\(user)/events?limit=\(Self.pageSize)" + (cursor.map { "&before=\($0)" } ?? ""))
                    request.headers.add(name: "Authorization", value: "Bearer \(readerToken)")
                    let response = try await http.execute(request, timeout: .seconds(5))
                    let body = try await response.body.collect(upTo: 64 << 20)
                    guard response.status == .ok else {
                        failure = "HTTP \(response.status.code): \(String(buffer: body).prefix(300))"
                        continue
                    }
                    page = try JSONDecoder().decode(Page.self, from: Data(buffer: body))
                    break
                } catch {
                    failure = DemoDriver.describe(error)
                }
            }
            guard let page else {
                history.problem = "the history of user-\(user) could not be read: \(failure)"
                return history
            }
            for event in page.events {
                guard let id = Int64(event.id) else {
                    history.problem = "user-\(user) has an event whose ID is not a decimal number: \(event.id)"
                    return history
                }
                history.ids.append(id)
                if let shard = event.shard { history.shards.append(shard) }
                if event.userId != "user-\(user)" { history.foreign += 1 }
            }
            guard let next = page.next else { return history }
            // A cursor must move to older events, or paging would never end.
            if let cursor, let previous = Int64(cursor), let following = Int64(next), following >= previous {
                history.problem = "the history of user-\(user) pages back to a newer cursor (\(next) after \(cursor))"
                return history
            }
            cursor = next
        }
    }
}

/// The figures of a demo run, and their text.
struct DemoReport {
    let text: String
    let passed: Bool

    init(plan: DemoPlan, folder: URL, setting: String, totals: DemoRecorder.Totals, verification: DemoVerifier.Result, drove: Duration, checked: Duration) {
        var latencies = totals.latencies
        latencies.sort()
        var readLatencies = totals.readLatencies
        readLatencies.sort()
        let seconds = max(drove / .seconds(1), 0.001)
        let rate = Int((Double(totals.acknowledged) / seconds).rounded())
        let p99 = Self.milliseconds(Percentiles.value(latencies, 0.99))
        let writes = totals.acknowledged
        let failures = totals.failures.sorted { $0.key < $1.key }.map { "\($0.value)× \($0.key)" }.joined(separator: "; ")
        let shards = verification.rowsPerShard.sorted { $0.key < $1.key }.map { "shard \($0.key): \($0.value)" }.joined(separator: ", ")
        passed = writes > 0 && verification.rows == writes && verification.duplicates == 0 && verification.orderViolations == 0
            && verification.lost == 0 && verification.unreadableUsers == 0 && verification.foreignRows == 0
            && totals.failed == 0 && totals.notStarted == 0 && totals.readsFailed == 0
        text = """
        folder:            \(folder.path)\(plan.keep ? " (kept)" : " (deleted)")
        topology:          \(setting)
        load:              \(plan.rate) writes/s scheduled for \(String(format: "%.1f", Double(plan.duration.components.seconds) + Double(plan.duration.components.attoseconds) / 1e18)) s over \(plan.users) users, \(Int((plan.readFraction * 100).rounded()))% of requests reads; ran \(String(format: "%.1f", seconds)) s until the last answer
        writes:            \(writes) acknowledged (\(totals.replayed) replayed), \(totals.failed) failed, \(totals.notStarted) not started, \(totals.retries) retries
        reads:             \(totals.reads) answered, \(totals.readsFailed) failed, p99 \(Self.milliseconds(Percentiles.value(readLatencies, 0.99))) ms
        failures:          \(failures.isEmpty ? "none" : failures)
        write latency (ms): p50 \(Self.milliseconds(Percentiles.value(latencies, 0.5))) p99 \(p99) p99.9 \(Self.milliseconds(Percentiles.value(latencies, 0.999))) max \(Self.milliseconds(latencies.last ?? 0))
        check:             \(verification.users) users read back in \(String(format: "%.1f", checked / .seconds(1))) s, \(verification.unreadableUsers) unreadable\(verification.firstProblem.map { " (\($0))" } ?? "")
        rows:              \(verification.rows)\(shards.isEmpty ? "" : " (\(shards))")\(verification.foreignRows > 0 ? ", \(verification.foreignRows) under another user" : "")
        lost:              \(verification.lost) acknowledged writes not stored
        duplicates:        \(verification.duplicates)
        order violations:  \(verification.orderViolations) users whose rows are not in write order
        result:            \(passed ? "passed" : "FAILED")
        writes=\(writes) rows=\(verification.rows) duplicates=\(verification.duplicates) order_violations=\(verification.orderViolations) rate=\(rate) p99_ms=\(p99)
        """
    }

    /// Milliseconds with one decimal.
    static func milliseconds(_ nanoseconds: Int64) -> String {
        String(format: "%.1f", Double(nanoseconds) / 1e6)
    }
}

/// The processes the demo started, and how to stop them all.
final class ChildProcesses: Sendable {
    private let state = Mutex<(children: [ChildProcess], afterwards: [@Sendable () async -> Void])>(([], []))

    /// This program, which the demo starts again for each node and server.
    static var stampExecutable: String {
        (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? Bundle.main.executablePath ?? CommandLine.arguments[0]
    }

    /// Starts a process whose output goes to `log`; it is stopped by ``stopAll()``.
    func start(name: String, executable: String, arguments: [String], environment: [String: String] = [:], log: URL, directory: URL) throws -> ChildProcess {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        process.currentDirectoryURL = directory
        _ = FileManager.default.createFile(atPath: log.path, contents: nil)
        let handle = try FileHandle(forWritingTo: log)
        process.standardOutput = handle
        process.standardError = handle
        process.standardInput = FileHandle.nullDevice
        let child = ChildProcess(name: name, process: process, log: log)
        // Started under the lock, so that a stop that begins meanwhile cannot miss it.
        try state.withLock { state in
            try process.run()
            state.children.append(child)
        }
        try? handle.close()
        return child
    }

    /// Adds a step to run after every process has ended, such as stopping a database cluster.
    func afterwards(_ step: @escaping @Sendable () async -> Void) {
        state.withLock { $0.afterwards.append(step) }
    }

    /// Sends SIGTERM to every process, waits up to 10 s for them to end, then SIGKILLs the rest;
    /// then runs the steps added with ``afterwards(_:)``, last first.
    func stopAll() async {
        let (children, steps) = state.withLock { state in
            defer { state = ([], []) }
            return state
        }
        for child in children where child.isRunning {
            kill(child.process.processIdentifier, SIGTERM)
        }
        let clock = ContinuousClock()
        let deadline = clock.now.advanced(by: .seconds(10))
        // Polling: a process's end gives no async signal here; 50 ms is short next to a server's shutdown.
        while children.contains(where: \.isRunning), clock.now < deadline {
            do {
                try await Task.sleep(for: .milliseconds(50))
            } catch {
                break
            }
        }
        for child in children where child.isRunning {
            printError("\(child.name) did not stop within 10 s of SIGTERM; killing it")
            kill(child.process.processIdentifier, SIGKILL)
            child.process.waitUntilExit()
        }
        for step in steps.reversed() {
            await step()
        }
    }
}

/// One started process and its log.
final class ChildProcess: @unchecked Sendable {
    let name: String
    /// `Process` is safe to query from any thread once it runs.
    let process: Process
    let log: URL

    init(name: String, process: Process, log: URL) {
        self.name = name
        self.process = process
        self.log = log
    }

    var isRunning: Bool { process.isRunning }

    var exitStatus: Int32 { process.isRunning ? 0 : process.terminationStatus }

    /// The last lines of the log.
    func logTail(lines: Int = 30) -> String {
        let text = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
        return text.split(separator: "\n", omittingEmptySubsequences: false).suffix(lines).joined(separator: "\n")
    }
}

/// Short-lived tools: initdb, pg_ctl, psql.
///
/// They are started with `posix_spawn`, not `Process`: Foundation learns that a process ended when
/// a socket the process inherits closes, and `pg_ctl start` leaves the server running with it open.
enum ToolRun {
    /// Runs `executable` to its end with its output appended to `log`; fails with the log's end unless it exits with 0.
    static func run(_ executable: String, _ arguments: [String], log: URL, directory: URL? = nil) async throws {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, log.path, O_WRONLY | O_CREAT | O_APPEND, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        // The demo ignores SIGINT and SIGTERM (it handles them through a dispatch source); tools get the defaults back.
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var defaults = sigset_t()
        sigemptyset(&defaults)
        sigaddset(&defaults, SIGINT)
        sigaddset(&defaults, SIGTERM)
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGDEF))
        // `env -C` starts the tool in `directory` (posix_spawn's own chdir action is not visible from Swift).
        let command = directory.map { ["/usr/bin/env", "-C", $0.path, executable] } ?? [executable]
        let argv = (command + arguments).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var pid: pid_t = 0
        let spawned = posix_spawn(&pid, command[0], &actions, &attributes, argv, environ)
        guard spawned == 0 else { throw DemoError("cannot run \(executable): \(String(cString: strerror(spawned)))") }
        let child = pid
        let status: Int32 = await withCheckedContinuation { finished in
            // waitpid blocks, so it waits on a thread of its own rather than on one of the concurrency pool.
            Thread.detachNewThread {
                var status: Int32 = 0
                while waitpid(child, &status, 0) == -1, errno == EINTR {}
                finished.resume(returning: status)
            }
        }
        // Exited normally with 0: no terminating signal in the low 7 bits, exit code 0 in the next 8.
        guard status & 0x7f == 0, (status >> 8) & 0xff == 0 else {
            let tail = ((try? String(contentsOf: log, encoding: .utf8)) ?? "").split(separator: "\n").suffix(20).joined(separator: "\n")
            throw DemoError("\(URL(fileURLWithPath: executable).lastPathComponent) failed (wait status \(status)); the end of \(log.path):\n\(tail)")
        }
    }
}

/// PostgreSQL's command-line tools, as `scripts/test` finds them.
enum PostgresTools {
    /// The directory of `initdb` on PATH, else the newest /usr/lib/postgresql/*/bin.
    static func directory() -> String? {
        if let initdb = ExecutableSearch.find("initdb", extraDirectories: []) {
            return URL(fileURLWithPath: initdb).resolvingSymlinksInPath().deletingLastPathComponent().path
        }
        let versions = (try? FileManager.default.contentsOfDirectory(atPath: "/usr/lib/postgresql")) ?? []
        return versions.sorted { $0.compare($1, options: .numeric) == .orderedDescending }
            .map { "/usr/lib/postgresql/\($0)/bin" }
            .first { FileManager.default.isExecutableFile(atPath: "\($0)/initdb") }
    }

    /// A tool from that directory, else from PATH.
    static func tool(_ name: String) throws -> String {
        if let directory = directory(), FileManager.default.isExecutableFile(atPath: "\(directory)/\(name)") {
            return "\(directory)/\(name)"
        }
        if let found = ExecutableSearch.find(name, extraDirectories: []) { return found }
        throw DemoError("PostgreSQL's \(name) was not found on PATH or in /usr/lib/postgresql/*/bin; install PostgreSQL")
    }

    /// `server` with its database replaced by `database`.
    static func url(_ server: String, database: String) throws -> String {
        guard var components = URLComponents(string: server) else { throw DemoError("the PostgreSQL URL is not a URL") }
        components.path = "/\(database)"
        guard let url = components.string else { throw DemoError("the PostgreSQL URL is not a URL") }
        return url
    }
}

/// A PostgreSQL cluster in the demo's folder on a free loopback port, deleted with the folder.
struct ThrowawayCluster: Sendable {
    let url: String

    /// Creates and starts the cluster; it is stopped after the demo's processes.
    static func start(in folder: URL, processes: ChildProcesses) async throws -> ThrowawayCluster {
        let initdb = try PostgresTools.tool("initdb")
        let pgCtl = try PostgresTools.tool("pg_ctl")
        let directory = folder.appendingPathComponent("postgres")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let log = directory.appendingPathComponent("setup.log")
        let prefix = try ownerPrefix(handingOver: directory)
        @Sendable func asOwner(_ tool: String, _ arguments: [String]) async throws {
            let command = prefix + [tool] + arguments
            try await ToolRun.run(command[0], Array(command.dropFirst()), log: log, directory: directory)
        }
        let data = directory.appendingPathComponent("data").path
        let port = try FreePort.next()
        try await asOwner(initdb, ["-D", data, "--auth=trust", "-U", "postgres", "--no-sync", "--encoding=UTF8", "--locale=C"])
        processes.afterwards {
            try? await asOwner(pgCtl, ["-D", data, "stop", "-m", "immediate"])
        }
        // Durability is pointless for a cluster that is deleted afterwards.
        try await asOwner(pgCtl, [
            "-D", data, "-l", directory.appendingPathComponent("postgres.log").path, "-w", "-t", "60",
            "-o", "-k \(directory.path) -h 127.0.0.1 -p \(port) -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300",
            "start",
        ])
        return ThrowawayCluster(url: "postgres://postgres@127.0.0.1:\(port)/postgres")
    }

    /// What runs a command as the cluster's owner. PostgreSQL refuses to run as root, so root hands
    /// the cluster's folder to the postgres user and runs the tools through runuser.
    private static func ownerPrefix(handingOver directory: URL) throws -> [String] {
        guard geteuid() == 0 else { return [] }
        guard let owner = getpwnam("postgres") else { throw DemoError("running as root, the PostgreSQL cluster needs a user named postgres") }
        guard let runuser = ExecutableSearch.find("runuser", extraDirectories: ["/usr/sbin", "/sbin"]) else { throw DemoError("running as root, starting PostgreSQL needs runuser") }
        guard chown(directory.path, owner.pointee.pw_uid, owner.pointee.pw_gid) == 0 else { throw DemoError("cannot hand \(directory.path) to the postgres user") }
        return [runuser, "-u", "postgres", "--"]
    }
}

/// HAProxy or nginx, when installed, in front of the audit servers.
struct ExternalBalancer: Sendable {
    let name: String
    let executable: String

    /// HAProxy, else nginx, from PATH or the system binary folders; `nil` when neither is installed.
    static func find() -> ExternalBalancer? {
        for name in ["haproxy", "nginx"] {
            if let executable = ExecutableSearch.find(name, extraDirectories: ["/usr/sbin", "/sbin"]) {
                return ExternalBalancer(name: name, executable: executable)
            }
        }
        return nil
    }

    /// Writes its configuration in `folder` and starts it in the foreground, round-robin over `backends`.
    func start(port: Int, backends: [Int], folder: URL, logs: URL, processes: ChildProcesses) throws -> ChildProcess {
        let directory = folder.appendingPathComponent(name)
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let configuration = directory.appendingPathComponent("\(name).conf")
        let arguments: [String]
        if name == "haproxy" {
            try """
            global
                maxconn 20000
            defaults
                mode http
                option http-keep-alive
                timeout connect 2s
                timeout client 60s
                timeout server 60s
            frontend audit
                bind 127.0.0.1:\(port)
                default_backend audit_servers
            backend audit_servers
                balance roundrobin
            \(backends.enumerated().map { "    server audit-\($0.offset) 127.0.0.1:\($0.element)" }.joined(separator: "\n"))

            """.write(to: configuration, atomically: true, encoding: .utf8)
            arguments = ["-db", "-f", configuration.path]
        } else {
            let path = directory.path
            try """
            daemon off;
            pid \(path)/nginx.pid;
            error_log \(path)/error.log warn;
            worker_processes 2;
            events { worker_connections 8192; }
            http {
                access_log off;
                client_body_temp_path \(path)/body;
                proxy_temp_path \(path)/proxy;
                fastcgi_temp_path \(path)/fastcgi;
                uwsgi_temp_path \(path)/uwsgi;
                scgi_temp_path \(path)/scgi;
                upstream audit_servers {
            \(backends.map { "        server 127.0.0.1:\($0);" }.joined(separator: "\n"))
                    keepalive 256;
                }
                server {
                    listen 127.0.0.1:\(port);
                    location / {
                        proxy_pass http://audit_servers;
                        proxy_http_version 1.1;
                        proxy_set_header Connection "";
                        proxy_set_header Host $host;
                    }
                }
            }

            """.write(to: configuration, atomically: true, encoding: .utf8)
            arguments = ["-p", "\(path)/", "-e", "\(path)/error.log", "-c", configuration.path]
        }
        return try processes.start(name: name, executable: executable, arguments: arguments, log: logs.appendingPathComponent("\(name).log"), directory: directory)
    }
}

/// Finds programs on PATH.
enum ExecutableSearch {
    static func find(_ name: String, extraDirectories: [String]) -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
        let directories = path.split(separator: ":").map(String.init) + extraDirectories
        return directories.map { "\($0)/\(name)" }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }
}

/// The demo's temporary folder.
enum DemoFolder {
    /// A new folder under the temporary directory, which other users may pass through (the
    /// PostgreSQL cluster runs as the postgres user) but not list.
    static func make() throws -> URL {
        var template = Array(FileManager.default.temporaryDirectory.appendingPathComponent("stamp-demo-XXXXXX").path.utf8CString)
        let made = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) != nil }
        guard made else { throw DemoError("mkdtemp failed: \(String(cString: strerror(errno)))") }
        let path = String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        chmod(path, 0o711)
        return URL(fileURLWithPath: path)
    }
}

/// Free loopback ports, found by binding port 0.
enum FreePort {
    static func next() throws -> Int {
        let socket = Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard socket >= 0 else { throw DemoError("cannot open a socket to find a free port") }
        defer { close(socket) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(socket, $0, length) == 0 && getsockname(socket, $0, &length) == 0 }
        }
        guard bound else { throw DemoError("no free loopback port") }
        return Int(UInt16(bigEndian: address.sin_port))
    }
}
