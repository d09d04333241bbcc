import Synchronization

/// The demo's users: which have a write in flight (at most one each, so that each user's writes
/// have an order), and the IDs of each user's acknowledged writes in write order.
public final class UserLedger: Sendable {
    /// A user taken for one write, and the write's number among that user's writes (from 1).
    public struct Claim: Sendable, Equatable {
        public let user: Int
        public let sequence: Int
    }

    /// What the ledger holds at the end of the driving.
    public struct Snapshot: Sendable {
        /// Users that were written to, with their acknowledged IDs in write order.
        public var users: [(user: Int, acknowledged: [Int64])]
        /// Acknowledged writes whose answer said a retry found them already stored.
        public var replayed: Int
        /// Attempts made again after a failed one.
        public var retries: Int
    }

    private struct User {
        var busy = false
        var writes = 0
        var acknowledged: [Int64] = []
    }

    private struct State {
        var users: [User]
        var replayed = 0
        var retries = 0
    }

    private let state: Mutex<State>
    /// How many users there are.
    public let count: Int

    public init(users: Int) {
        count = users
        state = Mutex(State(users: Array(repeating: User(), count: users)))
    }

    /// Takes the first user from `user` on without a write in flight, looking at no more than 64.
    public func claim(near user: Int) -> Claim? {
        state.withLock { state in
            let count = state.users.count
            for offset in 0..<min(count, 64) {
                let index = (user + offset) % count
                if !state.users[index].busy {
                    state.users[index].busy = true
                    state.users[index].writes += 1
                    return Claim(user: index, sequence: state.users[index].writes)
                }
            }
            return nil
        }
    }

    /// Frees the claim's user and records the ID its write was acknowledged with.
    public func acknowledge(_ claim: Claim, id: Int64, replayed: Bool) {
        state.withLock { state in
            state.users[claim.user].busy = false
            state.users[claim.user].acknowledged.append(id)
            if replayed { state.replayed += 1 }
        }
    }

    /// Frees the claim's user after its write failed.
    public func release(_ claim: Claim) {
        state.withLock { $0.users[claim.user].busy = false }
    }

    public func countRetry() {
        state.withLock { $0.retries += 1 }
    }

    public func snapshot() -> Snapshot {
        state.withLock { state in
            let users = state.users.indices.filter { state.users[$0].writes > 0 }.map { ($0, state.users[$0].acknowledged) }
            return Snapshot(users: users, replayed: state.replayed, retries: state.retries)
        }
    }
}
