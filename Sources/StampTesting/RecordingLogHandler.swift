import Logging
import Synchronization

/// A log handler that keeps every entry in memory, so tests can assert on what was logged
/// without touching the global logging system.
public struct RecordingLogHandler: LogHandler {
    /// Where the entries of a handler and its copies go.
    public final class Records: Sendable {
        private let lines = Mutex<[String]>([])

        public init() {}

        /// Every entry so far: level, label, message and metadata, one line each.
        public var entries: [String] { lines.withLock { $0 } }

        /// A logger whose entries, at every level, are kept here.
        public func logger(label: String = "test") -> Logger {
            var logger = Logger(label: label) { label in RecordingLogHandler(label: label, records: self) }
            logger.logLevel = .trace
            return logger
        }

        func append(_ line: String) {
            lines.withLock { $0.append(line) }
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
        records.append("\(event.level) \(label) \(event.message) \(rendered)\(error)")
    }
}
