import StampCore
import Synchronization

/// Every ID one load client received, and how often one came out of order.
///
/// An ID is out of order when it does not exceed the greatest ID the client had received when
/// the call that returned it started: the client promises rising IDs to the calls of one client.
public final class IDLedger: Sendable {
    /// IDs recorded together by a closed-loop client, which checks their order itself.
    public struct Batch: Sendable {
        public private(set) var ids: [Int64] = []
        public private(set) var orderViolations = 0
        /// The greatest ID so far, carried from batch to batch.
        public fileprivate(set) var last: Int64 = -1

        public init() {}

        public mutating func record(_ id: StampID) {
            if id.rawValue <= last { orderViolations += 1 }
            last = max(last, id.rawValue)
            ids.append(id.rawValue)
        }
    }

    /// The ledger's figures.
    public struct Totals: Sendable {
        public var ids: [Int64] = []
        public var orderViolations = 0
        public var last: Int64 = -1
    }

    private let state = Mutex(Totals())

    public init() {}

    /// The greatest ID received so far: every ID of a call started now must exceed it.
    public var floor: Int64 { state.withLock { $0.last } }

    /// Records the ID of a call that started when the ledger's floor was `floor`.
    public func record(_ id: StampID, floor: Int64) {
        state.withLock { state in
            if id.rawValue <= floor { state.orderViolations += 1 }
            state.last = max(state.last, id.rawValue)
            state.ids.append(id.rawValue)
        }
    }

    /// Adds a batch, whose first ID must exceed every ID before it, and empties it but for its greatest ID.
    public func merge(_ batch: inout Batch) {
        state.withLock { state in
            if let first = batch.ids.first, first <= state.last { state.orderViolations += 1 }
            state.ids += batch.ids
            state.orderViolations += batch.orderViolations
            state.last = max(state.last, batch.last)
        }
        let last = batch.last
        batch = Batch()
        batch.last = last
    }

    public var totals: Totals { state.withLock { $0 } }

    /// How many IDs of `ledgers` together equal an ID before them, counted over all clients.
    public static func duplicates(in ledgers: [IDLedger]) -> (ids: Int, duplicates: Int) {
        let all = ledgers.flatMap(\.totals.ids)
        return (all.count, duplicates(among: all))
    }

    /// How many of `ids` equal an ID before them.
    public static func duplicates(among ids: [Int64]) -> Int {
        let sorted = ids.sorted()
        return sorted.indices.dropFirst().count { sorted[$0] == sorted[$0 - 1] }
    }
}
