import StampAudit
import StampCore

/// The rows of one ``AuditStore/insert(_:)`` call as the database receives them, and the answer
/// the call gives back.
///
/// What the call itself settles is settled here, the same way for every database: a row whose
/// user and idempotency key came earlier in the call is a repeat, a row whose ID is not above
/// an earlier row of its user in the call is below that user's latest ID, and a row whose ID an
/// earlier row of another user in the call has finds its ID taken. None of them is sent. The rest
/// is sent, in call order, and the database decides each against what it stores.
struct AuditInsertBatch {
    /// The columns an insert names, in the order the rows' values are bound.
    static let columns = "id, user_id, field, actor, reason, before_value, after_value, idempotency_key, request_digest"

    /// The rows the database decides on, in their order in the call.
    let sent: [AuditRow]
    /// For each row of the call, its outcome when the call settled it, `nil` when it is sent.
    private let settled: [AuditInsertOutcome?]

    init(_ rows: [AuditRow]) {
        var seen: Set<UserKey> = []
        var greatest: [String: StampID] = [:]
        var ids: Set<StampID> = []
        settled = rows.map { row in
            guard seen.insert(UserKey(row)).inserted else { return .repeated }
            if let latest = greatest[row.user], row.id <= latest { return .belowLatest(latest) }
            guard ids.insert(row.id).inserted else { return .idTaken }
            greatest[row.user] = row.id
            return nil
        }
        sent = zip(rows, settled).filter { $0.1 == nil }.map(\.0)
    }

    /// The outcome of every row of the call, given the database's outcome of each sent row, in order.
    func outcomes(ofSent decided: [AuditInsertOutcome]) -> [AuditInsertOutcome] {
        precondition(decided.count == sent.count, "one outcome per sent row")
        var next = decided.makeIterator()
        return settled.map { $0 ?? next.next()! }
    }

    /// A user and one of their idempotency keys: what a row may exist once for.
    struct UserKey: Hashable {
        var user: String
        var idempotencyKey: String

        init(user: String, idempotencyKey: String) {
            self.user = user
            self.idempotencyKey = idempotencyKey
        }

        init(_ row: AuditRow) {
            self.init(user: row.user, idempotencyKey: row.idempotencyKey)
        }
    }
}
