/// Runs `operation` against a deadline `timeout` from now on `clock`, and returns whichever ends
/// first: the operation's answer, or `timedOut()` once the deadline has passed. The other is
/// cancelled. When the calling task is cancelled and the operation gives no answer first, the
/// answer is `cancelled()`.
///
/// The client's attempts and health probes are both timed this way, on the client's clock, so that
/// tests move time with a manual clock instead of sleeping.
func withTimeout<C: Clock<Duration>, Answer: Sendable>(
    _ timeout: Duration,
    on clock: C,
    timedOut: @autoclosure @escaping @Sendable () -> Answer,
    cancelled: @autoclosure () -> Answer,
    operation: @escaping @Sendable () async -> Answer
) async -> Answer {
    let first = await withTaskGroup(of: Answer?.self) { group in
        group.addTask { await operation() }
        group.addTask {
            do {
                try await clock.sleep(for: timeout)
                return timedOut()
            } catch {
                return nil
            }
        }
        let first = await group.next() ?? nil
        group.cancelAll()
        return first
    }
    return first ?? cancelled()
}
