import Foundation
import Logging
import StampAudit
import StampCore
import StampShardMap

/// Verifies every shard a shard map names (see ``ShardVerification``): what `stamp audit verify` runs.
public enum ShardMapVerification {
    /// One shard's outcome: its verification, or why it could not be read.
    public typealias Outcome = (shard: Int, result: Result<ShardVerification, AuditStoreError>)

    /// Reads the map at `shardMapPath` and verifies each of its shards in turn, reading only.
    public static func run(
        shardMapPath: String, layout: IDLayout, checkpoints: [AuditCheckpoint], publicKey: [UInt8]?, logger: Logger
    ) async throws(AuditServiceError) -> [Outcome] {
        let map: ShardMap
        do {
            map = try ShardMap.decode(Data(contentsOf: URL(fileURLWithPath: shardMapPath)), layout: layout)
        } catch let error as ShardMapError {
            throw AuditServiceError(.invalidConfiguration, "the shard map \(shardMapPath): \(error.message)", cause: error)
        } catch {
            throw AuditServiceError(.invalidConfiguration, "the shard map \(shardMapPath) cannot be read", cause: error)
        }
        let folder = URL(fileURLWithPath: shardMapPath).deletingLastPathComponent().path
        var outcomes: [Outcome] = []
        for shard in map.shards {
            let store: any AuditStore
            do {
                store = try AuditStores.open(shard, folder: folder, logger: logger)
            } catch {
                outcomes.append((shard.id, .failure(error as? AuditStoreError ?? AuditStoreError(.invalidConfiguration, "shard \(shard.id)'s database cannot be opened"))))
                continue
            }
            let result = await withTaskGroup(of: Void.self) { group -> Result<ShardVerification, AuditStoreError> in
                group.addTask { try? await store.run() }
                defer { group.cancelAll() }
                do throws(AuditStoreError) {
                    return .success(try await ShardVerification.run(store: store, shard: shard.id, extraCheckpoints: checkpoints, publicKey: publicKey))
                } catch {
                    return .failure(error)
                }
            }
            await store.close()
            outcomes.append((shard.id, result))
        }
        return outcomes
    }
}
