import Foundation

/// One fault of a nemesis's schedule: its kind, what it hit, and when it started and was healed.
///
/// In a fault file each fault is one line, `KIND TARGET START_US END_US`, its times in
/// microseconds of the wall clock of the machine (the nemesis's, which it does not shift); the
/// target is a node's host name, `CLIENT>NODE` for a partition between a client host and a node,
/// `store`, an etcd member's host name, or `NODE+MEMBER` for a node cut off together with one
/// member.
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
        /// One etcd member, a follower, is killed (SIGKILL), then restarted: the other two are a majority.
        case memberKill = "member-kill"
        /// The etcd leader is cut off from the other members and from the nodes, until they elect another.
        case leaderPartition = "leader-partition"
        /// The node and one etcd member, a follower, are cut off from the other two members (a
        /// majority): the node reaches only a member that cannot answer.
        case majorityPartition = "majority-partition"
    }

    /// The node host the fault is aimed at, if it is aimed at one: the target, its part after `>`
    /// for a client partition, its part before `+` for a majority partition; `nil` for the store or a member.
    public var node: String? {
        switch kind {
        case .storeStop, .memberKill, .leaderPartition: nil
        case .clientPartition: target.split(separator: ">").last.map(String.init)
        case .majorityPartition: target.split(separator: "+").first.map(String.init)
        case .storePartition, .clockBack1s, .clockBack1h, .clockForward1h, .clockSkew, .pause, .killRestart: target
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
