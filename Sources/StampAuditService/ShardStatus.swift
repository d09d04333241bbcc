import StampAudit
import StampCore

/// What an audit server can say about one shard's hash chain at a glance: its head, its newest
/// signed checkpoint, and whether the two agree. ``AuditService/shardStatus(shard:)`` reads it with
/// two or three queries; ``AuditService/verify(shard:)`` walks the whole chain.
public struct ShardStatus: Sendable {
    public let shard: Int
    /// Where the chain ends, as the shard's head row records it.
    public let head: ChainHead
    /// The newest checkpoint kept in the shard, if any.
    public let checkpoint: AuditCheckpoint?
    /// Whether the checkpoint's signature verifies: with the server's own signing key when it has
    /// one, else with the key the checkpoint names. `nil` without a checkpoint.
    public let checkpointSigned: Bool?
    /// Whether the row the checkpoint ends at still carries the head hash it signed (the stored
    /// hash, not recomputed; ``AuditService/verify(shard:)`` recomputes). `nil` without a checkpoint.
    public let checkpointReached: Bool?

    /// What the quick look finds wrong, or `nil` when the head and the newest checkpoint agree.
    public var problem: String? {
        guard let checkpoint else { return nil }
        if checkpointSigned == false {
            return "the newest checkpoint's signature does not verify"
        }
        if checkpoint.rows > head.rows {
            return "the chain holds \(head.rows) rows, fewer than the \(checkpoint.rows) of the newest checkpoint: rows were cut off its end"
        }
        if checkpointReached == false {
            return "the row at position \(checkpoint.rows) does not carry the head hash the newest checkpoint signed"
        }
        return nil
    }
}

extension AuditService {
    /// The key checkpoints of this server are signed with, when it signs them.
    public var checkpointPublicKey: [UInt8]? { checkpoints?.signer.publicKey }

    /// A quick look at shard `shard`'s chain: its head, its newest checkpoint, whether that is
    /// signed and whether the chain still reaches the head it signed. Reads no personal data.
    public func shardStatus(shard: Int) async throws(AuditServiceError) -> ShardStatus {
        let store = try open(shard).store
        let head = try await storeRead { () async throws(AuditStoreError) in try await store.chainHead() }
        guard let checkpoint = try await latestCheckpoint(shard: shard) else {
            return ShardStatus(shard: shard, head: head, checkpoint: nil, checkpointSigned: nil, checkpointReached: nil)
        }
        let signed = checkpoint.isSigned(by: checkpointPublicKey)
        var reached = false
        if checkpoint.rows == 0 {
            reached = checkpoint.head == AuditChain.genesis
        } else if checkpoint.rows <= head.rows {
            let row = try await storeRead { () async throws(AuditStoreError) in try await store.chainedRows(after: checkpoint.rows - 1, limit: 1) }.first
            reached = row?.position == checkpoint.rows && row?.hash == checkpoint.head
        }
        return ShardStatus(shard: shard, head: head, checkpoint: checkpoint, checkpointSigned: signed, checkpointReached: reached)
    }

    /// Verifies shard `shard` as `stamp audit verify` does (see ``ShardVerification``): recomputes
    /// its whole chain and checks its head row and checkpoints, signed by this server's key when it
    /// has one. Reads only, with no time bound: it takes as long as the walk.
    public func verify(shard: Int) async throws(AuditServiceError) -> ShardVerification {
        let store = try open(shard).store
        let publicKey = checkpointPublicKey
        return try await Self.storeCall { () async throws(AuditStoreError) in
            try await ShardVerification.run(store: store, shard: shard, publicKey: publicKey)
        }
    }
}
