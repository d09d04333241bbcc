import ArgumentParser
import Foundation
import Logging
import ServiceLifecycle
import StampDatabase
import StampLoadTesting

struct Demo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the whole system on this machine under load, then check every stored row.",
        discussion: """
        Starts, on loopback and in a temporary folder: 3 generator nodes on one coordination store, 3 shard \
        databases, 3 audit servers and, when HAProxy is installed (on PATH, /usr/sbin or /sbin), HAProxy in front \
        of them (TCP mode, each connection to the next server); without it the driver spreads the requests \
        round-robin over the audit servers itself. It then \
        drives audit writes and history reads at a fixed rate (open loop: latency counts from each request's \
        scheduled start) over keep-alive connections, with a progress line on standard error once a second. At \
        most one write per user is in flight, so each user's writes have an order. Beside them, as an application \
        server that is not the audit service would, it asks the generator nodes straight for single IDs at \
        --id-rate (through StampClient, the seed's policy, no prefetch, no coalescing) and keeps every ID it gets.

        Afterwards it reads every written user's history back and checks that every acknowledged write is stored \
        once, that no ID appears twice among the stored rows and the direct requests' IDs together, that each \
        user's rows are in write order and that the direct IDs rose. It reports the writes/s sustained, the ID \
        requests/s and IDs/s the generator nodes served in the same time (from their /metrics), the requests each \
        audit server answered, and the CPU the driver (and its audit traffic's thread), the balancer and the \
        servers took while load ran. The report ends in one line: writes=N rows=M duplicates=D \
        order_violations=V rate=R p99_ms=P id_requests_per_s=Q ids_per_s=I ids=K driver_cores=C \
        audit_driver_cores=A balancer_cores=B. The exit status is non-zero when any check or any request failed. Every started \
        process is stopped at the end, also on SIGINT or SIGTERM.

        With --postgres, the coordination store and the shards are PostgreSQL databases: on the server that \
        --postgres-url or STAMP_DEMO_POSTGRES_URL names (its user must be allowed to create databases; \
        stamp_demo_coordination and stamp_demo_shard_0..2 are dropped and created; the URL's sslmode and sslrootcert \
        carry over to every process, and a password comes from PGPASSWORD or a password file, never from the URL), \
        else on a throwaway cluster started with initdb and pg_ctl from PATH or the newest /usr/lib/postgresql/*/bin.

        With --etcd, the coordination store is a three-member etcd cluster started in the folder, on loopback, \
        from the installed etcd (on PATH, /usr/sbin or /sbin; Debian: apt-get install etcd-server); the shards \
        stay on SQLite, or on PostgreSQL with --postgres.
        """
    )

    @Option(help: ArgumentHelp("How long to drive load: 500ms, 30s, 2m.", valueName: "duration"))
    var duration: String = "10s"

    @Option(help: "Audit writes per second, started on a fixed schedule.")
    var rate: Int = DemoConfiguration().rate

    @Option(name: .customLong("id-rate"), help: "Single-ID requests per second straight at the generator nodes, beside the audit writes (0: none).")
    var idRate: Int = DemoConfiguration().idRate

    @Option(help: "How many users the writes are spread over.")
    var users: Int = DemoConfiguration().users

    @Option(help: ArgumentHelp("Fraction of requests that are history reads, from 0 up to (not including) 1.", valueName: "fraction"))
    var reads: Double = DemoConfiguration().readFraction

    @Flag(help: "Keep the coordination store and the shards on PostgreSQL instead of SQLite.")
    var postgres = false

    @Flag(help: "Keep the coordination store on a three-member etcd cluster started from the installed etcd.")
    var etcd = false

    @Option(name: .customLong("postgres-url"), help: ArgumentHelp("A PostgreSQL server to use for --postgres instead of a throwaway cluster. [env: STAMP_DEMO_POSTGRES_URL]", valueName: "url"))
    var postgresURL: String?

    @Flag(name: .customLong("no-load-balancer"), help: "Spread the requests round-robin from the driver even when HAProxy is installed.")
    var noLoadBalancer = false

    @Flag(help: "After the run, keep the servers running, and print their consoles' URLs, until interrupted (Ctrl-C); then keep the temporary folder (logs, databases, the consoles' tokens) and print its path.")
    var keep = false

    @Option(help: ArgumentHelp("Log level of the demo and the processes it starts: trace, debug, info, notice, warning, error or critical.", valueName: "level"))
    var logLevel: String = DemoConfiguration().logLevel.rawValue

    func validate() throws {
        _ = try demoConfiguration()
    }

    /// The run the options describe.
    func demoConfiguration() throws -> DemoConfiguration {
        guard (1...1_000_000).contains(rate) else { throw ValidationError("--rate must be between 1 and 1000000") }
        guard (0...1_000_000).contains(idRate) else { throw ValidationError("--id-rate must be between 0 and 1000000") }
        guard (1...1_000_000).contains(users) else { throw ValidationError("--users must be between 1 and 1000000") }
        guard reads >= 0, reads < 1 else { throw ValidationError("--reads must be at least 0 and below 1") }
        guard let level = Logger.Level(rawValue: logLevel) else {
            throw ValidationError("--log-level must be one of trace, debug, info, notice, warning, error, critical")
        }
        var configuration = DemoConfiguration()
        configuration.duration = try DurationText.parse(duration, name: "--duration")
        configuration.rate = rate
        configuration.idRate = idRate
        configuration.users = users
        configuration.readFraction = reads
        if let url = postgresURL ?? (postgres ? ProcessInfo.processInfo.environment["STAMP_DEMO_POSTGRES_URL"] : nil) {
            let server: PostgresURL
            do {
                server = try PostgresURL(parsing: url)
            } catch {
                throw ValidationError("--postgres-url: \(error.message)")
            }
            guard server.password == nil else {
                throw ValidationError("--postgres-url must not hold a password: \(DatabaseLocation.passwordAdvice)")
            }
            configuration.databases = .postgresServer(url: url)
        } else if postgres {
            configuration.databases = .throwawayPostgres
        }
        configuration.etcdCoordination = etcd
        configuration.balancing = noLoadBalancer ? .driver : .haproxyWhenInstalled
        configuration.keepFolder = keep
        configuration.logLevel = level
        return configuration
    }

    func run() async throws {
        let configuration = try demoConfiguration()
        var logger = Logger(label: "stamp.demo") { StreamLogHandler.standardError(label: $0) }
        logger.logLevel = configuration.logLevel
        let printer = ProgressPrinter()
        let demo = DemoService(configuration: configuration, logger: logger, output: printer.output)
        let group = ServiceGroup(
            configuration: ServiceGroupConfiguration(
                services: [.init(service: demo, successTerminationBehavior: .gracefullyShutdownGroup)],
                gracefulShutdownSignals: [.sigterm, .sigint],
                logger: logger
            )
        )
        try await group.run()
        printer.endLine()
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
