import ArgumentParser
import Foundation
import Hummingbird
import Logging
import Metrics
import Prometheus
import ServiceLifecycle
import StampCoordination
import StampDatabase
import StampCore
import StampGeneratorNode
import StampShardMap

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run an ID generator node.",
        discussion: """
        The node claims the lowest free node ID from the coordination store under a lease, persists a \
        time reservation ahead of use, and serves IDs over HTTP until SIGINT or SIGTERM, when it releases \
        its lease. Start several nodes on one store to form a cluster; no node ID is configured by hand.

        Every option can also be set in the environment variable named after it (STAMP_LISTEN, STAMP_STORE, \
        STAMP_LEASE_TTL, ...). Durations take a unit: 500ms, 10s, 2m.
        """
    )

    @Option(help: ArgumentHelp("Address to listen on. [env: STAMP_LISTEN] (default: 127.0.0.1:7400)", valueName: "host:port"))
    var listen: String?

    @Option(help: ArgumentHelp("Coordination store: sqlite:PATH or postgres://USER[:PASSWORD]@HOST:PORT/DB. [env: STAMP_STORE] (default: sqlite:.stamp/coordination.sqlite)", valueName: "location"))
    var store: String?

    @Option(help: ArgumentHelp("URL others reach this node at, recorded with its lease. [env: STAMP_ADVERTISE] (default: http://<listen>, with the port bound when it is 0)", valueName: "url"))
    var advertise: String?

    @Option(help: ArgumentHelp("File to write the port bound to once listening (useful with --listen HOST:0). [env: STAMP_PORT_FILE]", valueName: "path"))
    var portFile: String?

    @Option(help: ArgumentHelp("ID layout; every node of a cluster must use the same. [env: STAMP_LAYOUT] (default: \(IDLayout.default))", valueName: "spec"))
    var layout: String?

    @Option(help: ArgumentHelp("Lease duration. [env: STAMP_LEASE_TTL] (default: 10s)", valueName: "duration"))
    var leaseTtl: String?

    @Option(help: ArgumentHelp("Stop issuing this long before an unrenewed lease ends. [env: STAMP_LEASE_MARGIN] (default: 2s)", valueName: "duration"))
    var leaseMargin: String?

    @Option(help: ArgumentHelp("How far ahead the persisted reservation reaches. [env: STAMP_RESERVATION_WINDOW] (default: 3s)", valueName: "duration"))
    var reservationWindow: String?

    @Option(help: ArgumentHelp("Pause after a failed claim or renewal. [env: STAMP_RETRY_INTERVAL] (default: 500ms)", valueName: "duration"))
    var retryInterval: String?

    @Option(help: ArgumentHelp("How far logical time may run ahead of the wall clock. [env: STAMP_MAX_LEAD] (default: 1s)", valueName: "duration"))
    var maxLead: String?

    @Option(help: ArgumentHelp("Largest count of one request. [env: STAMP_MAX_COUNT] (default: 10000)", valueName: "n"))
    var maxCount: Int?

    @Option(help: ArgumentHelp("Close connections idle this long. [env: STAMP_IDLE_TIMEOUT] (default: 60s)", valueName: "duration"))
    var idleTimeout: String?

    @Option(help: ArgumentHelp("Refuse to start when the layout runs out within this many days. [env: STAMP_MIN_LIFETIME_DAYS] (default: 365)", valueName: "days"))
    var minLifetimeDays: Int?

    @Option(help: ArgumentHelp("Shard map file; when given, IDs are issued only for shards it lists, and the file is re-read as it changes. [env: STAMP_SHARD_MAP] (default: every shard of the layout)", valueName: "path"))
    var shardMap: String?

    @Option(help: ArgumentHelp("trace, debug, info, notice, warning, error or critical. [env: STAMP_LOG_LEVEL] (default: info)", valueName: "level"))
    var logLevel: String?

    func validate() throws {
        _ = try settings()
    }

    /// The settings from flags, then the environment, then the defaults.
    func settings() throws -> (node: NodeConfiguration, server: ServerConfiguration, store: DatabaseLocation, shardMap: String?, logLevel: Logger.Level) {
        let environment = ProcessInfo.processInfo.environment
        func value(_ flag: String?, _ name: String) -> String? { flag ?? environment[name] }

        let listen = value(self.listen, "STAMP_LISTEN") ?? "127.0.0.1:7400"
        guard let colon = listen.lastIndex(of: ":"), let port = Int(listen[listen.index(after: colon)...]), (0...65535).contains(port), colon > listen.startIndex else {
            throw ValidationError("--listen must be host:port, such as 127.0.0.1:7400; got '\(listen)'")
        }
        var server = ServerConfiguration(host: String(listen[..<colon]), port: port, portFile: value(portFile, "STAMP_PORT_FILE"))
        server.idleTimeout = try DurationText.parse(value(idleTimeout, "STAMP_IDLE_TIMEOUT") ?? "60s", name: "--idle-timeout")

        let layout: IDLayout
        do {
            layout = try IDLayout(parsing: value(self.layout, "STAMP_LAYOUT") ?? IDLayout.default.description)
        } catch {
            throw ValidationError(error.description)
        }
        let lease = LeaseConfiguration(
            ttl: try DurationText.parse(value(leaseTtl, "STAMP_LEASE_TTL") ?? "10s", name: "--lease-ttl"),
            margin: try DurationText.parse(value(leaseMargin, "STAMP_LEASE_MARGIN") ?? "2s", name: "--lease-margin"),
            reservationWindow: try DurationText.parse(value(reservationWindow, "STAMP_RESERVATION_WINDOW") ?? "3s", name: "--reservation-window"),
            retryInterval: try DurationText.parse(value(retryInterval, "STAMP_RETRY_INTERVAL") ?? "500ms", name: "--retry-interval")
        )
        do {
            try lease.validate()
        } catch {
            throw ValidationError(error.message)
        }
        let maxLead = try DurationText.parse(value(self.maxLead, "STAMP_MAX_LEAD") ?? "1s", name: "--max-lead")
        let maxCount = try maxCount ?? environment["STAMP_MAX_COUNT"].map { text in
            guard let number = Int(text) else { throw ValidationError("STAMP_MAX_COUNT must be a whole number") }
            return number
        } ?? 10_000
        guard (1...IDGenerator.maxBatch).contains(maxCount) else { throw ValidationError("--max-count must be between 1 and \(IDGenerator.maxBatch)") }
        let days = try minLifetimeDays ?? environment["STAMP_MIN_LIFETIME_DAYS"].map { text in
            guard let number = Int(text), number >= 0 else { throw ValidationError("STAMP_MIN_LIFETIME_DAYS must be a whole number of days") }
            return number
        } ?? 365
        let advertise = value(self.advertise, "STAMP_ADVERTISE")
        let node = NodeConfiguration(
            layout: layout,
            maxLeadMilliseconds: maxLead.wholeMilliseconds,
            lease: lease,
            advertisedAddress: advertise,
            maxCount: maxCount,
            minimumLifetime: .seconds(Int64(days) * 86_400)
        )
        let store = try DatabaseLocation.coordinationStore(parsing: value(self.store, "STAMP_STORE") ?? "sqlite:.stamp/coordination.sqlite")
        let levelText = value(logLevel, "STAMP_LOG_LEVEL") ?? "info"
        guard let level = Logger.Level(rawValue: levelText) else { throw ValidationError("--log-level must be one of trace, debug, info, notice, warning, error, critical") }
        return (node, server, store, value(shardMap, "STAMP_SHARD_MAP"), level)
    }

    func run() async throws {
        let settings = try settings()
        let (logger, registry) = ServerObservability.bootstrap(label: "stamp", level: settings.logLevel)

        var services: [ServiceGroupConfiguration.ServiceConfiguration] = []
        var knowsShard: (@Sendable (Int) async -> Bool)?
        if let path = settings.shardMap {
            let source: ShardMapSource<ContinuousClock>
            do {
                source = try ShardMapSource(path: path, layout: settings.node.layout, clock: ContinuousClock(), logger: logger)
            } catch {
                throw ValidationError("--shard-map: \(error.message)")
            }
            logger.notice("shard map loaded", metadata: ["stamp.shard_map.version": "\(source.current.version)", "stamp.shard_map.shards": "\(source.current.shards.map(\.id).sorted())"])
            services.append(.init(service: source))
            // An unknown shard may be in a newer version than the last poll saw: check the file first.
            knowsShard = { shard in
                source.knows(shard: shard) ? true : await source.refreshIfChanged().knows(shard: shard)
            }
        }
        let store = try settings.store.makeCoordinationStore(logger: logger)
        let listening = ListeningAddress()
        let node = GeneratorNode(configuration: settings.node, store: store, clock: ContinuousClock(), logger: logger, listening: listening)
        let application = buildApplication(node: node, server: settings.server, metrics: { registry.emitToString() }, knowsShard: knowsShard, listening: listening, logger: logger)
        let group = ServiceGroup(
            configuration: ServiceGroupConfiguration(
                services: services + [
                    .init(service: StoreService(store: store)),
                    .init(service: node),
                    .init(service: application),
                ],
                gracefulShutdownSignals: [.sigterm, .sigint],
                logger: logger
            )
        )
        do {
            try await group.run()
        } catch {
            await store.close()
            throw error
        }
        await store.close()
    }
}

/// Runs a coordination store's background work as a service.
struct StoreService: Service {
    let store: any CoordinationStore

    func run() async throws {
        do {
            try await cancelWhenGracefulShutdown {
                try await store.run()
            }
        } catch is CancellationError {
            // Graceful shutdown; the connections are closed after the group ends.
        }
    }
}

/// Durations written with a unit: `250ms`, `10s`, `2m`.
enum DurationText {
    static func parse(_ text: String, name: String) throws -> Duration {
        let units: [(String, Int64)] = [("ms", 1), ("s", 1000), ("m", 60_000)]
        for (unit, milliseconds) in units where text.hasSuffix(unit) {
            let number = text.dropLast(unit.count)
            if !number.isEmpty, number.allSatisfy(\.isASCII), number.allSatisfy(\.isNumber), let value = Int64(number), value <= 86_400_000 {
                return .milliseconds(value * milliseconds)
            }
        }
        throw ValidationError("\(name) must be a whole number with a unit (ms, s or m), such as 500ms or 10s; got '\(text)'")
    }
}

/// The process-wide logging and metrics of a server command: logs to standard error at `level`,
/// metrics to a Prometheus registry that `/metrics` renders.
enum ServerObservability {
    static func bootstrap(label: String, level: Logger.Level) -> (Logger, PrometheusCollectorRegistry) {
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
        var logger = Logger(label: label)
        logger.logLevel = level
        return (logger, registry)
    }
}
