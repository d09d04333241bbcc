import StampAudit
import StampCore

/// The rows of one ``AuditStore/insert(_:)`` call as the database receives them, and the answer
/// the call gives back.
///
/// Only the first row of each user and idempotency key goes to the database; a later one in the
/// same call is reported as not stored without being sent. What goes is split into statements
/// small enough for the database's limit on bound parameters.
struct AuditInsertBatch {
    /// The columns an insert names, in the order the rows' values are bound.
    static let columns = "id, user_id, field, actor, reason, before_value, after_value, idempotency_key, request_digest"
    /// How many values one row binds: one per column.
    static let parametersPerRow = 9

    private let rows: [AuditRow]
    /// For each row, whether it is the first of its user and idempotency key in the call.
    private let isFirstOfKey: [Bool]

    init(_ rows: [AuditRow]) {
        var seen: Set<UserKey> = []
        self.rows = rows
        self.isFirstOfKey = rows.map { seen.insert(UserKey(user: $0.user, idempotencyKey: $0.idempotencyKey)).inserted }
    }

    /// The rows to send, in their order in the call, in groups of at most as many rows as
    /// `parameterLimit` bound parameters allow.
    func statements(parameterLimit: Int) -> [ArraySlice<AuditRow>] {
        let sent = zip(rows, isFirstOfKey).filter(\.1).map(\.0)
        let rowsPerStatement = parameterLimit / Self.parametersPerRow
        return stride(from: 0, to: sent.count, by: rowsPerStatement).map { start in
            sent[start..<min(start + rowsPerStatement, sent.count)]
        }
    }

    /// For each row of the call, whether it was stored, given the IDs the inserts returned.
    ///
    /// An ID counts for the first row sent with it only: the database inserts rows in order, so
    /// when two rows share an ID and the first went in, the second was skipped.
    func results(insertedIDs: some Sequence<StampID>) -> [Bool] {
        var unclaimed = Set(insertedIDs)
        return zip(rows, isFirstOfKey).map { row, isFirst in
            isFirst && unclaimed.remove(row.id) != nil
        }
    }

    private struct UserKey: Hashable {
        var user: String
        var idempotencyKey: String
    }
}
