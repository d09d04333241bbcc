import StampCore

/// Walks one shard's chained rows in position order, recomputing every hash, and checks the
/// shard's head and checkpoints against the chain it recomputed.
///
/// Feed it every row (``check(_:)``, in pages), then ``finish(head:checkpoints:trusting:storedRows:)``. It
/// keeps only the first problem: later ones usually follow from it.
public struct ChainVerifier: Sendable {
    /// What is wrong, and where the chain first breaks.
    public struct Problem: Sendable, Equatable, CustomStringConvertible {
        public enum Kind: String, Sendable {
            /// The row's content no longer matches its hash: it was changed.
            case edited
            /// A position is missing: the row there was removed.
            case removed
            /// The row does not follow the one before it: rows were inserted, removed or
            /// reordered, with positions made up to hide it.
            case outOfPlace = "out-of-place"
            /// A row has no place in the chain (written without one).
            case unchained
            /// The chain ends before a checkpoint or the shard's head says it reached: rows were
            /// cut off its end.
            case truncated
            /// The chain does not reach the head a checkpoint or the shard's head row names.
            case headMismatch = "head-mismatch"
            /// A checkpoint's signature does not verify.
            case badSignature = "bad-signature"
        }

        public let kind: Kind
        /// The position where the chain first breaks (for checkpoint problems, the checkpoint's row count).
        public let position: Int64
        /// The ID of the row there, when there is one.
        public let id: StampID?
        public let detail: String

        public var description: String {
            "\(kind.rawValue) at position \(position)\(id.map { " (event \($0))" } ?? ""): \(detail)"
        }
    }

    /// Rows checked so far.
    public private(set) var rows: Int64 = 0
    /// The first problem found, if any.
    public private(set) var problem: Problem?
    private var head = ChainHead.empty
    /// The recomputed hash at each position a checkpoint may name, filled as rows pass.
    private var hashes: [Int64: [UInt8]] = [:]
    private let wanted: Set<Int64>
    /// A row whose hash did not match, until the next row tells an edit from a row out of place.
    private var suspect: ChainedRow?

    /// - Parameter checkpointRows: the row counts of the checkpoints that ``finish(head:checkpoints:trusting:storedRows:)``
    ///   will check, so that their hashes are kept as the walk passes them.
    public init(checkpointRows: some Sequence<Int64> = []) {
        wanted = Set(checkpointRows)
    }

    /// Checks the next row of the chain.
    public mutating func check(_ chained: ChainedRow) {
        rows += 1
        if let suspect {
            // An edited row kept its old hash, to which the next row is still chained; a row out
            // of place (inserted, moved, or after a removal that renumbered) breaks that too.
            let continues = chained.position == suspect.position + 1
                && AuditChain.hash(of: chained.row, position: chained.position, previous: suspect.hash) == chained.hash
            self.suspect = nil
            if continues {
                fail(.edited, suspect.position, suspect.row.id, "the row's content does not match its hash")
            } else {
                fail(.outOfPlace, suspect.position, suspect.row.id, "the row does not follow the one before it")
            }
        }
        guard problem == nil else { return }
        let expected = head.rows + 1
        guard chained.position == expected else {
            if chained.position > expected {
                fail(.removed, expected, chained.row.id, "position \(expected) is missing; the next row found is at \(chained.position)")
            } else {
                fail(.outOfPlace, chained.position, chained.row.id, "position \(chained.position) comes again after \(head.rows)")
            }
            return
        }
        let recomputed = AuditChain.hash(of: chained.row, position: chained.position, previous: head.hash)
        guard recomputed == chained.hash else {
            suspect = chained
            return
        }
        head = ChainHead(rows: chained.position, hash: recomputed, lastID: chained.row.id)
        if wanted.contains(chained.position) { hashes[chained.position] = recomputed }
    }

    /// Checks the chain's end against the shard's head row and its checkpoints, and returns the
    /// first problem of the whole walk, or `nil` when the shard verifies.
    ///
    /// - Parameters:
    ///   - head: The head the shard's head row records.
    ///   - checkpoints: The checkpoints to check (the shard's, and any kept elsewhere).
    ///   - publicKey: The key checkpoints must be signed with; `nil` trusts the key each names.
    ///   - storedRows: How many rows the shard holds, chained or not.
    public mutating func finish(head stored: ChainHead, checkpoints: [AuditCheckpoint], trusting publicKey: [UInt8]?, storedRows: Int64) -> Problem? {
        if let suspect {
            self.suspect = nil
            fail(.edited, suspect.position, suspect.row.id, "the last row's content does not match its hash")
        }
        if let problem { return problem }
        if storedRows > rows {
            fail(.unchained, head.rows + 1, nil, "\(storedRows - rows) of the shard's \(storedRows) rows have no place in the chain")
            return problem
        }
        for checkpoint in checkpoints.sorted(by: { $0.rows < $1.rows }) {
            guard checkpoint.isSigned(by: publicKey) else {
                fail(.badSignature, checkpoint.rows, checkpoint.lastID, "the checkpoint of \(checkpoint.rows) rows signed at \(checkpoint.signedAtMilliseconds) ms is not signed by the trusted key")
                return problem
            }
            guard checkpoint.rows <= head.rows else {
                fail(.truncated, checkpoint.rows, checkpoint.lastID, "a checkpoint says the chain held \(checkpoint.rows) rows; it holds \(head.rows)")
                return problem
            }
            let reached = checkpoint.rows == 0 ? AuditChain.genesis : hashes[checkpoint.rows]
            guard reached == checkpoint.head else {
                fail(.headMismatch, checkpoint.rows, checkpoint.lastID, "the chain's hash at \(checkpoint.rows) rows is not the head the checkpoint signed")
                return problem
            }
        }
        if stored.rows > head.rows {
            fail(.truncated, stored.rows, stored.lastID, "the shard's head says the chain held \(stored.rows) rows; it holds \(head.rows)")
        } else if stored != head {
            fail(.headMismatch, stored.rows, stored.lastID, "the shard's head row does not name the chain's last row and hash")
        }
        return problem
    }

    private mutating func fail(_ kind: Problem.Kind, _ position: Int64, _ id: StampID?, _ detail: String) {
        problem = Problem(kind: kind, position: position, id: id, detail: detail)
    }
}
