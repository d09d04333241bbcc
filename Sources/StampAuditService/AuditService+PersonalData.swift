import Foundation
import StampAudit
import StampCore
import StampShardMap

/// One reader of personal-data values, as the access log names them, and what they asked.
public struct AccessContext: Sendable {
    /// The role and a fingerprint of its token.
    public var reader: String
    /// The method, the path and the query.
    public var request: String

    public init(reader: String, request: String) {
        self.reader = reader
        self.request = request
    }
}

/// The values of one event as a reader sees them.
public enum EventValues: Sendable, Equatable {
    /// The values in clear; `nil` where the change had none.
    case opened(before: String?, after: String?)
    /// An erasure destroyed the key that sealed them.
    case erased
}

extension AuditService {
    /// Finds the data key to seal `write`'s values with, unless it has one or no values: for a user
    /// with no key in any shard, a first one stored in the write shard; else the newest generation of the user's key that is not destroyed, from the write shard or a former
    /// one (then stored in the write shard too), or a new generation stored in the write shard.
    func fillSealingKey(_ write: inout PreparedWrite) async throws(AuditServiceError) {
        guard write.needsKey else { return }
        let user = write.user
        let writeStore = write.target.store
        if write.placement.read.count == 1 {
            // Most users have no key yet when a server first seals for them: store the first one
            // in one round trip; when the shard holds one already, find it as below.
            let fresh = UserDataKey.random(generation: 1)
            let stored = StoredUserKey(user: user, generation: 1, wrapped: sealer.wrap(fresh, user: user))
            let committer = firstKeyCommitters.committer(shard: write.placement.write, store: writeStore)
            if let winner = try await storeRead({ () async throws(AuditStoreError) in try await committer.add(stored) }), let key = try unwrap(winner) {
                sealingKeys.keep(key, user: user, shard: write.placement.write, now: shardMap.clock.now)
                write.key = key
                return
            }
        }
        var held: [Int: [StoredUserKey]] = [:]
        for shard in write.placement.read {
            let store = try open(shard).store
            held[shard] = try await storeRead { () async throws(AuditStoreError) in try await store.userKeys(user: user) }.filter { $0.user == user }
        }
        let all = held.values.flatMap { $0 }
        let keyring = try keyring(all)
        let newest = all.map(\.generation).max() ?? 0
        let key: UserDataKey
        if newest > 0, let live = keyring.key(generation: newest) {
            if !(held[write.placement.write] ?? []).contains(where: { $0.generation == newest }) {
                let stored = StoredUserKey(user: user, generation: newest, wrapped: sealer.wrap(live, user: user))
                let after = try await storeRead { () async throws(AuditStoreError) in try await writeStore.addUserKey(stored) }
                guard after.contains(where: { $0.user == user && $0.generation == newest && $0.wrapped != nil }) else { throw Self.erasedMeanwhile }
            }
            key = live
        } else {
            guard newest < UserDataKey.maxGeneration else {
                throw AuditServiceError(.invalidConfiguration, "the user's data key has had its last generation")
            }
            let fresh = UserDataKey.random(generation: newest + 1)
            let stored = StoredUserKey(user: user, generation: fresh.generation, wrapped: sealer.wrap(fresh, user: user))
            let after = try await storeRead { () async throws(AuditStoreError) in try await writeStore.addUserKey(stored) }
            // Another server may have stored that generation first: every writer takes the one stored.
            guard let winner = after.first(where: { $0.user == user && $0.generation == fresh.generation }), let opened = try unwrap(winner) else {
                throw Self.erasedMeanwhile
            }
            key = opened
        }
        sealingKeys.keep(key, user: user, shard: write.placement.write, now: shardMap.clock.now)
        write.key = key
    }

    private static var erasedMeanwhile: AuditServiceError {
        AuditServiceError(.erasureInProgress, "the user's personal data was erased while this write was sealed; retry with the same Idempotency-Key")
    }

    private func unwrap(_ stored: StoredUserKey) throws(AuditServiceError) -> UserDataKey? {
        do {
            return try sealer.unwrap(stored)
        } catch {
            logger.error("stored data key unreadable", metadata: ["stamp.error": "\(error)"])
            throw AuditServiceError(.sealedValueUnreadable, "a stored data key cannot be unwrapped with the configured master key", cause: error)
        }
    }

    private func keyring(_ stored: [StoredUserKey]) throws(AuditServiceError) -> UserKeyring {
        do {
            return try sealer.keyring(stored)
        } catch {
            logger.error("stored data key unreadable", metadata: ["stamp.error": "\(error)"])
            throw AuditServiceError(.sealedValueUnreadable, "a stored data key cannot be unwrapped with the configured master key", cause: error)
        }
    }

    /// The keyring of `user` from `shards` and every shard that may hold the user's rows.
    private func keyring(user: String, shards extra: [Int] = []) async throws(AuditServiceError) -> UserKeyring {
        var stored: [StoredUserKey] = []
        for shard in Set(shardMap.current.placement(ofUser: user).read + extra).sorted() {
            let store = try open(shard).store
            stored += try await storeRead { () async throws(AuditStoreError) in try await store.userKeys(user: user) }
        }
        return try keyring(stored)
    }

    /// Opens the values of `rows`, events of `user`, for the reader `access` names, and records
    /// in the access log that they were returned: the values come back only once that is stored.
    public func values(of rows: [AuditRow], user: String, for access: AccessContext) async throws(AuditServiceError) -> [EventValues] {
        let shards = Set(rows.map { $0.id.fields(in: layout).shard }).sorted()
        let keyring = try await keyring(user: user, shards: shards)
        let values = try rows.map { row throws(AuditServiceError) in try open(row, keyring: keyring) }
        try await recordAccess(AccessLogEntry(
            recordedAt: SystemWallClock().unixMilliseconds(), reader: access.reader, user: user, request: access.request,
            events: zip(rows, values).compactMap { row, values in values == .erased ? nil : row.id }
        ))
        return values
    }

    private func open(_ row: AuditRow, keyring: UserKeyring) throws(AuditServiceError) -> EventValues {
        do {
            let before = try row.before.map { sealed throws(AuditInputError) in try sealer.open(sealed, id: row.id, slot: .before, keyring: keyring) }
            let after = try row.after.map { sealed throws(AuditInputError) in try sealer.open(sealed, id: row.id, slot: .after, keyring: keyring) }
            if before == .erased || after == .erased { return .erased }
            func text(_ value: OpenedValue?) -> String? {
                if case .value(let text) = value { return text }
                return nil
            }
            return .opened(before: text(before), after: text(after))
        } catch {
            logger.error("stored value unreadable", metadata: ["stamp.event": "\(row.id)", "stamp.error": "\(error)"])
            throw AuditServiceError(.sealedValueUnreadable, "a stored value of event \(row.id) cannot be opened with the configured data key", cause: error)
        }
    }

    /// Appends `entry` to the access log of the user's write shard.
    private func recordAccess(_ entry: AccessLogEntry) async throws(AuditServiceError) {
        let store = try open(shardMap.current.placement(ofUser: entry.user).write).store
        try await storeRead { () async throws(AuditStoreError) in try await store.recordAccess(entry) }
    }

    /// Up to `limit` entries of the access log about `user`, newest first, from every shard that
    /// may hold them.
    public func accessLog(user: String, limit: Int) async throws(AuditServiceError) -> [AccessLogEntry] {
        var entries: [AccessLogEntry] = []
        for shard in shardMap.current.placement(ofUser: user).read {
            let store = try open(shard).store
            entries += try await storeRead { () async throws(AuditStoreError) in try await store.accessLog(user: user, limit: limit) }
        }
        return Array(entries.sorted { $0.recordedAt > $1.recordedAt }.prefix(limit))
    }

    /// Erases `user`'s personal data: destroys their data keys in every shard of the map, so that
    /// the values of their events read as erased from then on, and records the erasure as an event
    /// of the user (field `personal-data`, no values, `requestedBy` as its actor). Nothing else of
    /// their events changes, and no row is updated or deleted. Erasing again destroys nothing more
    /// and records another event.
    ///
    /// Rows stored before per-user keys were sealed with the master key itself: they read as
    /// erased too, but the master key still opens them.
    public func erase(user: String, requestedBy: String) async throws(AuditServiceError) -> AuditRow {
        for shard in shardMap.current.shards.map(\.id).sorted() {
            let store = try open(shard).store
            try await storeRead { () async throws(AuditStoreError) in try await store.eraseUserKeys(user: user) }
        }
        sealingKeys.forget(user: user)
        let event = AuditEventInput(
            field: Self.erasureField, before: nil, after: nil, actor: requestedBy,
            reason: "erasure of the user's personal data: their data keys were destroyed in every shard"
        )
        let written = try await record(prepare(user: user, idempotencyKey: "stamp-erasure-\(UUID().uuidString)", event: event))
        logger.notice("personal data erased", metadata: ["stamp.event": "\(written.row.id)"])
        return written.row
    }

    /// The field of the events that record erasures.
    public static var erasureField: String { "personal-data" }

    /// Every event of `user`, oldest first, from every shard that may hold them.
    public func completeHistory(user: String) async throws(AuditServiceError) -> [AuditRow] {
        var rows: [AuditRow] = []
        var before: StampID?
        while true {
            let page = try await history(user: user, field: nil, before: before, limit: AuditLimits.maxPageSize)
            rows += page
            guard page.count == AuditLimits.maxPageSize, let last = page.last else { break }
            before = last.id
        }
        return rows.reversed()
    }
}
