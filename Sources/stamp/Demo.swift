import ArgumentParser
import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import ServiceLifecycle
import StampAudit
import StampDatabase
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
        try ShardMap.even(databases: databases.shards.map(DatabaseLocation.init(parsing:))).write(to: mapPath)

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
