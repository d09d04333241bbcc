import Crypto
import StampCore

/// The hash chain over one shard's rows, in the order they were committed: what makes an edit,
/// a removal, a reordering or an insertion made afterwards - even by the database's superuser -
/// show.
///
/// Row `n` (positions count from 1) stores `hash(n) = SHA-256(hash(n-1) ‖ n ‖ content)`, with
/// `hash(0)` 32 zero bytes and `content` the row as stored (ID, user, field, actor, reason, the
/// sealed values, idempotency key, request digest), each part length-prefixed. The stores extend
/// the chain inside the insert's own transaction, one writer at a time (SQLite's write lock; a
/// locked head row on PostgreSQL), so its order is the shard's commit order. That is not always
/// ID order: several audit servers write one shard, each with IDs fetched a moment earlier.
///
/// A chain alone proves only that its rows follow one another: whoever can write the database
/// can append rows with valid hashes, or cut the tail. Signed checkpoints (``AuditCheckpoint``)
/// fix how far the chain reached, and what its head was, at a moment.
public enum AuditChain {
    /// The hash before the first row.
    public static let genesis = [UInt8](repeating: 0, count: 32)

    /// The hash of `row` at `position`, after the row whose hash is `previous`.
    public static func hash(of row: AuditRow, position: Int64, previous: [UInt8]) -> [UInt8] {
        var hasher = SHA256()
        hasher.update(data: previous)
        var content: [UInt8] = []
        content.reserveCapacity(128 + row.user.utf8.count + row.field.utf8.count + row.actor.utf8.count + row.reason.utf8.count + (row.before?.count ?? 0) + (row.after?.count ?? 0))
        append(UInt64(bitPattern: position), to: &content)
        append(UInt64(bitPattern: row.id.rawValue), to: &content)
        for text in [row.user, row.field, row.actor, row.reason] {
            append(Array(text.utf8), to: &content)
        }
        for value in [row.before, row.after] {
            if let value {
                content.append(1)
                append(value, to: &content)
            } else {
                content.append(0)
            }
        }
        append(Array(row.idempotencyKey.utf8), to: &content)
        append(row.requestDigest, to: &content)
        hasher.update(data: content)
        return Array(hasher.finalize())
    }

    /// Extends `head` with `row`: the row's position and hash, and the head after it.
    public static func extend(_ head: ChainHead, with row: AuditRow) -> (position: Int64, hash: [UInt8], head: ChainHead) {
        let position = head.rows + 1
        let hash = hash(of: row, position: position, previous: head.hash)
        return (position, hash, ChainHead(rows: position, hash: hash, lastID: row.id))
    }

    private static func append(_ value: UInt64, to bytes: inout [UInt8]) {
        withUnsafeBytes(of: value.bigEndian) { bytes.append(contentsOf: $0) }
    }

    private static func append(_ part: [UInt8], to bytes: inout [UInt8]) {
        withUnsafeBytes(of: UInt32(part.count).bigEndian) { bytes.append(contentsOf: $0) }
        bytes.append(contentsOf: part)
    }
}

/// Where a shard's chain ends: how many rows it holds, the last row's hash, and the last row's ID.
public struct ChainHead: Sendable, Equatable {
    public var rows: Int64
    public var hash: [UInt8]
    /// The ID of the row last chained; `nil` before the first.
    public var lastID: StampID?

    public init(rows: Int64, hash: [UInt8], lastID: StampID?) {
        self.rows = rows
        self.hash = hash
        self.lastID = lastID
    }

    /// The head of a shard with no rows.
    public static let empty = ChainHead(rows: 0, hash: AuditChain.genesis, lastID: nil)
}

/// A row as the chain holds it: its position, its stored hash, and its content.
public struct ChainedRow: Sendable, Equatable {
    public var position: Int64
    public var hash: [UInt8]
    public var row: AuditRow

    public init(position: Int64, hash: [UInt8], row: AuditRow) {
        self.position = position
        self.hash = hash
        self.row = row
    }
}
