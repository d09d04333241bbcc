import ArgumentParser
import Foundation
import Hummingbird
import Logging
import StampAudit
import StampAuditServer
import StampAuditService
import StampCore

struct Audit: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "The audit log of changes to users' personal data.",
        subcommands: [AuditServe.self, AuditKey.self, AuditSigningKey.self, AuditRotateKey.self, AuditVerify.self]
    )
}

struct AuditServe: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Run an audit server: record and read personal-data change events, each keyed by a Stamp ID.",
        discussion: """
        The server is stateless: run as many as you like behind a load balancer. Each write gets one ID from the \
        generator nodes (through the Stamp client: 2 s timeout, 3 retries 1 s apart, failover) for the user's \
        shard in the shard map, and one row in that shard's database, committed in groups and answered once on disk; \
        a row whose ID sorts below its user's newest row (a generator behind another's) goes again with a newer ID \
        in the same request. The shard map file is re-read as it changes; a new version's databases are opened \
        before it is used.

        Every server serves the audit viewer at /ui, a web page for people: a user's history with values, the latest \
        value of each field, the shards' hash chains and checkpoints, and erasure; it asks for the reader or admin \
        token and keeps it in the browser tab only.

        Secrets come from the environment only, so that they never show in process lists: \
        STAMP_AUDIT_DATA_KEY (base64 of 32 random bytes: the master key wrapping each user's AES-256-GCM data key, \
        which seals their before/after values; `stamp audit key` prints a new one), STAMP_AUDIT_PREVIOUS_DATA_KEY \
        (the master key before a rotation, while `stamp audit rotate-key` runs), STAMP_AUDIT_WRITER_TOKEN and \
        STAMP_AUDIT_READER_TOKEN (bearer tokens, 16 characters or more), STAMP_AUDIT_ADMIN_TOKEN (optional: the bearer \
        token that erases a user's personal data and reads the access log), STAMP_AUDIT_SIGNING_KEY (base64 of a 32-byte Ed25519 private key that signs \
        checkpoints of the shards' hash chains; `stamp audit signing-key` prints a new one; without it no checkpoint \
        is signed), STAMP_TOKEN (the generator nodes' bearer token, when they have one); the passwords \
        of PostgreSQL shards from PGPASSWORD or a password file (PGPASSFILE, else ~/.pgpass), never from the shard map, \
        whose postgres:// locations may set sslmode=disable, require or verify-full (with sslrootcert=CA.pem). Other \
        options can also be set in the environment variable named after them.
        """
    )

    /// The defaults every option falls back to.
    static let defaults = AuditServerConfiguration()

    @Option(help: ArgumentHelp("Address to listen on; port 0 binds a free port. [env: STAMP_AUDIT_LISTEN] (default: \(defaults.server.host):\(defaults.server.port))", valueName: "host:port"))
    var listen: String?

    @Option(help: ArgumentHelp("Shard map file; created with one SQLite shard beside it when missing. [env: STAMP_SHARD_MAP] (default: \(defaults.service.shardMapPath))", valueName: "path"))
    var shardMap: String?

    @Option(help: ArgumentHelp("Comma-separated base URLs of generator nodes. [env: STAMP_GENERATORS] (default: \(defaults.generators.joined(separator: ",")))", valueName: "urls"))
    var generators: String?

    @Option(help: ArgumentHelp("ID layout of the generator cluster. [env: STAMP_LAYOUT] (default: \(defaults.service.layout))", valueName: "spec"))
    var layout: String?

    @Option(help: ArgumentHelp("IDs each server prefetches per shard; 0 asks the generators for every write. [env: STAMP_AUDIT_PREFETCH] (default: \(defaults.prefetch))", valueName: "n"))
    var prefetch: Int?

    @Option(help: ArgumentHelp("Most rows committed in one transaction. [env: STAMP_AUDIT_MAX_BATCH] (default: \(defaults.service.maxBatch))", valueName: "n"))
    var maxBatch: Int?

    @Option(help: ArgumentHelp("Most writes waiting for a commit per shard; past it a write is answered 503 with Retry-After. [env: STAMP_AUDIT_MAX_WAITING_WRITES] (default: \(defaults.service.maxWaitingWrites))", valueName: "n"))
    var maxWaitingWrites: Int?

    @Option(help: ArgumentHelp("How long a commit or a read of a shard's database may take before it is answered 503, such as 5s. [env: STAMP_AUDIT_STORE_TIMEOUT] (default: \(DurationText.format(defaults.service.storeTimeout)))", valueName: "duration"))
    var storeTimeout: String?

    @Option(help: ArgumentHelp("Sign a checkpoint of a shard's chain once this many rows were added since the last. [env: STAMP_AUDIT_CHECKPOINT_ROWS] (default: 10000)", valueName: "n"))
    var checkpointRows: Int?

    @Option(help: ArgumentHelp("Sign a checkpoint of a shard's chain once this long passed since the last, if rows were added, such as 60s. [env: STAMP_AUDIT_CHECKPOINT_INTERVAL] (default: 60s)", valueName: "duration"))
    var checkpointInterval: String?

    @Option(help: ArgumentHelp("File to write the port bound to once listening (useful with --listen HOST:0). [env: STAMP_AUDIT_PORT_FILE]", valueName: "path"))
    var portFile: String?

    @Option(help: ArgumentHelp("trace, debug, info, notice, warning, error or critical. [env: STAMP_LOG_LEVEL] (default: \(ServerObservability.defaultLevel))", valueName: "level"))
    var logLevel: String?

    func validate() throws {
        _ = try settings()
    }

    /// The configuration from flags, then the environment, then the defaults; and the log level.
    func settings() throws -> (configuration: AuditServerConfiguration, logLevel: Logger.Level) {
        let options = OptionValues()
        var configuration = Self.defaults
        if let listen = options.text(self.listen, "STAMP_AUDIT_LISTEN") {
            (configuration.server.host, configuration.server.port) = try OptionValues.listenAddress(listen, example: "\(Self.defaults.server.host):\(Self.defaults.server.port)")
        }
        configuration.server.portFile = options.text(portFile, "STAMP_AUDIT_PORT_FILE")
        if let path = options.text(shardMap, "STAMP_SHARD_MAP") { configuration.service.shardMapPath = path }
        if let text = options.text(self.generators, "STAMP_GENERATORS") {
            configuration.generators = text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
            guard !configuration.generators.isEmpty else { throw ValidationError("--generators must list at least one URL") }
        }
        if let text = options.text(self.layout, "STAMP_LAYOUT") {
            do {
                configuration.service.layout = try IDLayout(parsing: text)
            } catch {
                throw ValidationError(error.description)
            }
        }
        if let number = try options.integer(prefetch, "STAMP_AUDIT_PREFETCH", option: "--prefetch", range: AuditServerConfiguration.prefetchRange) { configuration.prefetch = number }
        if let number = try options.integer(maxBatch, "STAMP_AUDIT_MAX_BATCH", option: "--max-batch", range: AuditServiceConfiguration.maxBatchRange) { configuration.service.maxBatch = number }
        if let number = try options.integer(maxWaitingWrites, "STAMP_AUDIT_MAX_WAITING_WRITES", option: "--max-waiting-writes", range: 1...1_000_000) { configuration.service.maxWaitingWrites = number }
        if let text = options.text(storeTimeout, "STAMP_AUDIT_STORE_TIMEOUT") {
            configuration.service.storeTimeout = try DurationText.parse(text, name: "--store-timeout")
            guard configuration.service.storeTimeout > .zero else { throw ValidationError("--store-timeout must be above zero") }
        }
        guard let key = options.environment["STAMP_AUDIT_DATA_KEY"] else {
            throw ValidationError("set STAMP_AUDIT_DATA_KEY to the data key (base64 of 32 random bytes; `stamp audit key` prints a new one)")
        }
        guard let writer = options.environment["STAMP_AUDIT_WRITER_TOKEN"], let reader = options.environment["STAMP_AUDIT_READER_TOKEN"] else {
            throw ValidationError("set STAMP_AUDIT_WRITER_TOKEN and STAMP_AUDIT_READER_TOKEN to the bearer tokens of writers and readers")
        }
        do {
            configuration.service.sealer = try ValueSealer(base64Key: key, previousBase64Key: options.environment["STAMP_AUDIT_PREVIOUS_DATA_KEY"])
            configuration.tokens = try AuditTokens(writer: writer, reader: reader, admin: options.environment["STAMP_AUDIT_ADMIN_TOKEN"])
            configuration.generatorToken = options.environment["STAMP_TOKEN"]
            if let signingKey = options.environment["STAMP_AUDIT_SIGNING_KEY"] {
                configuration.service.checkpoints = CheckpointPolicy(signer: try CheckpointSigner(base64Key: signingKey))
            }
        } catch {
            throw ValidationError(error.message)
        }
        let rows = try options.integer(checkpointRows, "STAMP_AUDIT_CHECKPOINT_ROWS", option: "--checkpoint-rows", range: 1...100_000_000)
        let interval = try options.text(checkpointInterval, "STAMP_AUDIT_CHECKPOINT_INTERVAL").map { text in
            let interval = try DurationText.parse(text, name: "--checkpoint-interval")
            guard interval > .zero else { throw ValidationError("--checkpoint-interval must be above zero") }
            return interval
        }
        if rows != nil || interval != nil {
            guard configuration.service.checkpoints != nil else {
                throw ValidationError("--checkpoint-rows and --checkpoint-interval need STAMP_AUDIT_SIGNING_KEY, the key that signs checkpoints")
            }
            if let rows { configuration.service.checkpoints?.everyRows = Int64(rows) }
            if let interval { configuration.service.checkpoints?.interval = interval }
        }
        let level = try OptionValues.logLevel(options.text(logLevel, "STAMP_LOG_LEVEL") ?? ServerObservability.defaultLevel.rawValue)
        return (configuration, level)
    }

    func run() async throws {
        let (configuration, level) = try settings()
        let (logger, registry) = ServerObservability.bootstrap(label: "stamp.audit", level: level)
        do {
            try await buildAuditApplication(configuration: configuration, metrics: { registry.emitToString() }, logger: logger).runService()
        } catch let error as AuditServiceError {
            throw ValidationError(error.message)
        }
    }
}

struct AuditSigningKey: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "signing-key",
        abstract: "Print a new random checkpoint signing key for STAMP_AUDIT_SIGNING_KEY, and its public key.",
        discussion: "Prints two lines: the private key (base64 of 32 bytes: keep it secret, give it to the audit servers) and `public-key BASE64`, which `stamp audit verify --public-key` checks checkpoints with."
    )

    func run() {
        let key = CheckpointSigner.generateKey()
        print(key)
        print("public-key \((try? CheckpointSigner.publicKey(ofBase64Key: key)) ?? "")")
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

struct AuditVerify: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify",
        abstract: "Check that no audit row was edited, removed, reordered or inserted: recompute every shard's hash chain and check its checkpoints.",
        discussion: """
        Reads every shard of the shard map (it writes nothing): walks the rows in chain order recomputing each hash, \
        checks the shard's head row, and checks every checkpoint kept in the shard and every one given with \
        --checkpoint (the JSON of GET /v1/shards/{id}/checkpoint, one per line, or a user's export from \
        GET /v1/users/{id}/export, whose checkpoint lines are read; kept outside the database so that rows cut off \
        the end are caught too) against the chain. Checkpoints must be signed by the key given with \
        --public-key (`stamp audit signing-key` prints it), else by the public key of STAMP_AUDIT_SIGNING_KEY; with \
        neither, each checkpoint is checked against the key it names, which proves nothing about who signed it. \
        Prints one line per shard and exits non-zero when any shard fails, naming the first row where its chain breaks. \
        PostgreSQL passwords come from PGPASSWORD or a password file, as for `stamp audit serve`.
        """
    )

    @Option(help: ArgumentHelp("Shard map file. [env: STAMP_SHARD_MAP] (default: \(AuditServe.defaults.service.shardMapPath))", valueName: "path"))
    var shardMap: String?

    @Option(help: ArgumentHelp("ID layout of the generator cluster. [env: STAMP_LAYOUT] (default: \(AuditServe.defaults.service.layout))", valueName: "spec"))
    var layout: String?

    @Option(help: ArgumentHelp("The Ed25519 public key (base64) checkpoints must be signed with.", valueName: "base64"))
    var publicKey: String?

    @Option(help: ArgumentHelp("A file of checkpoints kept elsewhere (JSON, one per line), or a user's export; may be repeated.", valueName: "path"))
    var checkpoint: [String] = []

    func run() async throws {
        let options = OptionValues()
        let path = options.text(shardMap, "STAMP_SHARD_MAP") ?? AuditServe.defaults.service.shardMapPath
        var idLayout = AuditServe.defaults.service.layout
        if let text = options.text(layout, "STAMP_LAYOUT") {
            do { idLayout = try IDLayout(parsing: text) } catch { throw ValidationError(error.description) }
        }
        let trusted = try trustedKey(options)
        if trusted == nil {
            print("warning: no --public-key or STAMP_AUDIT_SIGNING_KEY: checkpoints are checked against the keys they name")
        }
        let kept = try checkpoint.flatMap(Self.readCheckpoints)
        let logger = Logger(label: "stamp.audit.verify", factory: { _ in SwiftLogNoOpLogHandler() })
        let outcomes: [ShardMapVerification.Outcome]
        do {
            outcomes = try await ShardMapVerification.run(shardMapPath: path, layout: idLayout, checkpoints: kept, publicKey: trusted, logger: logger)
        } catch {
            throw ValidationError(error.message)
        }
        var failed = false
        for (shard, result) in outcomes {
            switch result {
            case .success(let verification):
                print(Self.describe(verification))
                failed = failed || verification.problem != nil
            case .failure(let error):
                print("shard \(shard): not verified: \(error.message)")
                failed = true
            }
        }
        if failed { throw ExitCode.failure }
    }

    private func trustedKey(_ options: OptionValues) throws -> [UInt8]? {
        if let publicKey {
            guard let bytes = Data(base64Encoded: publicKey), bytes.count == 32 else {
                throw ValidationError("--public-key must be base64 of a 32-byte Ed25519 public key")
            }
            return Array(bytes)
        }
        guard let signingKey = options.environment["STAMP_AUDIT_SIGNING_KEY"] else { return nil }
        do {
            return try CheckpointSigner(base64Key: signingKey).publicKey
        } catch {
            throw ValidationError(error.message)
        }
    }

    static func readCheckpoints(_ path: String) throws -> [AuditCheckpoint] {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw ValidationError("the checkpoint file \(path) cannot be read")
        }
        do {
            return try AuditCheckpoint.checkpoints(inLines: text)
        } catch {
            throw ValidationError("\(path): \(error.message)")
        }
    }

    static func describe(_ verification: ShardVerification) -> String {
        let seconds = Double(verification.duration.components.seconds) + Double(verification.duration.components.attoseconds) / 1e18
        let rate = seconds > 0 ? Int(Double(verification.rows) / seconds) : 0
        let newest = verification.newestCheckpoint.map { ", newest at \($0.rows) rows" } ?? ""
        let walked = "\(verification.rows) rows in \(String(format: "%.2f", seconds)) s (\(rate) rows/s), \(verification.checkpoints) checkpoints\(newest)"
        guard let problem = verification.problem else { return "shard \(verification.shard): verified: \(walked)" }
        return "shard \(verification.shard): FAILED: \(problem); walked \(walked)"
    }
}

struct AuditRotateKey: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rotate-key",
        abstract: "Re-wrap every user's data key under a new master key, in every shard of the map; event rows stay as they are.",
        discussion: """
        The keys come from the environment only: STAMP_AUDIT_OLD_DATA_KEY (the master key in use) and \
        STAMP_AUDIT_NEW_DATA_KEY (its successor; `stamp audit key` prints one). First restart the audit servers with \
        STAMP_AUDIT_DATA_KEY set to the new key and STAMP_AUDIT_PREVIOUS_DATA_KEY to the old one, so that they \
        unwrap keys under either while this runs; then run it (again after a failure: it leaves keys wrapped by the \
        new master key as they are); then restart the servers without STAMP_AUDIT_PREVIOUS_DATA_KEY. Values stored \
        before per-user keys were sealed with the master key itself: the first rotation keeps that key in each \
        shard, wrapped by the new one, so that they still open.
        """
    )

    @Option(help: ArgumentHelp("Shard map file. [env: STAMP_SHARD_MAP] (default: \(AuditServe.defaults.service.shardMapPath))", valueName: "path"))
    var shardMap: String?

    @Option(help: ArgumentHelp("ID layout of the generator cluster. [env: STAMP_LAYOUT] (default: \(AuditServe.defaults.service.layout))", valueName: "spec"))
    var layout: String?

    func run() async throws {
        let options = OptionValues()
        guard let oldKey = options.environment["STAMP_AUDIT_OLD_DATA_KEY"], let newKey = options.environment["STAMP_AUDIT_NEW_DATA_KEY"] else {
            throw ValidationError("set STAMP_AUDIT_OLD_DATA_KEY to the master key in use and STAMP_AUDIT_NEW_DATA_KEY to the new one")
        }
        let old: ValueSealer, new: ValueSealer
        do {
            old = try ValueSealer(base64Key: oldKey)
            new = try ValueSealer(base64Key: newKey)
        } catch {
            throw ValidationError(error.message)
        }
        var idLayout = AuditServe.defaults.service.layout
        if let text = options.text(layout, "STAMP_LAYOUT") {
            do {
                idLayout = try IDLayout(parsing: text)
            } catch {
                throw ValidationError(error.description)
            }
        }
        let path = options.text(shardMap, "STAMP_SHARD_MAP") ?? AuditServe.defaults.service.shardMapPath
        let logger = Logger(label: "stamp.audit.rotate-key")
        let reports = try await MasterKeyRotation.rotate(shardMapPath: path, layout: idLayout, from: old, to: new, logger: logger)
        for report in reports {
            print("shard \(report.shard): \(report.rewrapped) of \(report.keys) data keys re-wrapped")
        }
    }
}
