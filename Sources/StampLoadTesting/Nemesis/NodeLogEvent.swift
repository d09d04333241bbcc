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
