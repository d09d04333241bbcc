import Logging
import Synchronization

/// Keeps the messages of a logger and lets a test wait for one, instead of sleeping.
public final class LogWaiter: Sendable {
    private struct State {
        var messages: [String] = []
        var ended = false
        var waiters: [(needle: String, continuation: CheckedContinuation<Bool, Never>)] = []
    }

    private let state = Mutex(State())

    public init() {}

    /// A logger at every level whose messages arrive here.
    public var logger: Logger {
        var logger = Logger(label: "test") { _ in Handler(waiter: self) }
        logger.logLevel = .trace
        return logger
    }

    /// Every message so far.
    public var messages: [String] { state.withLock { $0.messages } }

    /// Waits until a message equal to `needle` is logged; `false` when ``finish()`` comes first.
    public func waitFor(_ needle: String) async -> Bool {
        await withCheckedContinuation { continuation in
            let answer: Bool? = state.withLock { state in
                if state.messages.contains(needle) { return true }
                if state.ended { return false }
                state.waiters.append((needle, continuation))
                return nil
            }
            if let answer { continuation.resume(returning: answer) }
        }
    }

    /// Ends every wait still going: what logs has stopped.
    public func finish() {
        let waiting = state.withLock { state in
            state.ended = true
            defer { state.waiters = [] }
            return state.waiters
        }
        waiting.forEach { $0.continuation.resume(returning: false) }
    }

    fileprivate func record(_ message: String) {
        let ready = state.withLock { state in
            state.messages.append(message)
            let ready = state.waiters.filter { $0.needle == message }
            state.waiters.removeAll { $0.needle == message }
            return ready
        }
        ready.forEach { $0.continuation.resume(returning: true) }
    }

    private struct Handler: LogHandler {
        let waiter: LogWaiter
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .trace

        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }

        func log(event: LogEvent) {
            waiter.record(event.message.description)
        }
    }
}
