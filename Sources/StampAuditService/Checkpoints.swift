import Foundation
import Logging
import ServiceLifecycle
import StampAudit
import StampCore

/// When an audit server signs checkpoints of its shards' hash chains, and with which key.
public struct CheckpointPolicy: Sendable {
    public var signer: CheckpointSigner
    /// A checkpoint once this many rows were chained since the last one (default 10,000).
    public var everyRows: Int64
    /// A checkpoint once this long passed since the last one, when rows were chained meanwhile
    /// (default 60 s).
    public var interval: Duration

    public init(signer: CheckpointSigner, everyRows: Int64 = 10_000, interval: Duration = .seconds(60)) {
        self.signer = signer
        self.everyRows = everyRows
        self.interval = interval
    }
}

extension AuditService {
    /// Signs a checkpoint of shard `shard`'s chain as it is now, keeps it in the shard, logs it,
    /// and returns it; `nil` when the service has no signing key.
    @discardableResult
    public func checkpoint(shard: Int) async throws(AuditServiceError) -> AuditCheckpoint? {
        guard let policy = checkpoints else { return nil }
        let store = try open(shard).store
        let head = try await storeRead { () async throws(AuditStoreError) in try await store.chainHead() }
        let checkpoint = policy.signer.checkpoint(shard: shard, head: head, signedAtMilliseconds: Int64(Date().timeIntervalSince1970 * 1000))
        try await storeRead { () async throws(AuditStoreError) in try await store.recordCheckpoint(checkpoint) }
        logger.notice("checkpoint signed", metadata: [
            "stamp.shard": "\(shard)", "stamp.checkpoint.rows": "\(checkpoint.rows)",
            "stamp.checkpoint.last_id": "\(checkpoint.lastID.map { "\($0.rawValue)" } ?? "none")",
            "stamp.checkpoint.head": "\(AuditCheckpoint.hex(checkpoint.head))",
            "stamp.checkpoint.signed_at_ms": "\(checkpoint.signedAtMilliseconds)",
            "stamp.checkpoint.public_key": "\(Data(checkpoint.publicKey).base64EncodedString())",
            "stamp.checkpoint.signature": "\(Data(checkpoint.signature).base64EncodedString())",
        ])
        return checkpoint
    }

    /// The newest checkpoint kept in shard `shard`, if any.
    public func latestCheckpoint(shard: Int) async throws(AuditServiceError) -> AuditCheckpoint? {
        let store = try open(shard).store
        return try await storeRead { () async throws(AuditStoreError) in try await store.checkpoints(below: nil, limit: 1) }.first
    }

    /// A signed checkpoint of shard `shard` that covers every row committed there before the call:
    /// the newest one kept when no row was chained since, else one signed now. `nil` when the
    /// service has no signing key and no kept checkpoint reaches the chain's head.
    public func coveringCheckpoint(shard: Int) async throws(AuditServiceError) -> AuditCheckpoint? {
        let store = try open(shard).store
        let head = try await storeRead { () async throws(AuditStoreError) in try await store.chainHead() }
        if let latest = try await latestCheckpoint(shard: shard), latest.rows >= head.rows {
            return latest
        }
        return try await checkpoint(shard: shard)
    }
}

/// Signs checkpoints of every open shard as the service's ``CheckpointPolicy`` asks: looks at
/// each shard's chain head every second (or every `interval`, when shorter) and counts the time
/// since a shard's last checkpoint in those looks. Run it beside the shard set when the service
/// has a signing key.
///
/// Several audit servers on one shard each sign; a shard keeps one checkpoint per row count.
public struct CheckpointService<C: Clock<Duration>>: Service {
    let service: AuditService<C>
    let clock: any Clock<Duration>

    /// - Parameter clock: The clock the looks are timed on.
    public init(service: AuditService<C>, clock: any Clock<Duration> = ContinuousClock()) {
        self.service = service
        self.clock = clock
    }

    public func run() async throws {
        guard let policy = service.checkpoints else { return }
        let look = min(policy.interval, .seconds(1))
        await cancelWhenGracefulShutdown {
            var last: [Int: (rows: Int64, since: Duration)] = [:]
            while (try? await clock.sleep(for: look)) != nil {
                for shard in service.shards.openShardIDs {
                    do throws(AuditServiceError) {
                        let store = try service.open(shard).store
                        if last[shard] == nil {
                            last[shard] = (try await service.latestCheckpoint(shard: shard)?.rows ?? 0, .zero)
                        }
                        last[shard]?.since += look
                        let head = try await service.storeRead { () async throws(AuditStoreError) in try await store.chainHead() }
                        guard let previous = last[shard], head.rows > previous.rows,
                              head.rows - previous.rows >= policy.everyRows || previous.since >= policy.interval
                        else { continue }
                        if let checkpoint = try await service.checkpoint(shard: shard) {
                            last[shard] = (checkpoint.rows, .zero)
                        }
                    } catch {
                        service.logger.warning("no checkpoint signed", metadata: ["stamp.shard": "\(shard)", "stamp.error": "\(error)"])
                    }
                }
            }
        }
    }
}
