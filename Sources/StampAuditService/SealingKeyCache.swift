import StampAudit
import Synchronization

/// The data keys an audit server sealed writes with lately, by user: the common write seals with
/// one at hand instead of reading its user's keys first.
///
/// Only writes use it; every read gathers the user's keys from the shards, so a key another
/// server destroyed never opens a value here. A key is kept for `lifetime` at most: a write through
/// this server after another server erased the user may be sealed with the destroyed key until
/// then, and reads as erased.
final class SealingKeyCache<Instant: InstantProtocol<Duration>>: Sendable {
    private struct Entry {
        let shard: Int
        let key: UserDataKey
        let expires: Instant
    }

    let lifetime: Duration
    let capacity: Int
    private let entries = Mutex<[String: Entry]>([:])

    init(lifetime: Duration, capacity: Int) {
        self.lifetime = lifetime
        self.capacity = capacity
    }

    /// The key to seal `user`'s writes to `shard` with, if one is at hand and not expired at `now`.
    func key(user: String, shard: Int, now: Instant) -> UserDataKey? {
        entries.withLock { entries in
            guard let entry = entries[user], entry.shard == shard, now < entry.expires else { return nil }
            return entry.key
        }
    }

    /// Keeps `key` for `user`'s writes to `shard` from `now` on; when full, forgets every key first.
    func keep(_ key: UserDataKey, user: String, shard: Int, now: Instant) {
        entries.withLock { entries in
            if entries.count >= capacity, entries[user] == nil {
                entries.removeAll(keepingCapacity: true)
            }
            entries[user] = Entry(shard: shard, key: key, expires: now.advanced(by: lifetime))
        }
    }

    /// Forgets `user`'s key.
    func forget(user: String) {
        _ = entries.withLock { $0.removeValue(forKey: user) }
    }
}
