import StampCore

/// One stored audit event: a change to one field of a user's personal data.
///
/// The values are sealed (see ``ValueSealer``): a store never sees them in clear.
public struct AuditRow: Sendable, Equatable {
    /// The primary key: a Stamp ID whose shard field names the shard the row lives in.
    public var id: StampID
    public var user: String
    public var field: String
    public var actor: String
    public var reason: String
    /// The sealed value before the change; `nil` when the field had none.
    public var before: [UInt8]?
    /// The sealed value after the change; `nil` when the change removed it.
    public var after: [UInt8]?
    /// The client's key for the write; unique per user.
    public var idempotencyKey: String
    /// A keyed digest of the request (user, field, values, actor, reason), to tell a retry from
    /// another write under the same key without keeping the values in clear.
    public var requestDigest: [UInt8]

    public init(id: StampID, user: String, field: String, actor: String, reason: String, before: [UInt8]?, after: [UInt8]?, idempotencyKey: String, requestDigest: [UInt8]) {
        self.id = id
        self.user = user
        self.field = field
        self.actor = actor
        self.reason = reason
        self.before = before
        self.after = after
        self.idempotencyKey = idempotencyKey
        self.requestDigest = requestDigest
    }
}

/// Where one shard's audit rows live. SQLite and PostgreSQL implement it, and one test suite
/// checks both.
///
/// The table is append-only: nothing updates or deletes a row (the stores refuse both with a
/// trigger; on PostgreSQL the service's role is also granted only `INSERT` and `SELECT`).
public protocol AuditStore: Sendable {
    /// Runs the store's background work, such as a connection pool, until the task is cancelled.
    func run() async throws
    /// Runs the migrations that have not run yet, in order.
    func migrate() async throws(AuditStoreError)
    /// Inserts `rows`, written under version `mapVersion` of the shard map, in one transaction and
    /// returns, for each, what became of it: stored; a repeat, when a row with the same user and
    /// idempotency key exists or comes earlier in `rows`; refused because its user already has a
    /// row with that ID or a greater one, stored before the call or earlier in `rows` (the order
    /// check: a user's rows rise with the order they were written in); refused because another
    /// user's row has its ID; or, every row, refused because the shard has seen a newer map
    /// (see ``recordMap(_:)``), checked in the same transaction. The rows stored extend the
    /// shard's hash chain (``AuditChain``), in the order given, in the same transaction. Returns
    /// only after the commit.
    func insert(_ rows: [AuditRow], mapVersion: Int) async throws(AuditStoreError) -> [AuditInsertOutcome]
    /// Raises the shard map version the shard holds to `map`'s, unless it holds that version or a
    /// newer one already, and returns the one it holds afterwards. Once it returns, every insert
    /// under an older version is refused, and every insert under an older version that was not
    /// refused is committed: a server that records a new map in every shard before it writes
    /// under it never misses a row written under the old one.
    func recordMap(_ map: StoredShardMap) async throws(AuditStoreError) -> StoredShardMap
    /// The newest shard map version the shard holds (version 0 with an empty document before any).
    func storedMap() async throws(AuditStoreError) -> StoredShardMap
    /// The row with `id`.
    func row(id: StampID) async throws(AuditStoreError) -> AuditRow?
    /// The row `user` wrote under `idempotencyKey`.
    func row(user: String, idempotencyKey: String) async throws(AuditStoreError) -> AuditRow?
    /// Up to `limit` rows of `user`, newest (greatest ID) first, only of `field` when given, only
    /// with IDs below `before` when given.
    func history(user: String, field: String?, before: StampID?, limit: Int) async throws(AuditStoreError) -> [AuditRow]
    /// The newest row of each field `user` has rows of, by field name: found in the index of
    /// users' fields, without reading the user's other rows.
    func latestOfEachField(user: String) async throws(AuditStoreError) -> [AuditRow]
    /// The greatest ID among the rows of `user`.
    func latestID(user: String) async throws(AuditStoreError) -> StampID?
    /// Up to `limit` IDs of every user in ascending order, above `after` when given: for checks
    /// and exports that walk the whole shard.
    func ids(after: StampID?, limit: Int) async throws(AuditStoreError) -> [StampID]
    /// The end of the shard's hash chain, as the shard's head row records it.
    func chainHead() async throws(AuditStoreError) -> ChainHead
    /// Up to `limit` rows in chain order, from the one after position `position` on.
    func chainedRows(after position: Int64, limit: Int) async throws(AuditStoreError) -> [ChainedRow]
    /// How many rows the shard holds, chained or not.
    func rowCount() async throws(AuditStoreError) -> Int64
    /// Keeps `checkpoint`, unless one of the same row count is kept already.
    func recordCheckpoint(_ checkpoint: AuditCheckpoint) async throws(AuditStoreError)
    /// Up to `limit` checkpoints, newest (most rows) first, of fewer than `rows` rows when given.
    func checkpoints(below rows: Int64?, limit: Int) async throws(AuditStoreError) -> [AuditCheckpoint]
    /// The data keys the shard holds of `user`, destroyed generations included, and the master key
    /// it keeps under ``StoredUserKey/legacyKeyOwner`` when there is one, ordered by user and generation.
    func userKeys(user: String) async throws(AuditStoreError) -> [StoredUserKey]
    /// Stores `key` unless the shard holds that generation of its user already, and returns what
    /// ``userKeys(user:)`` returns afterwards.
    func addUserKey(_ key: StoredUserKey) async throws(AuditStoreError) -> [StoredUserKey]
    /// Stores each of `keys` (of distinct users) only when the shard holds no key of its user,
    /// destroyed or not, in one transaction, and returns the users whose key it stored: users'
    /// first keys, many in one commit.
    func addFirstUserKeys(_ keys: [StoredUserKey]) async throws(AuditStoreError) -> Set<String>
    /// Destroys every data key of `user` the shard holds, and records that it did (generation 0,
    /// destroyed); idempotent. Nothing can store a destroyed key again.
    func eraseUserKeys(user: String) async throws(AuditStoreError)
    /// Every data key of every user the shard holds that is not destroyed, for a master key rotation.
    func liveUserKeys() async throws(AuditStoreError) -> [StoredUserKey]
    /// Replaces the wrapped form of each key, while the shard holds it as `old`, in one
    /// transaction, and returns how many it replaced.
    func rewrapUserKeys(_ changes: [(old: StoredUserKey, wrapped: [UInt8])]) async throws(AuditStoreError) -> Int
    /// Appends `entry` to the shard's access log, which is append-only like the events.
    func recordAccess(_ entry: AccessLogEntry) async throws(AuditStoreError)
    /// Up to `limit` entries of the access log about `user`, newest first.
    func accessLog(user: String, limit: Int) async throws(AuditStoreError) -> [AccessLogEntry]
    /// Checks that the database answers.
    func ping() async throws(AuditStoreError)
    /// Closes connections; the store is unusable afterwards.
    func close() async
}

/// One request that returned personal-data values to a reader, as the access log keeps it.
public struct AccessLogEntry: Sendable, Equatable {
    /// When it was answered, in Unix milliseconds.
    public var recordedAt: Int64
    /// Who asked: the role and a fingerprint of its token, such as `reader sha256:1a2b3c4d5e6f`.
    public var reader: String
    /// Whose values were returned.
    public var user: String
    /// What was asked: the method, the path and the query.
    public var request: String
    /// The events whose values were returned, in the order they were.
    public var events: [StampID]

    public init(recordedAt: Int64, reader: String, user: String, request: String, events: [StampID]) {
        self.recordedAt = recordedAt
        self.reader = reader
        self.user = user
        self.request = request
        self.events = events
    }

    /// The events as stored: decimal IDs separated by commas.
    public var eventList: String { events.map { "\($0.rawValue)" }.joined(separator: ",") }

    /// The events of a stored list; `nil` when it does not parse.
    public static func events(fromList list: String) -> [StampID]? {
        guard !list.isEmpty else { return [] }
        var events: [StampID] = []
        for part in list.split(separator: ",") {
            guard let value = Int64(part), let id = StampID(rawValue: value) else { return nil }
            events.append(id)
        }
        return events
    }
}

/// What an insert did with one row.
public enum AuditInsertOutcome: Sendable, Hashable {
    /// The row is stored.
    case stored
    /// A row of the same user and idempotency key was stored before: nothing new is stored.
    case repeated
    /// The user has a row with this ID or a greater one, `latest`: storing it would break the
    /// user's order. Nothing is stored; the write may be tried again with an ID above `latest`.
    case belowLatest(StampID)
    /// Another user's row has this ID. Nothing is stored; the write may be tried again with another ID.
    case idTaken
    /// The shard holds version `version` of the shard map, newer than the one the row was written
    /// under. Nothing is stored; the write may be tried again under that version.
    case staleMap(version: Int)
}

/// A shard map version as a shard records it: the version and the map's JSON document.
public struct StoredShardMap: Sendable, Equatable {
    public var version: Int
    public var document: [UInt8]

    public init(version: Int, document: [UInt8]) {
        self.version = version
        self.document = document
    }

    /// What a shard holds before any map was recorded in it.
    public static let none = StoredShardMap(version: 0, document: [])
}

/// Why a store operation failed. The message never holds SQL, bound values or personal data.
public struct AuditStoreError: Error, Sendable, CustomStringConvertible {
    public enum Code: String, Sendable {
        /// The database cannot be reached or did not answer; the operation may be retried.
        case unavailable
        /// The database refused the operation (constraint, permission, schema).
        case rejected
        /// Too many writes wait for the shard already; the write may be retried shortly.
        case overloaded
        /// The location or settings cannot work.
        case invalidConfiguration = "invalid-configuration"
    }

    public let code: Code
    /// A message safe to show and log.
    public let message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "\(code.rawValue): \(message)" }
}
