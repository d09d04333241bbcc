import Foundation
import Logging
import Metrics
import StampCore
import StampDatabase
import StampShardMap

extension AuditService {
    /// Builds the service a configuration describes: creates the shard map file when missing,
    /// reads it, and makes the shard set and the shard map source. Run
    /// ``AuditService/shards`` and ``AuditService/shardMap`` as services beside it.
    ///
    /// - Parameters:
    ///   - ids: Where IDs come from: a ``StampIDClient`` in production.
    ///   - clock: The clock the shard map source polls the file on.
    public init(configuration: AuditServiceConfiguration, ids: any AuditIDSource, clock: C, logger: Logger, metricsFactory: any MetricsFactory = MetricsSystem.factory) throws(AuditServiceError) {
        guard let sealer = configuration.sealer else {
            throw AuditServiceError(.invalidConfiguration, "the audit service needs a data key")
        }
        guard AuditServiceConfiguration.maxBatchRange.contains(configuration.maxBatch) else {
            throw AuditServiceError(.invalidConfiguration, "the batch size must be between \(AuditServiceConfiguration.maxBatchRange.lowerBound) and \(AuditServiceConfiguration.maxBatchRange.upperBound)")
        }
        let path = configuration.shardMapPath
        do {
            try Self.createDefaultShardMapIfMissing(at: path, logger: logger)
        } catch {
            throw AuditServiceError(.invalidConfiguration, "the shard map \(path) cannot be created", cause: error)
        }
        let folder = URL(fileURLWithPath: path).deletingLastPathComponent().path
        let policy = configuration.commitPolicy
        guard configuration.maxWaitingWrites >= 1, configuration.storeTimeout > .zero else {
            throw AuditServiceError(.invalidConfiguration, "the waiting writes per shard must be 1 or more and the store timeout above zero")
        }
        let limits = ShardSet.CommitLimits(maxBatch: configuration.maxBatch, maxWaiting: configuration.maxWaitingWrites, commitTimeout: configuration.storeTimeout)
        let shards = ShardSet(layout: configuration.layout, limits: limits, commitsPerShard: { policy.concurrentCommits(on: $0) }, logger: logger, metricsFactory: metricsFactory) { shard in
            try AuditStores.open(shard, folder: folder, logger: logger)
        }
        let source: ShardMapSource<C>
        do {
            source = try ShardMapSource(path: path, layout: configuration.layout, clock: clock, logger: logger) { map in
                try await shards.prepare(map)
            }
        } catch {
            throw AuditServiceError(.invalidConfiguration, "the shard map \(path): \(error.message)", cause: error)
        }
        self.init(layout: configuration.layout, shardMap: source, shards: shards, ids: ids, sealer: sealer, checkpoints: configuration.checkpoints, storeTimeout: configuration.storeTimeout, logger: logger, metricsFactory: metricsFactory)
    }

    /// Writes a one-shard map (an SQLite file beside it) when none exists, so a server starts on defaults.
    static func createDefaultShardMapIfMissing(at path: String, logger: Logger) throws {
        guard !FileManager.default.fileExists(atPath: path) else { return }
        let folder = URL(fileURLWithPath: path).deletingLastPathComponent()
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        try ShardMap.even(databases: [.sqlite(path: "audit-shard-0.sqlite")]).write(to: path)
        logger.notice("shard map created", metadata: ["stamp.shard_map.path": "\(path)"])
    }
}
