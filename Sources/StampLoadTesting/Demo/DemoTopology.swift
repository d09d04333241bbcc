import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import NIOPosix
import StampAudit
import StampClient
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
    /// The generator nodes' bearer token, which the audit servers and the demo's own ID client send.
    let generatorToken = "demo-generator-\(UUID().uuidString)"
    let readerToken = "demo-reader-\(UUID().uuidString)"
    /// The audit servers' admin token, for the audit viewer's erasure; the load never sends it.
    let adminToken = "demo-admin-\(UUID().uuidString)"
    /// Where the consoles are, for ``announceConsoles()``.
    let consoles = DemoConsoles()

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
        let coordination = try await prepareCoordination(databases: databases, http: http)
        let mapPath = folder.appendingPathComponent("shard-map.json").path
        try ShardMap.even(databases: databases.shards).write(to: mapPath)

        let generators = try await startServers(count: DemoConfiguration.generatorCount, name: "generator", http: http, logs: logs, ports: ports) { portFile in
            (["serve", "--listen", "127.0.0.1:0", "--port-file", portFile, "--store", coordination.location, "--shard-map", mapPath, "--log-level", level], ["STAMP_TOKEN": generatorToken])
        }
        let generatorURLs = generators.map(\.url)
        consoles.generatorsStarted(generatorURLs)
        output.note("  generators:    \(generatorURLs.joined(separator: " ")) (coordination store: \(coordination.kind))")

        let secrets = [
            "STAMP_AUDIT_DATA_KEY": ValueSealer.generateKey(),
            "STAMP_AUDIT_SIGNING_KEY": CheckpointSigner.generateKey(),
            "STAMP_AUDIT_WRITER_TOKEN": writerToken,
            "STAMP_AUDIT_READER_TOKEN": readerToken,
            "STAMP_AUDIT_ADMIN_TOKEN": adminToken,
            "STAMP_TOKEN": generatorToken,
        ]
        let auditServers = try await startServers(count: DemoConfiguration.auditServerCount, name: "audit", http: http, logs: logs, ports: ports) { portFile in
            (["audit", "serve", "--listen", "127.0.0.1:0", "--port-file", portFile, "--shard-map", mapPath, "--generators", generatorURLs.joined(separator: ","), "--checkpoint-interval", "2s", "--log-level", level], secrets)
        }
        let auditURLs = auditServers.map(\.url)
        consoles.auditServersStarted(auditURLs)
        var servers = Servers(generators: generators, auditServers: auditServers, balancer: nil)
        let chains = ChainCheck(executable: configuration.stampExecutable, mapPath: mapPath, environment: secrets, log: logs.appendingPathComponent("verify.log").path)
        output.note("  audit servers: \(auditURLs.joined(separator: " ")) (\(DemoConfiguration.shardCount) shards: \(databases.kind))")

        let store = configuration.etcdCoordination ? " on \(coordination.kind)" : ""
        let setting = "\(DemoConfiguration.generatorCount) generators\(store), \(DemoConfiguration.auditServerCount) audit servers, \(DemoConfiguration.shardCount) shards on \(databases.kind)"
        let haproxy = configuration.balancing == .haproxyWhenInstalled ? await HAProxy.find() : nil
        guard let haproxy else {
            let spread = "the driver spreads requests round-robin over \(auditURLs.count) audit servers"
            let balancing = configuration.balancing == .driver ? "no load balancer: \(spread)" : "no load balancer installed: \(spread)"
            output.note("  load balancer: none; \(spread)")
            return try await driveAndVerify(http: http, targets: AuditTargets(bases: auditURLs), servers: servers, chains: chains, topology: "\(setting), \(balancing)")
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
        servers.balancer = balancer
        return try await driveAndVerify(http: http, targets: AuditTargets(bases: [balancerURL]), servers: servers, chains: chains, topology: "\(setting), load balancer: haproxy \(haproxy.version) on 127.0.0.1:\(listener.port)")
    }

    /// Writes the tokens the consoles ask for to the file `tokens` in the folder, and tells where
    /// each console is.
    func announceConsoles() {
        let tokens = folder.appendingPathComponent("tokens")
        do {
            try DemoConsoles.writeTokens([("STAMP_TOKEN", generatorToken), ("STAMP_AUDIT_WRITER_TOKEN", writerToken), ("STAMP_AUDIT_READER_TOKEN", readerToken), ("STAMP_AUDIT_ADMIN_TOKEN", adminToken)], to: tokens)
        } catch {
            output.note("stamp demo: \(error)")
        }
        output.note("stamp demo: the servers keep running until interrupted (Ctrl-C); the report follows then")
        for console in consoles.consoles {
            output.note("  \(console.name): \(console.url) (token: \(console.token) in \(tokens.path))")
        }
    }

    /// The servers the load goes through, whose metrics and CPU time the report shows.
    struct Servers {
        var generators: [(url: String, process: ChildProcess)]
        var auditServers: [(url: String, process: ChildProcess)]
        var balancer: ChildProcess?

        /// The CPU times now, with the thread time of the audit traffic's event loop.
        func sampleCPU(auditTraffic eventLoop: any EventLoop) async -> CPUShares.Sample {
            let auditTraffic = (try? await eventLoop.submit { ProcessCPU.threadTime }.get()) ?? .zero
            return CPUShares.sample(
                auditTraffic: auditTraffic,
                balancer: balancer?.processIdentifier,
                auditServers: auditServers.map(\.process.processIdentifier),
                generators: generators.map(\.process.processIdentifier)
            )
        }

        /// What the generators have served so far.
        func served(http: HTTPClient) async -> GeneratorCounts {
            await DemoTopology.metrics(generators.map(\.url), http: http).map(GeneratorCounts.init(metrics:)).reduce(GeneratorCounts(), +)
        }

        /// The API requests (under `/v1/`) each audit server has answered so far.
        func auditRequests(http: HTTPClient) async -> [Int] {
            await DemoTopology.metrics(auditServers.map(\.url), http: http).map {
                Int(PrometheusText.sum("stamp_http_request_duration_seconds_count", labels: [#"route="/v1/"#], in: $0))
            }
        }
    }

    /// Starts `count` servers on port 0, each told by `command` (given its port file) what to run,
    /// and returns their base URLs and processes once each is ready.
    private func startServers(
        count: Int,
        name: String,
        http: HTTPClient,
        logs: URL,
        ports: URL,
        command: (String) -> (arguments: [String], environment: [String: String])
    ) async throws -> [(url: String, process: ChildProcess)] {
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
        var started: [(url: String, process: ChildProcess)] = []
        for (child, portFile) in servers {
            let url = "http://127.0.0.1:\(try await Readiness.port(writtenTo: portFile, by: child))"
            try await Readiness.waitUntilReady(child, url: "\(url)/health/ready", http: http)
            started.append((url, child))
        }
        return started
    }

    /// Drives the load, then reads every written user's history back and reports.
    private func driveAndVerify(http: HTTPClient, targets: AuditTargets, servers: Servers, chains: ChainCheck, topology: String) async throws -> DemoOutcome {
        let output = self.output
        let users = UserLedger(users: configuration.users)
        @Sendable func firstOfReason(_ kind: String) -> @Sendable (RequestRecorder.Outcome, String, String) -> Void {
            { outcome, reason, detail in
                switch outcome {
                case .failed: output.note("first failed \(kind) (\(detail))")
                case .notStarted: output.note("a request was not started: \(detail); the machine cannot keep up with the rate")
                }
            }
        }
        let writes = RequestRecorder(firstOfReason: firstOfReason("write"))
        let reads = RequestRecorder(firstOfReason: firstOfReason("read"))
        let idCalls = RequestRecorder(firstOfReason: firstOfReason("ID request"))

        let clock = ContinuousClock()
        // A thread of its own, so that its CPU time is the audit traffic's alone.
        let eventLoops = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        defer { eventLoops.shutdownGracefully { _ in } }
        let clients = try await connect(to: targets, on: eventLoops.next())
        let auditRunner = EventLoopOpenLoop(eventLoop: clients[0].eventLoop, inFlightLimit: DemoConfiguration.inFlightLimit, wakeInterval: DemoConfiguration.wakeInterval)
        let idRunner = OpenLoopRunner(clock: clock, inFlightLimit: DemoConfiguration.inFlightLimit, wakeInterval: DemoConfiguration.wakeInterval)
        let traffic = AuditTraffic(clients: clients, writerToken: writerToken, readerToken: readerToken, users: users, writes: writes, reads: reads, runner: auditRunner)
        // An application server that is not the audit service: single-ID requests, the seed's policy, no prefetch.
        var idPolicy = StampClientConfiguration(nodes: servers.generators.map(\.url))
        idPolicy.coalescing = nil
        idPolicy.token = generatorToken
        let ids = LoadClient(client: StampIDClient(configuration: idPolicy, logger: logger), ids: IDLedger(), calls: idCalls)

        let writeRate = Double(configuration.rate)
        let auditSchedule = OpenLoopSchedule(rates: [writeRate, writeRate * configuration.readFraction / (1 - configuration.readFraction)], duration: configuration.duration)
        let idSchedule = OpenLoopSchedule(rates: [Double(configuration.idRate)], duration: configuration.duration)
        let servedBefore = await servers.served(http: http)
        let auditRequestsBefore = await servers.auditRequests(http: http)
        let cpuBefore = await servers.sampleCPU(auditTraffic: traffic.eventLoop)
        let started = clock.now
        await withTaskGroup(of: Void.self) { group in
            group.addTask { try? await ids.client.run() }
            group.addTask {
                await ProgressTicker.run(clock: clock, from: started) { seconds in
                    let (written, read, issued) = (writes.drainWindow(), reads.drainWindow(), idCalls.drainWindow())
                    let p99 = LatencySummary(written.latencies, decimals: DemoReport.decimals).milliseconds(0.99)
                    output.progress("t=\(seconds)s writes/s=\(written.answered) reads/s=\(read.answered) ids/s=\(issued.answered) failed=\(written.unanswered + read.unanswered + issued.unanswered) in_flight=\(auditRunner.inFlight) p99_ms=\(p99)")
                }
            }
            await withTaskGroup(of: Void.self) { drivers in
                drivers.addTask {
                    let busy = "over \(DemoConfiguration.inFlightLimit) requests in flight"
                    await withTaskCancellationHandler {
                        await auditRunner.run(auditSchedule, from: started) { slot, scheduled in
                            traffic.start(slot, scheduled: scheduled)
                        } notStarted: { slot in
                            (slot.stream == 0 ? writes : reads).notStarted(reason: "not started: " + busy, detail: busy)
                        }
                    } onCancel: {
                        traffic.cancel()
                    }
                }
                drivers.addTask {
                    await ids.openLoop(shard: 0, schedule: idSchedule, runner: idRunner, from: started)
                }
            }
            group.cancelAll()
        }
        let drove = started.duration(to: clock.now)
        let cpu = CPUShares(from: cpuBefore, to: await servers.sampleCPU(auditTraffic: traffic.eventLoop), elapsed: drove)
        let served = await servers.served(http: http) - servedBefore
        let auditRequests = zip(await servers.auditRequests(http: http), auditRequestsBefore).map { $0 - $1 }
        for client in clients { try? await client.close().get() }
        try Task.checkCancellation()

        let snapshot = users.snapshot()
        let checkStarted = clock.now
        let verification = try await DemoVerifier(http: http, targets: targets, readerToken: readerToken).verify(snapshot.users)
        let chainsVerified = try await chains.run()
        let report = DemoReport(
            configuration: configuration,
            folder: folder,
            topology: topology,
            writes: writes.total,
            reads: reads.total,
            users: snapshot,
            verification: verification,
            chains: chainsVerified,
            directIDs: DemoReport.DirectIDs(calls: idCalls.total, ledger: ids.ids.totals, retries: ids.client.statistics.retries),
            served: served,
            auditRequests: auditRequests,
            cpu: cpu,
            drove: drove,
            checked: checkStarted.duration(to: clock.now)
        )
        return report.passed ? .passed(report) : .failedChecks(report)
    }

    /// `stamp audit verify` over the demo's shards, with the audit servers' signing key: every
    /// shard's hash chain and checkpoints.
    struct ChainCheck: Sendable {
        let executable: String
        let mapPath: String
        let environment: [String: String]
        let log: String

        /// Whether every shard verified, and what the command printed.
        func run() async throws -> (verified: Bool, output: String) {
            let child = try ChildProcess.start(ChildProcess.Launch(name: "verify", executable: executable, arguments: ["audit", "verify", "--shard-map", mapPath], environment: environment, log: log))
            let termination = await child.waitForExit()
            await child.output.waitForEnd()
            return (termination == .exited(0), child.output.tail(lines: 20).split(whereSeparator: \.isNewline).joined(separator: "; "))
        }
    }

    /// A client of keep-alive connections to each of `targets`, on `eventLoop`.
    private func connect(to targets: AuditTargets, on eventLoop: any EventLoop) async throws -> [PipelinedHTTPClient] {
        var clients: [PipelinedHTTPClient] = []
        for base in targets.bases {
            guard let url = URLComponents(string: base), let host = url.host, let port = url.port else {
                throw LoadTestingError(.setupFailed, "\(base) is not an http://HOST:PORT address")
            }
            do {
                clients.append(try await PipelinedHTTPClient.connect(host: host, port: port, connections: DemoConfiguration.connectionsPerTarget, eventLoop: eventLoop))
            } catch {
                for client in clients { try? await client.close().get() }
                throw LoadTestingError(.setupFailed, "cannot open the driver's connections to \(base)", cause: error)
            }
        }
        return clients
    }

    /// The `/metrics` text of each server at `urls`; empty for one that does not answer it.
    static func metrics(_ urls: [String], http: HTTPClient) async -> [Substring] {
        var texts: [Substring] = []
        for url in urls {
            guard let response = try? await http.execute(HTTPClientRequest(url: "\(url)/metrics"), timeout: .seconds(5)),
                  let body = try? await response.body.collect(upTo: 16 << 20), response.status == .ok
            else {
                texts.append("")
                continue
            }
            texts.append(Substring(String(buffer: body)))
        }
        return texts
    }

    /// The generators' coordination store: the database prepared for it, or a three-member etcd cluster started now.
    private func prepareCoordination(databases: (coordination: DatabaseLocation, shards: [DatabaseLocation], kind: String), http: HTTPClient) async throws -> (location: String, kind: String) {
        guard configuration.etcdCoordination else { return (databases.coordination.text, databases.kind) }
        let cluster = try await ThrowawayEtcdCluster.start(in: folder, supervisor: supervisor, http: http)
        output.note("  etcd:          \(cluster.endpoints.joined(separator: " "))")
        return (cluster.storeLocation(), "etcd (\(ThrowawayEtcdCluster.memberCount) members)")
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
