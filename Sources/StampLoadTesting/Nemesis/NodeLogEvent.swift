import Foundation

/// What a generator node's log says about its lease, as the history checker reads it.
///
/// The node writes the readings of the machine's monotonic clock (`stamp.sent_at_us`,
/// `stamp.valid_until_us`, `stamp.monotonic_us`) into the lines that matter here; other lines are
/// not events.
public struct NodeLogEvent: Sendable, Equatable {
    public enum Kind: Sendable, Equatable {
        /// A claim or renewal confirmed the lease on `node`: sent at `sentMicroseconds`, usable until `validUntilMicroseconds`.
        case confirmed(node: Int, sentMicroseconds: Int64, validUntilMicroseconds: Int64)
        /// The node became ready to issue IDs (`issuing IDs`).
        case issuing(node: Int)
        /// The node claimed a node ID with no stored reservation, so its first ID waits for the maximum lead.
        case claimedWithoutReservation
        /// The node stopped issuing: lease not confirmed in time, lost to another process, or clock skewed.
        case stopped(reason: StopReason)
    }

    /// Why a node stopped issuing.
    public enum StopReason: String, Sendable, Equatable {
        case leaseExpired = "lease-expired"
        case leaseLost = "lease-lost"
        case clockSkewed = "clock-skewed"
    }

    public var kind: Kind
    /// When it happened, in microseconds of the monotonic clock (for a confirmation, when it was sent).
    public var microseconds: Int64

    public init(kind: Kind, microseconds: Int64) {
        self.kind = kind
        self.microseconds = microseconds
    }

    /// The event of a log line of `stamp serve`, or `nil` when the line is none.
    public init?(line: some StringProtocol) {
        let line = String(line)
        let metadata = Self.metadata(of: line)
        func number(_ key: String) -> Int64? { metadata[key].flatMap { Int64($0) } }
        if line.hasSuffix("] claimed node ID") || line.hasSuffix("] renewed lease") {
            guard let node = number("stamp.node_id"), let sent = number("stamp.sent_at_us"), let validUntil = number("stamp.valid_until_us") else { return nil }
            self.init(kind: .confirmed(node: Int(node), sentMicroseconds: sent, validUntilMicroseconds: validUntil), microseconds: sent)
            return
        }
        guard let time = number("stamp.monotonic_us") else { return nil }
        if line.hasSuffix("] issuing IDs"), let node = number("stamp.node_id") {
            self.init(kind: .issuing(node: Int(node)), microseconds: time)
        } else if line.contains("] the node ID has no stored reservation;") {
            self.init(kind: .claimedWithoutReservation, microseconds: time)
        } else if line.hasSuffix("] lease not confirmed within ttl - margin; stopped issuing") {
            self.init(kind: .stopped(reason: .leaseExpired), microseconds: time)
        } else if line.hasSuffix("] another process holds the node ID; stopped issuing") {
            self.init(kind: .stopped(reason: .leaseLost), microseconds: time)
        } else if line.hasSuffix("beyond the bound; stopped issuing until it is back") {
            self.init(kind: .stopped(reason: .clockSkewed), microseconds: time)
        } else {
            return nil
        }
    }

    /// The `stamp.*=VALUE` pairs of a line (values end at a space).
    static func metadata(of line: String) -> [String: String] {
        var pairs: [String: String] = [:]
        for word in line.split(separator: " ") where word.hasPrefix("stamp.") {
            guard let equals = word.firstIndex(of: "=") else { continue }
            pairs[String(word[..<equals])] = String(word[word.index(after: equals)...])
        }
        return pairs
    }

    /// The events of the node log at `path`, in the order logged.
    public static func read(from path: String) throws -> [NodeLogEvent] {
        do {
            return try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n").compactMap { NodeLogEvent(line: $0) }
        } catch {
            throw LoadTestingError(.badHistory, "could not read the node log \(path)", cause: error)
        }
    }
}

/// One fault of a nemesis's schedule: its kind, what it hit, and when it started and was healed.
///
/// In a fault file each fault is one line, `KIND TARGET START_US END_US`, its times in
/// microseconds of the wall clock of the machine (the nemesis's, which it does not shift); the
/// target is a node's host name, `CLIENT>NODE` for a partition between a client host and a node,
/// or `store`.
public struct Fault: Sendable, Equatable {
    /// The kinds of fault, and what the checker expects of each.
    public enum Kind: String, Sendable, CaseIterable {
        /// The node cannot reach the coordination store.
        case storePartition = "store-partition"
        /// One client host cannot reach one node.
        case clientPartition = "client-partition"
        /// The coordination store is stopped.
        case storeStop = "store-stop"
        /// The node's wall clock is stepped back 1 s.
        case clockBack1s = "clock-back-1s"
        /// The node's wall clock is stepped back 1 h.
        case clockBack1h = "clock-back-1h"
        /// The node's wall clock is stepped forward 1 h.
        case clockForward1h = "clock-forward-1h"
        /// The node's wall clock runs 2 s ahead.
        case clockSkew = "clock-skew"
        /// The node is paused (SIGSTOP) past its lease, while another process claims its node ID.
        case pause
        /// The node is killed (SIGKILL) and restarted, several times.
        case killRestart = "kill-restart"

        /// Whether the fault moves the node's wall clock.
        public var isClock: Bool {
            switch self {
            case .clockBack1s, .clockBack1h, .clockForward1h, .clockSkew: true
            default: false
            }
        }
    }

    public var kind: Kind
    public var target: String
    public var startWallMicroseconds: Int64
    public var endWallMicroseconds: Int64

    public init(kind: Kind, target: String, startWallMicroseconds: Int64, endWallMicroseconds: Int64) {
        self.kind = kind
        self.target = target
        self.startWallMicroseconds = startWallMicroseconds
        self.endWallMicroseconds = endWallMicroseconds
    }

    /// Reads a line of a fault file; `nil` when it is not one.
    public init?(line: some StringProtocol) {
        let fields = line.split(separator: " ")
        guard fields.count == 4, let kind = Kind(rawValue: String(fields[0])), let start = Int64(fields[2]), let end = Int64(fields[3]), start <= end else { return nil }
        self.init(kind: kind, target: String(fields[1]), startWallMicroseconds: start, endWallMicroseconds: end)
    }

    /// The faults of the fault file at `path`, in the order listed.
    public static func read(from path: String) throws -> [Fault] {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw LoadTestingError(.badHistory, "could not read the fault file \(path)", cause: error)
        }
        return try text.split(separator: "\n").enumerated().map { index, line in
            guard let fault = Fault(line: line) else { throw LoadTestingError(.badHistory, "\(path), line \(index + 1): not a fault") }
            return fault
        }
    }
}
