import StampAudit
import StampCore

/// A test's store in front of a real one that passes on every call it does not change: the test's
/// store names its `base` and writes only the calls it makes misbehave.
protocol ForwardingAuditStore: AuditStore {
    var base: any AuditStore { get }
}

extension ForwardingAuditStore {
    func run() async throws { try await base.run() }
    func migrate() async throws(AuditStoreError) { try await base.migrate() }
    func insert(_ rows: [AuditRow], mapVersion: Int) async throws(AuditStoreError) -> [AuditInsertOutcome] { try await base.insert(rows, mapVersion: mapVersion) }
    func recordMap(_ map: StoredShardMap) async throws(AuditStoreError) -> StoredShardMap { try await base.recordMap(map) }
    func storedMap() async throws(AuditStoreError) -> StoredShardMap { try await base.storedMap() }
    func row(id: StampID) async throws(AuditStoreError) -> AuditRow? { try await base.row(id: id) }
    func row(user: String, idempotencyKey: String) async throws(AuditStoreError) -> AuditRow? { try await base.row(user: user, idempotencyKey: idempotencyKey) }
    func history(user: String, field: String?, before: StampID?, limit: Int) async throws(AuditStoreError) -> [AuditRow] { try await base.history(user: user, field: field, before: before, limit: limit) }
    func latestOfEachField(user: String) async throws(AuditStoreError) -> [AuditRow] { try await base.latestOfEachField(user: user) }
    func latestID(user: String) async throws(AuditStoreError) -> StampID? { try await base.latestID(user: user) }
    func ids(after: StampID?, limit: Int) async throws(AuditStoreError) -> [StampID] { try await base.ids(after: after, limit: limit) }
    func chainHead() async throws(AuditStoreError) -> ChainHead { try await base.chainHead() }
    func chainedRows(after position: Int64, limit: Int) async throws(AuditStoreError) -> [ChainedRow] { try await base.chainedRows(after: position, limit: limit) }
    func rowCount() async throws(AuditStoreError) -> Int64 { try await base.rowCount() }
    func recordCheckpoint(_ checkpoint: AuditCheckpoint) async throws(AuditStoreError) { try await base.recordCheckpoint(checkpoint) }
    func checkpoints(below rows: Int64?, limit: Int) async throws(AuditStoreError) -> [AuditCheckpoint] { try await base.checkpoints(below: rows, limit: limit) }
    func userKeys(user: String) async throws(AuditStoreError) -> [StoredUserKey] { try await base.userKeys(user: user) }
    func addUserKey(_ key: StoredUserKey) async throws(AuditStoreError) -> [StoredUserKey] { try await base.addUserKey(key) }
    func addFirstUserKeys(_ keys: [StoredUserKey]) async throws(AuditStoreError) -> Set<String> { try await base.addFirstUserKeys(keys) }
    func eraseUserKeys(user: String) async throws(AuditStoreError) { try await base.eraseUserKeys(user: user) }
    func liveUserKeys() async throws(AuditStoreError) -> [StoredUserKey] { try await base.liveUserKeys() }
    func rewrapUserKeys(_ changes: [(old: StoredUserKey, wrapped: [UInt8])]) async throws(AuditStoreError) -> Int { try await base.rewrapUserKeys(changes) }
    func recordAccess(_ entry: AccessLogEntry) async throws(AuditStoreError) { try await base.recordAccess(entry) }
    func accessLog(user: String, limit: Int) async throws(AuditStoreError) -> [AccessLogEntry] { try await base.accessLog(user: user, limit: limit) }
    func ping() async throws(AuditStoreError) { try await base.ping() }
    func close() async { await base.close() }
}
