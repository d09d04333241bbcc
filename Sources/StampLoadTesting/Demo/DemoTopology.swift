import AsyncHTTPClient
import Foundation
import Logging
import StampAudit
import StampDatabase
import StampShardMap

/// Starts the topology in the folder, drives load through it and checks what was stored.
struct DemoTopology: Sendable {
    let configuration: DemoConfiguration
    let folder: URL
    let supervisor: ProcessSupervisor
    let logger: Logger
    let output: RunOutput
    let writerToken = "demo-writer-\(UUID().uuidString)"
    let readerToken = "demo-reader-\(UUID().uuidString)"

    func run() async throws -> DemoOutcome {
        var client = HTTPClient.Configuration()
        client.connectionPool = HTTPClient.Configuration.ConnectionPool(idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: 256)
        client.timeout = HTTPClient.Configuration.Timeout(connect: .seconds(2), read: .seconds(10))
        client.redirectConfiguration = .disallow
        let http = HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: client)
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
        let ports = folder.appendingPathComponent("ports")
        do {
            try FileManager.default.createDirectory(at: logs, withIntermediateDirectories: true)
            try FileManager.default.createDirectory(at: ports, withIntermediateDirectories: true)
        } catch {
            throw LoadTestingError(.setupFailed, "cannot create the demo's folders", cause: error)
        }
        let level = configuration.logLevel.rawValue
        output.note("stamp demo: folder \(folder.path)")

        let databases = try await prepareDatabases(logs: logs)
        let mapPath = folder.appendingPathComponent("shard-map.json").path
        try ShardMap.even(databases: databases.shards).write(to: mapPath)

        let generatorURLs = try await startServers(count: DemoConfiguration.generatorCount, name: "generator", http: http, logs: logs, ports: ports) { portFile in
            (["serve", "--listen", "127.0.0.1:0", "--port-file", portFile, "--store", databases.coordination.text, "--shard-map", mapPath, "--log-level", level], [:])
        }
        output.note("  generators:    \(generatorURLs.joined(separator: " ")) (coordination store: \(databases.kind))")

        let secrets = [
            "STAMP_AUDIT_DATA_KEY": ValueSealer.generateKey(),
            "STAMP_AUDIT_WRITER_TOKEN": writerToken,
            "STAMP_AUDIT_READER_TOKEN": readerToken,
        ]
        let auditURLs = try await startServers(count: DemoConfiguration.auditServerCount, name: "audit", http: http, logs: logs, ports: ports) { portFile in
            (["audit", "serve", "--listen", "127.0.0.1:0", "--port-file", portFile, "--shard-map", mapPath, "--generators", generatorURLs.joined(separator: ","), "--log-level", level], secrets)
        }
        output.note("  audit servers: \(auditURLs.joined(separator: " ")) (\(DemoConfiguration.shardCount) shards: \(databases.kind))")

        let setting = "\(DemoConfiguration.generatorCount) generators, \(DemoConfiguration.auditServerCount) audit servers, \(DemoConfiguration.shardCount) shards on \(databases.kind)"
        let haproxy = configuration.balancing == .haproxyWhenInstalled ? await HAProxy.find() : nil
        guard let haproxy else {
            let spread = "the driver spreads requests round-robin over \(auditURLs.count) audit servers"
            let balancing = configuration.balancing == .driver ? "no load balancer: \(spread)" : "no load balancer installed: \(spread)"
            output.note("  load balancer: none; \(spread)")
            return try await driveAndVerify(http: http, targets: AuditTargets(bases: auditURLs), topology: "\(setting), \(balancing)")
        }
        let listener = try LoopbackListener()
        let balancer: ChildProcess
        do {
            defer { listener.close() }
            balancer = try haproxy.start(listener: listener, backends: auditURLs.compactMap { URLComponents(string: $0)?.port }, folder: folder, log: logs.appendingPathComponent("haproxy.log"), supervisor: supervisor)
        }
        let balancerURL = "http://127.0.0.1:\(listener.port)"
        try await Readiness.waitUntilReady(balancer, url: "\(balancerURL)/health/ready", http: http)
        output.note("  load balancer: haproxy \(haproxy.version) at \(balancerURL)")
        return try await driveAndVerify(http: http, targets: AuditTargets(bases: [balancerURL]), topology: "\(setting), load balancer: haproxy \(haproxy.version) on 127.0.0.1:\(listener.port)")
    }

    /// Starts `count` servers on port 0, each told by `command` (given its port file) what to run,
    /// and returns their base URLs once each is ready.
    private func startServers(
        count: Int,
        name: String,
        http: HTTPClient,
        logs: URL,
        ports: URL,
        command: (String) -> (arguments: [String], environment: [String: String])
    ) async throws -> [String] {
        let servers = try (0..<count).map { index in
            let portFile = ports.appendingPathComponent("\(name)-\(index)").path
            let (arguments, environment) = command(portFile)
            let child = try supervisor.start(ChildProcess.Launch(
                name: "\(name)-\(index)",
                executable: configuration.stampExecutable,
                arguments: arguments,
                environment: environment,
                directory: folder.path,
                log: logs.appendingPathComponent("\(name)-\(index).log").path
            ))
            return (child, portFile)
        }
        var urls: [String] = []
        for (child, portFile) in servers {
            let url = "http://127.0.0.1:\(try await Readiness.port(writtenTo: portFile, by: child))"
            try await Readiness.waitUntilReady(child, url: "\(url)/health/ready", http: http)
            urls.append(url)
        }
        return urls
    }

    /// Drives the load, then reads every written user's history back and reports.
    private func driveAndVerify(http: HTTPClient, targets: AuditTargets, topology: String) async throws -> DemoOutcome {
        let output = self.output
        let users = UserLedger(users: configuration.users)
        @Sendable func firstOfReason(_ kind: String) -> @Sendable (RequestRecorder.Outcome, String, String) -> Void {
            { outcome, reason, detail in
                switch outcome {
                case .failed: output.note("first failed \(kind) (\(reason))")
                case .notStarted: output.note("a request was not started: \(detail); the machine cannot keep up with the rate")
                }
            }
        }
        let writes = RequestRecorder(firstOfReason: firstOfReason("write"))
        let reads = RequestRecorder(firstOfReason: firstOfReason("read"))
        let traffic = AuditTraffic(http: http, targets: targets, writerToken: writerToken, readerToken: readerToken, users: users, writes: writes, reads: reads)

        let clock = ContinuousClock()
        let runner = OpenLoopRunner(clock: clock, inFlightLimit: DemoConfiguration.inFlightLimit)
        let writeRate = Double(configuration.rate)
        let schedule = OpenLoopSchedule(rates: [writeRate, writeRate * configuration.readFraction / (1 - configuration.readFraction)], duration: configuration.duration)
        let userCount = configuration.users
        let started = clock.now
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                await ProgressTicker.run(clock: clock, from: started) { seconds in
                    let (written, read) = (writes.drainWindow(), reads.drainWindow())
                    let p99 = LatencySummary(written.latencies, decimals: DemoReport.decimals).milliseconds(0.99)
                    output.progress("t=\(seconds)s writes/s=\(written.answered) reads/s=\(read.answered) failed=\(written.unanswered + read.unanswered) in_flight=\(runner.inFlight) p99_ms=\(p99)")
                }
            }
            await runner.run(schedule, from: started) { slot, scheduled in
                let user = Int.random(in: 0..<userCount)
                guard slot.stream == 0 else {
                    await traffic.read(user: user, scheduled: scheduled)
                    return
                }
                guard let claim = users.claim(near: user) else {
                    writes.notStarted(reason: "not started: no user without a write in flight", detail: "no user without a write in flight")
                    return
                }
                await traffic.write(claim, scheduled: scheduled)
            } notStarted: { slot in
                let reason = "over \(DemoConfiguration.inFlightLimit) requests in flight"
                (slot.stream == 0 ? writes : reads).notStarted(reason: "not started: \(reason)", detail: reason)
            }
            group.cancelAll()
        }
        let drove = started.duration(to: clock.now)
        try Task.checkCancellation()

        let snapshot = users.snapshot()
        let checkStarted = clock.now
        let verification = try await DemoVerifier(http: http, targets: targets, readerToken: readerToken).verify(snapshot.users)
        let report = DemoReport(
            configuration: configuration,
            folder: folder,
            topology: topology,
            writes: writes.total,
            reads: reads.total,
            users: snapshot,
            verification: verification,
            drove: drove,
            checked: checkStarted.duration(to: clock.now)
        )
        return report.passed ? .passed(report) : .failedChecks(report)
    }

    /// Where the coordination store and the shards live: SQLite files in the folder, or PostgreSQL databases created fresh.
    private func prepareDatabases(logs: URL) async throws -> (coordination: DatabaseLocation, shards: [DatabaseLocation], kind: String) {
        let server: String
        switch configuration.databases {
        case .sqlite:
            return (
                .sqlite(path: folder.appendingPathComponent("coordination.sqlite").path),
                (0..<DemoConfiguration.shardCount).map { .sqlite(path: "shard-\($0).sqlite") },
                "SQLite"
            )
        case .throwawayPostgres:
            server = try await ThrowawayCluster.start(in: folder, supervisor: supervisor).url
        case .postgresServer(let url):
            server = url
        }
        let names = ["stamp_demo_coordination"] + (0..<DemoConfiguration.shardCount).map { "stamp_demo_shard_\($0)" }
        let psql = try PostgresTools.tool("psql")
        var arguments = [server, "-v", "ON_ERROR_STOP=1", "-q"]
        for name in names {
            arguments += ["-c", "DROP DATABASE IF EXISTS \(name) WITH (FORCE)", "-c", "CREATE DATABASE \(name)"]
        }
        try await ChildProcess.run(ChildProcess.Launch(name: "psql", executable: psql, arguments: arguments, log: logs.appendingPathComponent("psql.log").path))
        let locations = try names.map { DatabaseLocation.postgres(url: try PostgresTools.url(server, database: $0)) }
        return (locations[0], Array(locations.dropFirst()), "PostgreSQL")
    }
}
