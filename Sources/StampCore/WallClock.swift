#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A source of wall-clock time in Unix milliseconds.
///
/// Wall time decides the time field of IDs. It may step backwards or forwards; the generator
/// absorbs that (see ``GeneratorState``). Monotonic time for timeouts and leases goes through
/// Swift's `Clock` instead.
public protocol WallClock: Sendable {
    /// Milliseconds since 1970-01-01T00:00:00Z.
    func unixMilliseconds() -> Int64
}

/// The operating system's real-time clock.
public struct SystemWallClock: WallClock {
    public init() {}

    public func unixMilliseconds() -> Int64 {
        var spec = timespec()
        clock_gettime(CLOCK_REALTIME, &spec)
        return Int64(spec.tv_sec) * 1000 + Int64(spec.tv_nsec) / 1_000_000
    }
}
