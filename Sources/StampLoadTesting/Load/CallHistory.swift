import Foundation
import StampCore
import Synchronization

/// One call of a load client as a checker reads it: what it returned, and when it started and ended.
///
/// Times are readings of the machine's monotonic clock (``MonotonicTime``), which the nodes' logs
/// use too, and the client's wall clock when the call ended, which places the record among events
/// timed by the wall clock (a nemesis's faults). In a history file each call is one line:
/// `CLIENT ok ID START_US END_US WALL_MS` or `CLIENT failed CODE START_US END_US WALL_MS`.
public struct CallRecord: Sendable, Equatable {
    /// What the call returned.
    public enum Outcome: Sendable, Equatable {
        case id(Int64)
        /// The call failed with this ``StampClientError`` code.
        case failed(String)
    }

    /// The client of its run that made the call.
    public var client: Int
    public var outcome: Outcome
    public var startedMicroseconds: Int64
    public var endedMicroseconds: Int64
    public var endedWallMilliseconds: Int64

    public init(client: Int, outcome: Outcome, startedMicroseconds: Int64, endedMicroseconds: Int64, endedWallMilliseconds: Int64) {
        self.client = client
        self.outcome = outcome
        self.startedMicroseconds = startedMicroseconds
        self.endedMicroseconds = endedMicroseconds
        self.endedWallMilliseconds = endedWallMilliseconds
    }

    /// The ID received, if the call succeeded.
    ///
    /// Not inlined: inlined into ``HistoryChecker/check()``, its switch on a borrowed record makes
    /// Swift 6.3's optimizer fail (an ownership error in CopyPropagation) in release builds.
    public var id: Int64? {
        @inline(never) get {
            if case .id(let id) = outcome { id } else { nil }
        }
    }

    /// The record's line in a history file.
    public var line: String {
        let outcome = switch outcome {
        case .id(let id): "ok \(id)"
        case .failed(let code): "failed \(code)"
        }
        return "\(client) \(outcome) \(startedMicroseconds) \(endedMicroseconds) \(endedWallMilliseconds)"
    }

    /// Reads a line of a history file; `nil` when it is not one.
    public init?(line: some StringProtocol) {
        let fields = line.split(separator: " ")
        guard fields.count == 6, let client = Int(fields[0]), let started = Int64(fields[3]), let ended = Int64(fields[4]), let wall = Int64(fields[5]) else { return nil }
        switch fields[1] {
        case "ok":
            guard let id = Int64(fields[2]) else { return nil }
            outcome = .id(id)
        case "failed":
            outcome = .failed(String(fields[2]))
        default:
            return nil
        }
        self.client = client
        startedMicroseconds = started
        endedMicroseconds = ended
        endedWallMilliseconds = wall
    }
}

/// The calls of a load run, kept to be written to a history file at its end.
public final class CallHistory: Sendable {
    private let records = Mutex<[CallRecord]>([])

    public init() {}

    /// The monotonic reading to pass as a call's start.
    public static func now() -> Int64 { MonotonicTime.microseconds() }

    /// Records a call of `client` that started at `startedMicroseconds` and ends now.
    public func record(client: Int, outcome: CallRecord.Outcome, startedMicroseconds: Int64) {
        let ended = MonotonicTime.microseconds()
        let wall = SystemWallClock().unixMilliseconds()
        let record = CallRecord(client: client, outcome: outcome, startedMicroseconds: startedMicroseconds, endedMicroseconds: ended, endedWallMilliseconds: wall)
        records.withLock { $0.append(record) }
    }

    /// The calls recorded so far, in the order they ended.
    public var calls: [CallRecord] { records.withLock { $0 } }

    /// Writes every call recorded, one line each, to the file at `path`.
    public func write(to path: String) throws {
        let text = calls.map { $0.line + "\n" }.joined()
        try Data(text.utf8).write(to: URL(fileURLWithPath: path), options: .atomic)
    }

    /// Reads the calls of the history file at `path`.
    public static func read(from path: String) throws -> [CallRecord] {
        let text = try String(contentsOfFile: path, encoding: .utf8)
        var records: [CallRecord] = []
        for (index, line) in text.split(separator: "\n").enumerated() {
            guard let record = CallRecord(line: line) else {
                throw LoadTestingError(.badHistory, "\(path), line \(index + 1): not a call record")
            }
            records.append(record)
        }
        return records
    }
}
