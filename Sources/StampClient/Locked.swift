import Synchronization

/// A value that several of the client's parts share, behind one lock: each ``withLock(_:)`` is one
/// critical section.
///
/// The node table (used by the retry loop, the health prober and discovery) and the shard ledger
/// (used by requests, the coalescer and the prefetch refiller) are held this way.
final class Locked<Value: Sendable>: Sendable {
    private let mutex: Mutex<Value>

    init(_ value: Value) {
        mutex = Mutex(value)
    }

    /// Runs `body` on the value while holding the lock.
    func withLock<Result: Sendable>(_ body: (inout Value) -> Result) -> Result {
        mutex.withLock { body(&$0) }
    }
}
