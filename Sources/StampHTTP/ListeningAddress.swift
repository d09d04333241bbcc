import Synchronization

/// Where an HTTP server listens, known once it has bound its port (port 0 binds a free one).
///
/// The server calls ``bind(_:)`` when it listens; anything that needs the address (a generator
/// node advertising itself, a test) awaits ``value()``.
public final class ListeningAddress: Sendable {
    /// A host and the port bound on it.
    public struct Bound: Sendable, Hashable {
        public let host: String
        public let port: Int

        public init(host: String, port: Int) {
            self.host = host
            self.port = port
        }

        /// The server's base URL, `http://host:port`.
        public var url: String { "http://\(host):\(port)" }
    }

    private struct State {
        var bound: Bound?
        var waiters: [Int: CheckedContinuation<Bound?, Never>] = [:]
        var nextWaiter = 0
    }

    private let state = Mutex(State())

    public init() {}

    /// Records where the server listens and wakes every waiter; only the first call counts.
    public func bind(_ bound: Bound) {
        let waiters = state.withLock { state -> [CheckedContinuation<Bound?, Never>] in
            guard state.bound == nil else { return [] }
            state.bound = bound
            defer { state.waiters = [:] }
            return Array(state.waiters.values)
        }
        waiters.forEach { $0.resume(returning: bound) }
    }

    /// The address once the server listens, or `nil` when the waiting task is cancelled first.
    public func value() async -> Bound? {
        let waiter = state.withLock { state in
            defer { state.nextWaiter += 1 }
            return state.nextWaiter
        }
        return await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let answer: Bound?? = state.withLock { state in
                    if let bound = state.bound { return .some(bound) }
                    if Task.isCancelled { return .some(nil) }
                    state.waiters[waiter] = continuation
                    return nil
                }
                if let answer { continuation.resume(returning: answer) }
            }
        } onCancel: {
            state.withLock { $0.waiters.removeValue(forKey: waiter) }?.resume(returning: nil)
        }
    }
}
