import GRDB
import Logging
import StampCoordination
import StampCore
import StampDatabase

/// A coordination store in one SQLite file, for generator nodes on one machine.
///
/// Every node process opens the same file (see ``SQLiteDatabase``): every change runs in a
/// `BEGIN IMMEDIATE` transaction, so processes sharing the file take turns on SQLite's write lock
/// and waits are bounded by a busy timeout. Lease expiry is judged on the injected wall clock,
/// which all processes on the machine share.
public final class SQLiteCoordinationStore: CoordinationStore {
    private let database: SQLiteDatabase
    private let clock: any WallClock
    private let closed: AsyncStream<Never>
    private let closing: AsyncStream<Never>.Continuation

    /// Creates a store on the file at `path`; the file and its parent directories are created on first use.
    public init(path: String, clock: any WallClock = SystemWallClock(), logger: Logger) {
        self.database = SQLiteDatabase(path: path, readerCount: 1)
        self.clock = clock
        (closed, closing) = AsyncStream.makeStream()
    }

    /// Waits until the task is cancelled or the store is closed: the store has no background work.
    public func run() async throws {
        for await _ in closed {}
    }

    public func prepare(layout: IDLayout) async throws(CoordinationError) {
        let recorded = try await immediateTransaction("prepare the store") { db, now in
            try Self.migrate(db, now: now)
            try db.execute(sql: "INSERT INTO stamp_settings (name, value) VALUES ('layout', ?1) ON CONFLICT (name) DO NOTHING", arguments: [layout.description])
            return try String.fetchOne(db, sql: "SELECT value FROM stamp_settings WHERE name = 'layout'")
        }
        guard recorded == layout.description else {
            throw CoordinationError(
                .layoutMismatch,
                "the cluster records the layout \(recorded ?? "nothing"), but this node uses \(layout.description)"
            )
        }
    }

    public func claim(owner: String, address: String?, ttl: Duration, nodeCount: Int) async throws(CoordinationError) -> NodeLease? {
        let expiry = ttl.wholeMilliseconds
        return try await immediateTransaction("claim a node ID") { db, now in
            guard let node = try Int.fetchOne(db.cachedStatement(sql: SQL.lowestClaimableNode), arguments: [nodeCount, now]) else { return nil }
            return try Row.fetchOne(db.cachedStatement(sql: SQL.claim), arguments: [node, owner, address, now + expiry, now]).map(NodeLease.init(row:))
        }
    }

    public func renew(node: Int, owner: String, ttl: Duration, reservedUntilUnixMilliseconds: Int64) async throws(CoordinationError) -> NodeLease? {
        let expiry = ttl.wholeMilliseconds
        return try await immediateTransaction("renew a lease") { db, now in
            try Row.fetchOne(db.cachedStatement(sql: SQL.renew), arguments: [now + expiry, reservedUntilUnixMilliseconds, node, owner]).map(NodeLease.init(row:))
        }
    }

    public func release(node: Int, owner: String) async throws(CoordinationError) {
        try await immediateTransaction("release a lease") { db, now in
            try db.cachedStatement(sql: SQL.release).execute(arguments: [now, node, owner])
        }
    }

    public func liveLeases() async throws(CoordinationError) -> [NodeLease] {
        let clock = clock
        do {
            return try await database.read { db in
                try Row.fetchAll(db.cachedStatement(sql: SQL.liveLeases), arguments: [clock.unixMilliseconds()]).map(NodeLease.init(row:))
            }
        } catch {
            throw Self.wrap(error, action: "list live leases")
        }
    }

    public func close() async {
        closing.finish()
        database.close()
    }

    /// Runs `body` in a `BEGIN IMMEDIATE` transaction with the clock's now, read once the write lock is held.
    private func immediateTransaction<Result: Sendable>(
        _ action: String,
        _ body: @escaping @Sendable (Database, Int64) throws -> Result
    ) async throws(CoordinationError) -> Result {
        let clock = clock
        do {
            return try await database.immediateTransaction { db in
                try body(db, clock.unixMilliseconds())
            }
        } catch {
            throw Self.wrap(error, action: action)
        }
    }

    private static func wrap(_ error: any Error, action: String) -> CoordinationError {
        if let error = error as? CoordinationError { return error }
        if let error = error as? StampDatabase.DatabaseError {
            return CoordinationError(.unavailable, "the SQLite store could not \(action): \(error.message)", cause: error)
        }
        return CoordinationError(.unavailable, "the SQLite store could not \(action)", cause: error)
    }

    /// Applies the migrations not yet recorded, in order, inside the caller's transaction.
    private static func migrate(_ db: Database, now: Int64) throws {
        try db.execute(sql: "CREATE TABLE IF NOT EXISTS stamp_migrations (name TEXT PRIMARY KEY, applied_at INTEGER NOT NULL)")
        let applied = Set(try String.fetchAll(db, sql: "SELECT name FROM stamp_migrations"))
        for migration in migrations where !applied.contains(migration.name) {
            for statement in migration.statements {
                try db.execute(sql: statement)
            }
            try db.execute(sql: "INSERT INTO stamp_migrations (name, applied_at) VALUES (?1, ?2)", arguments: [migration.name, now])
        }
    }

    /// The schema's history, oldest first; a name, once released, never changes meaning.
    private static let migrations: [(name: String, statements: [String])] = [
        (
            name: "0001-create-settings",
            statements: ["CREATE TABLE stamp_settings (name TEXT PRIMARY KEY, value TEXT NOT NULL)"]
        ),
        (
            name: "0002-create-node-leases",
            statements: [
                """
                CREATE TABLE stamp_node_leases (
                    node INTEGER PRIMARY KEY,
                    owner TEXT,
                    address TEXT,
                    expires_at INTEGER NOT NULL,
                    reserved_until INTEGER NOT NULL
                )
                """
            ]
        ),
    ]
}

/// The statements of the SQLite store, prepared once per connection and kept; `?N` are bound parameters.
private enum SQL {
    /// The lowest node ID below `?1` whose row is free or expired at `?2`, or has no row yet.
    static let lowestClaimableNode = """
        SELECT MIN(candidate) AS node FROM (
            SELECT node AS candidate FROM stamp_node_leases
                WHERE node < ?1 AND (owner IS NULL OR expires_at <= ?2)
            UNION ALL
            SELECT 0 WHERE ?1 > 0 AND NOT EXISTS (SELECT 1 FROM stamp_node_leases WHERE node = 0)
            UNION ALL
            SELECT leases.node + 1 FROM stamp_node_leases AS leases
                WHERE leases.node + 1 < ?1
                AND NOT EXISTS (SELECT 1 FROM stamp_node_leases AS following WHERE following.node = leases.node + 1)
        )
        """

    /// Takes node `?1` for owner `?2` at address `?3` until `?4`, if it is free or expired at `?5`; keeps the reservation.
    static let claim = """
        INSERT INTO stamp_node_leases (node, owner, address, expires_at, reserved_until) VALUES (?1, ?2, ?3, ?4, 0)
        ON CONFLICT (node) DO UPDATE SET owner = excluded.owner, address = excluded.address, expires_at = excluded.expires_at
            WHERE stamp_node_leases.owner IS NULL OR stamp_node_leases.expires_at <= ?5
        RETURNING node, owner, address, expires_at, reserved_until
        """

    /// Extends node `?3` to `?1` and raises its reservation to `?2`, only while owner `?4` holds it.
    static let renew = """
        UPDATE stamp_node_leases SET expires_at = ?1, reserved_until = MAX(reserved_until, ?2)
            WHERE node = ?3 AND owner = ?4
        RETURNING node, owner, address, expires_at, reserved_until
        """

    /// Frees node `?2` at `?1` if owner `?3` holds it, keeping the reservation.
    static let release = """
        UPDATE stamp_node_leases SET owner = NULL, address = NULL, expires_at = MIN(expires_at, ?1)
            WHERE node = ?2 AND owner = ?3
        """

    /// The leases held and unexpired at `?1`.
    static let liveLeases = """
        SELECT node, owner, address, expires_at, reserved_until FROM stamp_node_leases
            WHERE owner IS NOT NULL AND expires_at > ?1
            ORDER BY node
        """
}

extension NodeLease {
    /// Reads a lease from a row with the columns node, owner, address, expires_at and reserved_until.
    fileprivate init(row: Row) throws {
        guard
            let node = row["node"] as Int?,
            let owner = row["owner"] as String?,
            let expiresAt = row["expires_at"] as Int64?,
            let reservedUntil = row["reserved_until"] as Int64?
        else {
            throw CoordinationError(.unavailable, "the SQLite store holds a malformed lease row")
        }
        self.init(
            node: node,
            owner: owner,
            address: row["address"] as String?,
            expiresAtUnixMilliseconds: expiresAt,
            reservedUntilUnixMilliseconds: reservedUntil
        )
    }
}
