import Foundation
import Logging
import StampAudit
import StampCore
import StampShardMap

/// Rotates the master key that wraps users' data keys: re-wraps every data key a shard holds
/// under the new master key, without touching any event row.
///
/// Values stored before per-user keys were sealed with the master key itself; the first rotation
/// keeps that key in each shard, wrapped by the new one (under ``StoredUserKey/legacyKeyOwner``),
/// so they still open. Rotating again re-wraps it like every other key. A rotation may run again:
/// keys wrapped by the new master key already are left as they are.
public enum MasterKeyRotation {
    /// What a rotation did in one shard.
    public struct ShardReport: Sendable, Equatable {
        public var shard: Int
        /// Data keys that were not destroyed, the kept master key among them.
        public var keys: Int
        /// Keys it re-wrapped: the rest were wrapped by the new master key already.
        public var rewrapped: Int
    }

    /// Re-wraps the keys of `store` from `old`'s master key to `new`'s.
    public static func rotate(_ store: any AuditStore, shard: Int, from old: ValueSealer, to new: ValueSealer) async throws(AuditServiceError) -> ShardReport {
        try await AuditService<ContinuousClock>.storeCall { () async throws(AuditStoreError) in
            if try await store.userKeys(user: StoredUserKey.legacyKeyOwner).isEmpty {
                _ = try await store.addUserKey(new.wrapped(masterKeyOf: old))
            }
        }
        let keys = try await AuditService<ContinuousClock>.storeCall { () async throws(AuditStoreError) in try await store.liveUserKeys() }
        var changes: [(old: StoredUserKey, wrapped: [UInt8])] = []
        for key in keys {
            do {
                if let wrapped = try new.rewrap(key, from: old) {
                    changes.append((key, wrapped))
                }
            } catch {
                throw AuditServiceError(.sealedValueUnreadable, "shard \(shard) holds a data key that neither master key unwraps", cause: error)
            }
        }
        let rewrapped = try await AuditService<ContinuousClock>.storeCall { () async throws(AuditStoreError) in try await store.rewrapUserKeys(changes) }
        guard rewrapped == changes.count else {
            throw AuditServiceError(.erasureInProgress, "shard \(shard): \(changes.count - rewrapped) keys changed during the rotation (an erasure, or another rotation); run it again")
        }
        return ShardReport(shard: shard, keys: keys.count, rewrapped: rewrapped)
    }

    /// Re-wraps the keys of every shard of the map at `shardMapPath`, migrating each first.
    public static func rotate(shardMapPath: String, layout: IDLayout, from old: ValueSealer, to new: ValueSealer, logger: Logger) async throws -> [ShardReport] {
        let map = try ShardMap.decode(Data(contentsOf: URL(fileURLWithPath: shardMapPath)), layout: layout)
        let folder = URL(fileURLWithPath: shardMapPath).deletingLastPathComponent().path
        var reports: [ShardReport] = []
        for shard in map.shards.sorted(by: { $0.id < $1.id }) {
            let store = try AuditStores.open(shard, folder: folder, logger: logger)
            let report = try await withThrowingTaskGroup { group in
                group.addTask { try await store.run() }
                defer { group.cancelAll() }
                do {
                    try await store.migrate()
                    let report = try await rotate(store, shard: shard.id, from: old, to: new)
                    await store.close()
                    return report
                } catch {
                    await store.close()
                    throw error
                }
            }
            reports.append(report)
        }
        return reports
    }
}
