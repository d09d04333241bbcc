import Logging
import Synchronization

/// A log handler that keeps every entry in memory, so tests can assert on what was logged
/// without touching the global logging system.
public struct RecordingLogHandler: LogHandler {
    /// Where the entries of a handler and its copies go.
    public final class Records: Sendable {
        private struct State {
            var entries: [(line: String, message: String)] = []
            var ended = false
            var waiters: [(message: String, continuation: CheckedContinuation<Bool, Never>)] = []
        }

        private let state = Mutex(State())

        public init() {}

        /// Every entry so far: level, label, message and metadata, one line each.
        public var entries: [String] { state.withLock { $0.entries.map(\.line) } }

        /// The message of every entry so far.
        public var messages: [String] { state.withLock { $0.entries.map(\.message) } }

        /// A logger whose entries, at every level, are kept here.
        public func logger(label: String = "test") -> Logger {
            var logger = Logger(label: label) { label in RecordingLogHandler(label: label, records: self) }
            logger.logLevel = .trace
            return logger
        }

        /// Waits until an entry with exactly this `message` is logged, instead of sleeping;
        /// `false` when ``finish()`` comes first.
        public func waitFor(_ message: String) async -> Bool {
            await withCheckedContinuation { continuation in
                let answer: Bool? = state.withLock { state in
                    if state.entries.contains(where: { $0.message == message }) { return true }
                    if state.ended { return false }
                    state.waiters.append((message, continuation))
                    return nil
                }
                if let answer { continuation.resume(returning: answer) }
            }
        }

        /// Ends every wait still going: what logs here has stopped.
        public func finish() {
            let waiting = state.withLock { state in
                state.ended = true
                defer { state.waiters = [] }
                return state.waiters
            }
            waiting.forEach { $0.continuation.resume(returning: false) }
        }

        func append(_ line: String, message: String) {
            let ready = state.withLock { state in
                state.entries.append((line, message))
                let ready = state.waiters.filter { $0.message == message }
                state.waiters.removeAll { $0.message == message }
                return ready
            }
            ready.forEach { $0.continuation.resume(returning: true) }
        }
    }

    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level = .trace
    private let label: String
    private let records: Records

    public init(label: String, records: Records) {
        self.label = label
        self.records = records
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        let merged = metadata.merging(event.metadata ?? [:]) { $1 }
        let rendered = merged.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
        let error = event.error.map { " error=\($0)" } ?? ""
        records.append("\(event.level) \(label) \(event.message) \(rendered)\(error)", message: event.message.description)
    }
}
