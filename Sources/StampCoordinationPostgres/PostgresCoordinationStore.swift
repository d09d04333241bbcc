import Logging
import PostgresNIO
import StampCoordination
import StampCore
import StampDatabase

/// A coordination store in a PostgreSQL database, for generator nodes on several machines.
///
/// Every statement is atomic on its own, apart from migrations, which run in one transaction
/// behind an advisory lock. Lease expiry is judged on the database server's clock, so the nodes'
/// clocks never decide who holds a node ID; tests may inject a wall clock instead.
public final class PostgresCoordinationStore: CoordinationStore {
    private let settings: PostgresConnectionSettings
    private let client: PostgresClient
    private let clock: (any WallClock)?
    private let logger: Logger
    private let closed: AsyncStream<Never>
    private let closing: AsyncStream<Never>.Continuation

    /// Creates a store on the database of `configuration`; `clock` replaces the server's clock when given.
    public init(configuration: PostgresConnectionSettings, clock: (any WallClock)? = nil, logger: Logger) {
        self.settings = configuration
        self.client = PostgresClient(configuration: configuration.clientConfiguration, backgroundLogger: logger)
        self.clock = clock
        self.logger = logger
        (closed, closing) = AsyncStream.makeStream()
    }

    /// Reads the connection settings of a `postgres://` URL, as ``PostgresURL`` and
    /// ``PostgresConnectionSettings`` do: a malformed URL is an invalid location whose message never
    /// repeats the URL; an unusable password or certificate file is an invalid configuration.
    public static func configuration(url: String) throws(CoordinationError) -> PostgresConnectionSettings {
        do {
            return try PostgresConnectionSettings(url: PostgresURL(parsing: url))
        } catch {
            throw CoordinationError(error.code == .invalidLocation ? .invalidLocation : .invalidConfiguration, error.message, cause: error)
        }
    }

    /// Runs the connection pool until the task is cancelled or the store is closed.
    public func run() async throws {
        await withDiscardingTaskGroup { group in
            group.addTask { await self.client.run() }
            for await _ in closed {}
            group.cancelAll()
        }
    }

    /// Connects once on its own first, so that a refused connection (TLS, password) says why.
    public func prepare(layout: IDLayout) async throws(CoordinationError) {
        do {
            try await settings.checkConnection(logger: logger)
        } catch {
            throw CoordinationError(.unavailable, "the PostgreSQL store cannot connect: \(error.message)", cause: error)
        }
        let recorded = try await perform("prepare the store") {
            try await client.withTransaction(logger: logger) { connection in
                try await connection.query("SELECT pg_advisory_xact_lock(\(Self.migrationLockKey))", logger: logger)
                try await Self.migrate(connection, logger: logger)
                try await connection.query(
                    "INSERT INTO stamp_settings (name, value) VALUES ('layout', \(layout.description)) ON CONFLICT (name) DO NOTHING",
                    logger: logger
                )
                let rows = try await connection.query("SELECT value FROM stamp_settings WHERE name = 'layout'", logger: logger)
                var recorded: String?
                for try await value in rows.decode(String.self) {
                    recorded = value
                }
                return recorded
            }
        }
        guard recorded == layout.description else {
            throw CoordinationError(
                .layoutMismatch,
                "the cluster records the layout \(recorded ?? "nothing"), but this node uses \(layout.description)"
            )
        }
    }

    public func claim(owner: String, address: String?, ttl: Duration, nodeCount: Int) async throws(CoordinationError) -> NodeLease? {
        try await perform("claim a node ID") {
            // The claim is conditional on the row still being free, so losing a race to another
            // claimer takes nothing; the next round looks for the next candidate.
            while true {
                let candidates = try await client.query(
                    """
                    WITH clock AS (SELECT COALESCE(\(clock?.unixMilliseconds())::bigint, \(unescaped: Self.serverNow)) AS now)
                    SELECT clock.now, (
                        SELECT MIN(candidate) FROM (
                            SELECT node AS candidate FROM stamp_node_leases
                                WHERE node < \(Int64(nodeCount)) AND (owner IS NULL OR expires_at <= clock.now)
                            UNION ALL
                            SELECT 0 WHERE \(Int64(nodeCount)) > 0 AND NOT EXISTS (SELECT 1 FROM stamp_node_leases WHERE node = 0)
                            UNION ALL
                            SELECT leases.node + 1 FROM stamp_node_leases AS leases
                                WHERE leases.node + 1 < \(Int64(nodeCount))
                                AND NOT EXISTS (SELECT 1 FROM stamp_node_leases AS following WHERE following.node = leases.node + 1)
                        ) AS candidates
                    ) FROM clock
                    """,
                    logger: logger
                )
                var candidate: (now: Int64, node: Int64?)?
                for try await row in candidates.decode((Int64, Int64?).self) {
                    candidate = row
                }
                guard let (now, node) = candidate, let node else { return nil }
                let claimed = try await client.query(
                    """
                    INSERT INTO stamp_node_leases (node, owner, address, expires_at, reserved_until)
                        VALUES (\(node), \(owner), \(address), \(now + ttl.wholeMilliseconds), 0)
                    ON CONFLICT (node) DO UPDATE SET owner = EXCLUDED.owner, address = EXCLUDED.address, expires_at = EXCLUDED.expires_at
                        WHERE stamp_node_leases.owner IS NULL OR stamp_node_leases.expires_at <= \(now)
                    RETURNING \(unescaped: Self.leaseColumns)
                    """,
                    logger: logger
                )
                if let lease = try await Self.leases(in: claimed).first { return lease }
            }
        }
    }

    public func renew(node: Int, owner: String, ttl: Duration, reservedUntilUnixMilliseconds: Int64) async throws(CoordinationError) -> NodeLease? {
        try await perform("renew a lease") {
            let rows = try await client.query(
                """
                WITH clock AS (SELECT COALESCE(\(clock?.unixMilliseconds())::bigint, \(unescaped: Self.serverNow)) AS now)
                UPDATE stamp_node_leases
                    SET expires_at = clock.now + \(ttl.wholeMilliseconds), reserved_until = GREATEST(reserved_until, \(reservedUntilUnixMilliseconds))
                    FROM clock
                    WHERE node = \(Int64(node)) AND owner = \(owner)
                RETURNING \(unescaped: Self.leaseColumns)
                """,
                logger: logger
            )
            return try await Self.leases(in: rows).first
        }
    }

    public func release(node: Int, owner: String) async throws(CoordinationError) {
        try await perform("release a lease") {
            _ = try await client.query(
                """
                WITH clock AS (SELECT COALESCE(\(clock?.unixMilliseconds())::bigint, \(unescaped: Self.serverNow)) AS now)
                UPDATE stamp_node_leases SET owner = NULL, address = NULL, expires_at = LEAST(expires_at, clock.now)
                    FROM clock
                    WHERE node = \(Int64(node)) AND owner = \(owner)
                """,
                logger: logger
            )
        }
    }

    public func liveLeases() async throws(CoordinationError) -> [NodeLease] {
        try await perform("list live leases") {
            let rows = try await client.query(
                """
                WITH clock AS (SELECT COALESCE(\(clock?.unixMilliseconds())::bigint, \(unescaped: Self.serverNow)) AS now)
                SELECT \(unescaped: Self.leaseColumns) FROM stamp_node_leases, clock
                    WHERE owner IS NOT NULL AND expires_at > clock.now
                    ORDER BY node
                """,
                logger: logger
            )
            return try await Self.leases(in: rows)
        }
    }

    /// Ends ``run()``, which closes the pool's connections; later operations fail.
    public func close() async {
        closing.finish()
    }

    /// The server's current time in Unix milliseconds, as SQL.
    private static let serverNow = "floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint"

    /// The columns a lease is read from, in the order ``leases(in:)`` decodes them.
    private static let leaseColumns = "node, owner, address, expires_at, reserved_until"

    /// The advisory lock that serializes migrations across processes: "stamp" in ASCII.
    private static let migrationLockKey: Int64 = 495_873_781_104

    private static func leases(in rows: PostgresRowSequence) async throws -> [NodeLease] {
        var leases: [NodeLease] = []
        for try await (node, owner, address, expiresAt, reservedUntil) in rows.decode((Int64, String, String?, Int64, Int64).self) {
            leases.append(NodeLease(
                node: Int(node),
                owner: owner,
                address: address,
                expiresAtUnixMilliseconds: expiresAt,
                reservedUntilUnixMilliseconds: reservedUntil
            ))
        }
        return leases
    }

    /// Runs `body`, reporting any failure as ``CoordinationError/Code/unavailable`` without SQL or bound values.
    private func perform<Result>(_ action: String, _ body: () async throws -> Result) async throws(CoordinationError) -> Result {
        do {
            return try await body()
        } catch {
            throw CoordinationError(.unavailable, "the PostgreSQL store could not \(action)", cause: error)
        }
    }

    /// Applies the migrations not yet recorded, in order, inside the caller's transaction.
    private static func migrate(_ connection: PostgresConnection, logger: Logger) async throws {
        try await connection.query(
            "CREATE TABLE IF NOT EXISTS stamp_migrations (name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())",
            logger: logger
        )
        var applied: Set<String> = []
        for try await name in try await connection.query("SELECT name FROM stamp_migrations", logger: logger).decode(String.self) {
            applied.insert(name)
        }
        for migration in migrations where !applied.contains(migration.name) {
            for statement in migration.statements {
                try await connection.query(PostgresQuery(unsafeSQL: statement), logger: logger)
            }
            try await connection.query("INSERT INTO stamp_migrations (name) VALUES (\(migration.name))", logger: logger)
        }
    }

    /// The schema's history, oldest first; a name, once released, never changes meaning.
    private static let migrations: [(name: String, statements: [String])] = [
        (
            name: "0001-create-settings",
            statements: ["CREATE TABLE stamp_settings (name text PRIMARY KEY, value text NOT NULL)"]
        ),
        (
            name: "0002-create-node-leases",
            statements: [
                """
                CREATE TABLE stamp_node_leases (
                    node bigint PRIMARY KEY,
                    owner text,
                    address text,
                    expires_at bigint NOT NULL,
                    reserved_until bigint NOT NULL
                )
                """
            ]
        ),
    ]
}
