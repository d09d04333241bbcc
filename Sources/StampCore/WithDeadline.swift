import Synchronization

/// Runs `body` in a task of its own and returns its answer, or throws `timedOut()` once `timeout`
/// has passed on `clock` without one. A body that ignores cancellation (a database call that
/// hangs) cannot hold the caller past its deadline: it is cancelled and left to end on its own.
public func withDeadline<C: Clock<Duration>, T: Sendable, E: Error>(
    _ timeout: Duration,
    on clock: C,
    timedOut: @escaping @Sendable () -> E,
    _ body: @escaping @Sendable () async throws(E) -> T
) async throws(E) -> T {
    let race = DeadlineRace<T, E>()
    return try await withCheckedContinuation { (continuation: CheckedContinuation<Result<T, E>, Never>) in
        race.start(continuation)
        let timer = Task {
            guard (try? await clock.sleep(for: timeout)) != nil else { return }
            race.finish(.failure(timedOut()))
        }
        let work = Task {
            let result: Result<T, E>
            do throws(E) {
                result = .success(try await body())
            } catch {
                result = .failure(error)
            }
            timer.cancel()
            race.finish(result)
        }
        race.onTimeout { work.cancel() }
    }.get()
}

/// The answer of whichever of a body and its deadline ends first.
private final class DeadlineRace<T: Sendable, E: Error>: @unchecked Sendable {
    // Unchecked: `E` is not required to be Sendable, but an error crosses from the body's task
    // to the caller only once, through the continuation, as a thrown error does.
    private let state = Mutex<(continuation: CheckedContinuation<Result<T, E>, Never>?, cancelWork: (@Sendable () -> Void)?, finished: Bool, failed: Bool)>((nil, nil, false, false))

    func start(_ continuation: CheckedContinuation<Result<T, E>, Never>) {
        state.withLock { $0.continuation = continuation }
    }

    /// Registers how to cancel the body. The timer may have fired before this is called: then
    /// the body is cancelled at once.
    func onTimeout(_ cancelWork: @escaping @Sendable () -> Void) {
        let failedAlready = state.withLock { state -> Bool in
            if !state.finished { state.cancelWork = cancelWork }
            return state.failed
        }
        if failedAlready { cancelWork() }
    }

    func finish(_ result: Result<T, E>) {
        let (continuation, cancelWork) = state.withLock { state -> (CheckedContinuation<Result<T, E>, Never>?, (@Sendable () -> Void)?) in
            guard !state.finished else { return (nil, nil) }
            state.finished = true
            if case .failure = result { state.failed = true }
            defer { state.continuation = nil }
            return (state.continuation, state.cancelWork)
        }
        guard let continuation else { return }
        if case .failure = result { cancelWork?() }
        continuation.resume(returning: result)
    }
}
