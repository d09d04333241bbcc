import StampCore
import Synchronization

/// A wall clock that only moves when a test moves it, forwards or backwards.
public final class ManualWallClock: WallClock {
    private let now: Mutex<Int64>

    /// Starts at `unixMilliseconds`, by default 2026-01-01T00:00:00Z.
    public init(unixMilliseconds: Int64 = 1_767_225_600_000) {
        now = Mutex(unixMilliseconds)
    }

    public func unixMilliseconds() -> Int64 {
        now.withLock { $0 }
    }

    /// Sets the time, which may be earlier than before (a backward step).
    public func set(unixMilliseconds: Int64) {
        now.withLock { $0 = unixMilliseconds }
    }

    /// Moves the time by `milliseconds`, which may be negative.
    public func advance(milliseconds: Int64) {
        now.withLock { $0 += milliseconds }
    }
}
