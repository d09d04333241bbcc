import StampAudit
import Synchronization

/// Stores users' first data keys in one shard in groups: while one group's commit runs, the keys
/// asked for meanwhile wait, and go together in the next, so that a burst of new users costs a
/// few commits instead of one each.
final class FirstKeyCommitter: Sendable {
    private struct Waiter {
        let key: StoredUserKey
        let completion: @Sendable (Result<StoredUserKey?, AuditStoreError>) -> Void
    }

    private let store: any AuditStore
    private let state = Mutex<(waiting: [Waiter], running: Bool)>(([], false))

    init(store: any AuditStore) {
        self.store = store
    }

    /// Stores `key` unless the shard holds a key of its user; returns the key stored for the user
    /// by this group (another request's when two asked for the same user at once), or `nil` when
    /// the shard held one already.
    func add(_ key: StoredUserKey) async throws(AuditStoreError) -> StoredUserKey? {
        try await withCheckedContinuation { (continuation: CheckedContinuation<Result<StoredUserKey?, AuditStoreError>, Never>) in
            let leads = state.withLock { state -> Bool in
                state.waiting.append(Waiter(key: key) { continuation.resume(returning: $0) })
                guard !state.running else { return false }
                state.running = true
                return true
            }
            if leads {
                Task { await self.commitWaiting() }
            }
        }.get()
    }

    /// Commits groups of waiting keys, answering their requests, until none waits.
    private func commitWaiting() async {
        while true {
            let group = state.withLock { state -> [Waiter] in
                defer { state.waiting.removeAll() }
                if state.waiting.isEmpty { state.running = false }
                return state.waiting
            }
            guard !group.isEmpty else { return }
            var first: [String: StoredUserKey] = [:]
            for waiter in group where first[waiter.key.user] == nil {
                first[waiter.key.user] = waiter.key
            }
            let result: Result<Set<String>, AuditStoreError>
            do throws(AuditStoreError) {
                result = .success(try await store.addFirstUserKeys(Array(first.values)))
            } catch {
                result = .failure(error)
            }
            for waiter in group {
                waiter.completion(result.map { stored in stored.contains(waiter.key.user) ? first[waiter.key.user] : nil })
            }
        }
    }
}

/// The ``FirstKeyCommitter`` of each shard, made on first use.
final class FirstKeyCommitters: Sendable {
    private let committers = Mutex<[Int: FirstKeyCommitter]>([:])

    /// The committer of `shard`, whose store is `store`.
    func committer(shard: Int, store: any AuditStore) -> FirstKeyCommitter {
        committers.withLock { committers in
            if let committer = committers[shard] { return committer }
            let committer = FirstKeyCommitter(store: store)
            committers[shard] = committer
            return committer
        }
    }
}
