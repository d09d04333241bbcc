import ArgumentParser
import Hummingbird
import Logging
import StampCore
import StampDatabase
import StampGeneratorNode
import StampShardMap

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run an ID generator node.",
        discussion: """
        The node claims the lowest free node ID from the coordination store under a lease, persists a \
        time reservation ahead of use, and serves IDs over HTTP until SIGINT or SIGTERM, when it releases \
        its lease. Start several nodes on one store to form a cluster; no node ID is configured by hand.

        Every node serves the cluster console at /ui: the live nodes (lease, reservation headroom, clock lead \
        and skew, IDs/s and refusals over the last minute), refreshed every 2 s, and an ID decoder. With a \
        token, the page asks for it and sends it with the requests it makes.

        Every option can also be set in the environment variable named after it (STAMP_LISTEN, STAMP_STORE, \
        STAMP_LEASE_TTL, ...). Durations take a unit: 500ms, 10s, 2m.

        A PostgreSQL store's password comes from PGPASSWORD or a password file (PGPASSFILE, else ~/.pgpass, \
        lines HOST:PORT:DATABASE:USER:PASSWORD, mode 600), never from --store, which refuses one. sslmode=require \
        encrypts the connection; sslmode=verify-full also checks the server's certificate against sslrootcert \
        (else the system's authorities) and the host.

        An etcd store (etcd://HOST:PORT,HOST:PORT,.../PREFIX) names members of one cluster, tried in turn; \
        etcds:// talks TLS and checks each member's certificate against cacert (else the system's authorities). \
        A user's password comes from STAMP_ETCD_PASSWORD or the file STAMP_ETCD_PASSWORD_FILE names (mode 600), \
        never from --store, which refuses one.
        """
    )

    /// The defaults every option falls back to.
    static let defaults = GeneratorNodeServerConfiguration()

    @Option(help: ArgumentHelp("Address to listen on; port 0 binds a free port. [env: STAMP_LISTEN] (default: \(defaults.server.host):\(defaults.server.port))", valueName: "host:port"))
    var listen: String?

    @Option(help: ArgumentHelp("Coordination store: sqlite:PATH, postgres://USER@HOST:PORT/DB[?sslmode=disable|require|verify-full[&sslrootcert=CA.pem]] with no password (PGPASSWORD or a password file holds it), or etcd://[USER@]HOST:PORT[,HOST:PORT...][/PREFIX] (etcds://...[?cacert=CA.pem] for TLS; STAMP_ETCD_PASSWORD or STAMP_ETCD_PASSWORD_FILE holds a password). [env: STAMP_STORE] (default: \(defaults.store.text))", valueName: "location"))
    var store: String?

    @Option(help: ArgumentHelp("URL others reach this node at, recorded with its lease. [env: STAMP_ADVERTISE] (default: http://<listen>, with the port bound)", valueName: "url"))
    var advertise: String?

    @Option(help: ArgumentHelp("File to write the port bound to once listening (useful with --listen HOST:0). [env: STAMP_PORT_FILE]", valueName: "path"))
    var portFile: String?

    @Option(help: ArgumentHelp("ID layout; every node of a cluster must use the same. [env: STAMP_LAYOUT] (default: \(defaults.node.layout))", valueName: "spec"))
    var layout: String?

    @Option(help: ArgumentHelp("Lease duration. [env: STAMP_LEASE_TTL] (default: \(DurationText.format(defaults.node.lease.ttl)))", valueName: "duration"))
    var leaseTtl: String?

    @Option(help: ArgumentHelp("Stop issuing this long before an unrenewed lease ends. [env: STAMP_LEASE_MARGIN] (default: \(DurationText.format(defaults.node.lease.margin)))", valueName: "duration"))
    var leaseMargin: String?

    @Option(help: ArgumentHelp("How far ahead the persisted reservation reaches. [env: STAMP_RESERVATION_WINDOW] (default: \(DurationText.format(defaults.node.lease.reservationWindow)))", valueName: "duration"))
    var reservationWindow: String?

    @Option(help: ArgumentHelp("Pause after a failed claim or renewal. [env: STAMP_RETRY_INTERVAL] (default: \(DurationText.format(defaults.node.lease.retryInterval)))", valueName: "duration"))
    var retryInterval: String?

    @Option(help: ArgumentHelp("How far logical time may run ahead of the wall clock. [env: STAMP_MAX_LEAD] (default: \(DurationText.format(.milliseconds(defaults.node.maxLeadMilliseconds))))", valueName: "duration"))
    var maxLead: String?

    @Option(help: ArgumentHelp("Stop issuing while the wall clock is further than this from the coordination store's, measured at every claim and renewal; it must be below --max-lead. [env: STAMP_MAX_CLOCK_SKEW] (default: \(DurationText.format(defaults.node.lease.maxClockSkew)))", valueName: "duration"))
    var maxClockSkew: String?

    @Option(help: ArgumentHelp("Largest count of one request. [env: STAMP_MAX_COUNT] (default: \(defaults.node.maxCount))", valueName: "n"))
    var maxCount: Int?

    @Option(help: ArgumentHelp("Close connections idle this long. [env: STAMP_IDLE_TIMEOUT] (default: \(DurationText.format(defaults.server.idleTimeout)))", valueName: "duration"))
    var idleTimeout: String?

    @Option(help: ArgumentHelp("Refuse to start when the layout runs out within this many days. [env: STAMP_MIN_LIFETIME_DAYS] (default: \(defaults.node.minimumLifetime.components.seconds / Self.secondsPerDay))", valueName: "days"))
    var minLifetimeDays: Int?

    @Option(help: ArgumentHelp("Shard map file; when given, IDs are issued only for shards it lists, and the file is re-read as it changes. [env: STAMP_SHARD_MAP] (default: every shard of the layout)", valueName: "path"))
    var shardMap: String?

    @Option(help: ArgumentHelp("File holding the bearer token (16+ characters) that every request but /health/*, /metrics and the console's page (/ui, /ui/assets/*) must carry; the token itself may come in STAMP_TOKEN instead, never on the command line. [env: STAMP_TOKEN_FILE] (default: no token, an open API)", valueName: "path"))
    var tokenFile: String?

    @Option(help: ArgumentHelp("trace, debug, info, notice, warning, error or critical. [env: STAMP_LOG_LEVEL] (default: \(ServerObservability.defaultLevel))", valueName: "level"))
    var logLevel: String?

    static let secondsPerDay: Int64 = 86_400

    func validate() throws {
        _ = try settings()
    }

    /// The configuration from flags, then the environment, then the defaults; and the log level.
    func settings() throws -> (configuration: GeneratorNodeServerConfiguration, logLevel: Logger.Level) {
        let options = OptionValues()
        func duration(_ flag: String?, _ variable: String, _ name: String) throws -> Duration? {
            try options.text(flag, variable).map { try DurationText.parse($0, name: name) }
        }
        var configuration = Self.defaults
        if let listen = options.text(self.listen, "STAMP_LISTEN") {
            (configuration.server.host, configuration.server.port) = try OptionValues.listenAddress(listen, example: "\(Self.defaults.server.host):\(Self.defaults.server.port)")
        }
        configuration.server.portFile = options.text(portFile, "STAMP_PORT_FILE")
        if let idle = try duration(idleTimeout, "STAMP_IDLE_TIMEOUT", "--idle-timeout") { configuration.server.idleTimeout = idle }
        if let store = options.text(self.store, "STAMP_STORE") {
            configuration.store = try CoordinationStoreLocation(parsing: store)
        }
        if let text = options.text(self.layout, "STAMP_LAYOUT") {
            do {
                configuration.node.layout = try IDLayout(parsing: text)
            } catch {
                throw ValidationError(error.description)
            }
        }
        if let ttl = try duration(leaseTtl, "STAMP_LEASE_TTL", "--lease-ttl") { configuration.node.lease.ttl = ttl }
        if let margin = try duration(leaseMargin, "STAMP_LEASE_MARGIN", "--lease-margin") { configuration.node.lease.margin = margin }
        if let window = try duration(reservationWindow, "STAMP_RESERVATION_WINDOW", "--reservation-window") { configuration.node.lease.reservationWindow = window }
        if let retry = try duration(retryInterval, "STAMP_RETRY_INTERVAL", "--retry-interval") { configuration.node.lease.retryInterval = retry }
        if let skew = try duration(maxClockSkew, "STAMP_MAX_CLOCK_SKEW", "--max-clock-skew") { configuration.node.lease.maxClockSkew = skew }
        if let lead = try duration(maxLead, "STAMP_MAX_LEAD", "--max-lead") { configuration.node.maxLeadMilliseconds = lead.wholeMilliseconds }
        do {
            try configuration.node.validate()
        } catch {
            throw ValidationError(error.message)
        }
        if let count = try options.integer(maxCount, "STAMP_MAX_COUNT", option: "--max-count", range: 1...IDGenerator.maxBatch) { configuration.node.maxCount = count }
        if let days = try options.integer(minLifetimeDays, "STAMP_MIN_LIFETIME_DAYS", option: "--min-lifetime-days", range: 0...Int(Int64.max / Self.secondsPerDay)) {
            configuration.node.minimumLifetime = .seconds(Int64(days) * Self.secondsPerDay)
        }
        configuration.node.advertisedAddress = options.text(advertise, "STAMP_ADVERTISE")
        configuration.shardMapPath = options.text(shardMap, "STAMP_SHARD_MAP")
        if let text = try options.secret(file: tokenFile, fileVariable: "STAMP_TOKEN_FILE", variable: "STAMP_TOKEN") {
            guard let token = NodeToken(text) else { throw ValidationError("the token must be at least \(NodeToken.minimumLength) characters long") }
            configuration.token = token
        }
        let level = try OptionValues.logLevel(options.text(logLevel, "STAMP_LOG_LEVEL") ?? ServerObservability.defaultLevel.rawValue)
        return (configuration, level)
    }

    func run() async throws {
        let (configuration, level) = try settings()
        let (logger, registry) = ServerObservability.bootstrap(label: "stamp", level: level)
        do {
            try await buildApplication(configuration: configuration, metrics: { registry.emitToString() }, logger: logger).runService()
        } catch let error as ShardMapError {
            throw ValidationError("--shard-map: \(error.message)")
        }
    }
}
