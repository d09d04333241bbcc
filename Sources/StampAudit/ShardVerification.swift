import StampCore

/// The outcome of verifying one shard: rows walked, checkpoints checked, and the first problem.
public struct ShardVerification: Sendable {
    public let shard: Int
    /// Rows walked in chain order.
    public let rows: Int64
    /// Checkpoints checked: the shard's own and those given from elsewhere.
    public let checkpoints: Int
    /// The newest checkpoint checked, if any.
    public let newestCheckpoint: AuditCheckpoint?
    /// The first problem found; `nil` when the shard verifies.
    public let problem: ChainVerifier.Problem?
    /// How long the walk took.
    public let duration: Duration

    /// Recomputes `store`'s whole chain and checks its head row, its checkpoints and
    /// `extraCheckpoints` (of this shard, kept elsewhere) against it, signed by `publicKey` (when
    /// `nil`, by the key each checkpoint names). Reads only.
    public static func run(
        store: any AuditStore, shard: Int, extraCheckpoints: [AuditCheckpoint] = [], publicKey: [UInt8]?, pageSize: Int = 2000
    ) async throws(AuditStoreError) -> ShardVerification {
        let started = ContinuousClock.now
        var checkpoints = extraCheckpoints.filter { $0.shard == shard }
        var below: Int64?
        while true {
            let page = try await store.checkpoints(below: below, limit: 1000)
            checkpoints += page
            guard let last = page.last, page.count == 1000 else { break }
            below = last.rows
        }
        var verifier = ChainVerifier(checkpointRows: checkpoints.map(\.rows))
        var position: Int64 = 0
        while true {
            let page = try await store.chainedRows(after: position, limit: pageSize)
            for row in page { verifier.check(row) }
            guard let last = page.last, page.count == pageSize else { break }
            position = last.position
        }
        let head = try await store.chainHead()
        let stored = try await store.rowCount()
        let problem = verifier.finish(head: head, checkpoints: checkpoints, trusting: publicKey, storedRows: stored)
        return ShardVerification(
            shard: shard, rows: verifier.rows, checkpoints: checkpoints.count, newestCheckpoint: checkpoints.max { $0.rows < $1.rows },
            problem: problem, duration: started.duration(to: .now)
        )
    }
}
