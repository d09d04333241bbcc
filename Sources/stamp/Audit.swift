import ArgumentParser
import Foundation
import Hummingbird
import Logging
import Metrics
import Prometheus
import ServiceLifecycle
import StampAudit
import StampAuditServer
import StampAuditStore
import StampClient
import StampCore
import StampGeneratorNode
import StampShardMap

struct Audit: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "The audit log of changes to users' personal data.",
        subcommands: [AuditServe.self, AuditKey.self]
    )
}

struct AuditServe: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Run an audit server: record and read personal-data change events, each keyed by a Stamp ID.",
        discussion: """
        The server is stateless: run as many as you like behind a load balancer. Each write gets one ID from the \
        generator nodes (through the Stamp client: 2 s timeout, 3 retries 1 s apart, failover) for the user's \
        shard in the shard map, and one row in that shard's database, committed in groups. The shard map file is \
        re-read as it changes; a new version's databases are opened before it is used.

        Secrets come from the environment only, so that they never show in process lists: \
        STAMP_AUDIT_DATA_KEY (base64 of 32 random bytes: the AES-256-GCM key sealing before/after values; \
        `stamp audit key` prints a new one), STAMP_AUDIT_WRITER_TOKEN and STAMP_AUDIT_READER_TOKEN (bearer tokens, \
        16 characters or more). Other options can also be set in the environment variable named after them.
        """
    )

    @Option(help: ArgumentHelp("Address to listen on. [env: STAMP_AUDIT_LISTEN] (default: 127.0.0.1:7500)", valueName: "host:port"))
    var listen: String?

    @Option(help: ArgumentHelp("Shard map file; created with one SQLite shard beside it when missing. [env: STAMP_SHARD_MAP] (default: .stamp/shard-map.json)", valueName: "path"))
    var shardMap: String?

    @Option(help: ArgumentHelp("Comma-separated base URLs of generator nodes. [env: STAMP_GENERATORS] (default: http://127.0.0.1:7400)", valueName: "urls"))
    var generators: String?

    @Option(help: ArgumentHelp("ID layout of the generator cluster. [env: STAMP_LAYOUT] (default: \(IDLayout.default))", valueName: "spec"))
    var layout: String?

    @Option(help: ArgumentHelp("IDs each server prefetches per shard; 0 asks the generators for every write. [env: STAMP_AUDIT_PREFETCH] (default: 256)", valueName: "n"))
    var prefetch: Int?

    @Option(help: ArgumentHelp("Most rows committed in one transaction. [env: STAMP_AUDIT_MAX_BATCH] (default: 512)", valueName: "n"))
    var maxBatch: Int?

    @Option(help: ArgumentHelp("File to write the port bound to once listening (useful with --listen HOST:0). [env: STAMP_AUDIT_PORT_FILE]", valueName: "path"))
    var portFile: String?

    @Option(help: ArgumentHelp("trace, debug, info, notice, warning, error or critical. [env: STAMP_LOG_LEVEL] (default: info)", valueName: "level"))
    var logLevel: String?

    struct Settings {
        var server: ServerConfiguration
        var shardMapPath: String
        var generators: [String]
        var layout: IDLayout
        var prefetch: Int
        var maxBatch: Int
        var sealer: ValueSealer
        var tokens: AuditTokens
        var logLevel: Logger.Level
    }

    func validate() throws {
        _ = try settings()
    }

    func settings() throws -> Settings {
        let environment = ProcessInfo.processInfo.environment
        func value(_ flag: String?, _ name: String) -> String? { flag ?? environment[name] }
        func number(_ flag: Int?, _ name: String, _ option: String, default fallback: Int, range: ClosedRange<Int>) throws -> Int {
            let result = try flag ?? environment[name].map { text in
                guard let number = Int(text) else { throw ValidationError("\(name) must be a whole number") }
                return number
            } ?? fallback
            guard range.contains(result) else { throw ValidationError("\(option) must be between \(range.lowerBound) and \(range.upperBound)") }
            return result
        }

        let listen = value(self.listen, "STAMP_AUDIT_LISTEN") ?? "127.0.0.1:7500"
        guard let colon = listen.lastIndex(of: ":"), colon > listen.startIndex, let port = Int(listen[listen.index(after: colon)...]), (0...65535).contains(port) else {
            throw ValidationError("--listen must be host:port, such as 127.0.0.1:7500; got '\(listen)'")
        }
        let generators = (value(self.generators, "STAMP_GENERATORS") ?? "http://127.0.0.1:7400").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        guard !generators.isEmpty else { throw ValidationError("--generators must list at least one URL") }
        let layout: IDLayout
        do {
            layout = try IDLayout(parsing: value(self.layout, "STAMP_LAYOUT") ?? IDLayout.default.description)
        } catch {
            throw ValidationError(error.description)
        }
        guard let key = environment["STAMP_AUDIT_DATA_KEY"] else {
            throw ValidationError("set STAMP_AUDIT_DATA_KEY to the data key (base64 of 32 random bytes; `stamp audit key` prints a new one)")
        }
        guard let writer = environment["STAMP_AUDIT_WRITER_TOKEN"], let reader = environment["STAMP_AUDIT_READER_TOKEN"] else {
            throw ValidationError("set STAMP_AUDIT_WRITER_TOKEN and STAMP_AUDIT_READER_TOKEN to the bearer tokens of writers and readers")
        }
        let sealer: ValueSealer
        let tokens: AuditTokens
        do {
            sealer = try ValueSealer(base64Key: key)
            tokens = try AuditTokens(writer: writer, reader: reader)
        } catch {
            throw ValidationError(error.message)
        }
        let levelText = value(logLevel, "STAMP_LOG_LEVEL") ?? "info"
        guard let level = Logger.Level(rawValue: levelText) else { throw ValidationError("--log-level must be one of trace, debug, info, notice, warning, error, critical") }
        return Settings(
            server: ServerConfiguration(host: String(listen[..<colon]), port: port, maxBodySize: AuditLimits.maxBodyBytes, portFile: value(portFile, "STAMP_AUDIT_PORT_FILE")),
            shardMapPath: value(shardMap, "STAMP_SHARD_MAP") ?? ".stamp/shard-map.json",
            generators: generators,
            layout: layout,
            prefetch: try number(prefetch, "STAMP_AUDIT_PREFETCH", "--prefetch", default: 256, range: 0...10_000),
            maxBatch: try number(maxBatch, "STAMP_AUDIT_MAX_BATCH", "--max-batch", default: 512, range: 1...1000),
            sealer: sealer,
            tokens: tokens,
            logLevel: level
        )
    }

    func run() async throws {
        let settings = try settings()
        let (logger, registry) = ServerObservability.bootstrap(label: "stamp.audit", level: settings.logLevel)

        try Self.createDefaultMapIfMissing(at: settings.shardMapPath, logger: logger)
        let folder = URL(fileURLWithPath: settings.shardMapPath).deletingLastPathComponent().path
        let first: ShardMap
        do {
            first = try ShardMap.decode(Data(contentsOf: URL(fileURLWithPath: settings.shardMapPath)), layout: settings.layout)
        } catch let error as ShardMapError {
            throw ValidationError("--shard-map: \(error.message)")
        }
        let shards = ShardSet(initial: first, maxBatch: settings.maxBatch, commitsPerShard: { $0.database.hasPrefix("sqlite:") ? 1 : 4 }, logger: logger) { shard in
            try AuditStores.open(shard, folder: folder, logger: logger)
        }
        let source: ShardMapSource<ContinuousClock>
        do {
            source = try ShardMapSource(path: settings.shardMapPath, layout: settings.layout, clock: ContinuousClock(), logger: logger) { map in
                try await shards.prepare(map)
            }
        } catch {
            throw ValidationError("--shard-map: \(error.message)")
        }
        var clientConfiguration = StampClientConfiguration(nodes: settings.generators)
        if settings.prefetch > 0 {
            clientConfiguration.prefetch = StampClientConfiguration.Prefetch(capacity: settings.prefetch)
        }
        let client = StampIDClient(configuration: clientConfiguration, logger: logger)
        let service = AuditService(layout: settings.layout, shardMap: source, shards: shards, ids: client, sealer: settings.sealer, logger: logger)
        let application = buildAuditApplication(service: service, tokens: settings.tokens, server: settings.server, metrics: { registry.emitToString() }, logger: logger)
        logger.notice("audit server starting", metadata: [
            "stamp.listen": "\(settings.server.host):\(settings.server.port)", "stamp.shard_map.version": "\(first.version)",
            "stamp.generators": "\(settings.generators.joined(separator: ","))",
        ])
        let group = ServiceGroup(
            configuration: ServiceGroupConfiguration(
                services: [
                    .init(service: shards),
                    .init(service: source),
                    .init(service: client),
                    .init(service: application),
                ],
                gracefulShutdownSignals: [.sigterm, .sigint],
                logger: logger
            )
        )
        try await group.run()
    }

    /// Writes a one-shard map (an SQLite file beside it) when none exists, so the server starts on defaults.
    static func createDefaultMapIfMissing(at path: String, logger: Logger) throws {
        guard !FileManager.default.fileExists(atPath: path) else { return }
        let folder = URL(fileURLWithPath: path).deletingLastPathComponent()
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        try ShardMap.even(databases: ["sqlite:audit-shard-0.sqlite"]).write(to: path)
        logger.notice("shard map created", metadata: ["stamp.shard_map.path": "\(path)"])
    }
}

struct AuditKey: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "key",
        abstract: "Print a new random data key for STAMP_AUDIT_DATA_KEY (base64 of 32 bytes)."
    )

    func run() {
        print(ValueSealer.generateKey())
    }
}
