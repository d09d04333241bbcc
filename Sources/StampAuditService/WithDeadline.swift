import StampAudit
import Synchronization

/// Runs `body` in a task of its own and returns its answer, or fails with `unavailable` once
/// `timeout` has passed on `clock` without one. A body that ignores cancellation (a database call
/// that hangs) cannot hold the caller past its deadline: it is cancelled and left to end on its own.
func withDeadline<C: Clock<Duration>, T: Sendable>(
    _ timeout: Duration,
    on clock: C,
    _ body: @escaping @Sendable () async throws(AuditStoreError) -> T
) async throws(AuditStoreError) -> T {
    let race = DeadlineRace<T>()
    return try await withCheckedContinuation { (continuation: CheckedContinuation<Result<T, AuditStoreError>, Never>) in
        race.start(continuation)
        let timer = Task {
            guard (try? await clock.sleep(for: timeout)) != nil else { return }
            race.finish(.failure(AuditStoreError(.unavailable, "the database did not answer within \(timeout)")))
        }
        let work = Task {
            let result: Result<T, AuditStoreError>
            do throws(AuditStoreError) {
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
private final class DeadlineRace<T: Sendable>: Sendable {
    private let state = Mutex<(continuation: CheckedContinuation<Result<T, AuditStoreError>, Never>?, cancelWork: (@Sendable () -> Void)?, finished: Bool)>((nil, nil, false))

    func start(_ continuation: CheckedContinuation<Result<T, AuditStoreError>, Never>) {
        state.withLock { $0.continuation = continuation }
    }

    func onTimeout(_ cancelWork: @escaping @Sendable () -> Void) {
        state.withLock { $0.cancelWork = cancelWork }
    }

    func finish(_ result: Result<T, AuditStoreError>) {
        let (continuation, cancelWork) = state.withLock { state -> (CheckedContinuation<Result<T, AuditStoreError>, Never>?, (@Sendable () -> Void)?) in
            guard !state.finished else { return (nil, nil) }
            state.finished = true
            defer { state.continuation = nil }
            return (state.continuation, state.cancelWork)
        }
        guard let continuation else { return }
        if case .failure = result { cancelWork?() }
        continuation.resume(returning: result)
    }
}
