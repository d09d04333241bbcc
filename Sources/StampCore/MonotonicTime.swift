#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Readings of the operating system's monotonic clock, which every process of one machine shares.
///
/// Swift's clocks hide their instants' raw values, so processes cannot compare them; these
/// readings can be compared: a node's log and a load client's record of the same machine put their
/// events on one time line, whatever each process's wall clock says.
public enum MonotonicTime {
    /// Microseconds of `CLOCK_MONOTONIC` now.
    public static func microseconds() -> Int64 {
        var spec = timespec()
        clock_gettime(CLOCK_MONOTONIC, &spec)
        return Int64(spec.tv_sec) * 1_000_000 + Int64(spec.tv_nsec) / 1000
    }

    /// The reading of `CLOCK_MONOTONIC` at `instant` of `clock`, from the clock's distance to it now.
    public static func microseconds<C: Clock<Duration>>(at instant: C.Instant, of clock: C) -> Int64 {
        microseconds() + clock.now.duration(to: instant).wholeMicroseconds
    }
}
