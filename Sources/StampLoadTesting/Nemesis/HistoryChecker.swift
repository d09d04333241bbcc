import Foundation
import StampCore

/// Checks what the clients of a nemesis run received against the invariants and the expectations
/// of each fault, independently of the nodes' own checks.
///
/// It reads every call of every client (``CallRecord``), the lease events of every node's log
/// (``NodeLogEvent``), the faults (``Fault``) and the nodes' metrics, and finds: duplicates; order
/// violations per node (a call that started after another call with an ID of the same node ID
/// ended must get a greater ID) and per client (the same, among one client's calls); IDs received
/// entirely outside every confirmed lease of their node ID (late IDs); failed calls and the longest
/// stretch without a successful call, per fault; and each node's time from a fault to refusing and
/// from the heal to serving. The times of clients and nodes are readings of one monotonic clock;
/// faults, timed by the wall clock, are placed on it through the clients' paired readings.
public struct HistoryChecker: Sendable {
    /// The calls of one client host's load run.
    public struct ClientHost: Sendable {
        public var name: String
        public var calls: [CallRecord]
        public init(name: String, calls: [CallRecord]) {
            self.name = name
            self.calls = calls
        }
    }

    /// The log events of one node host, over all of its process's restarts.
    public struct NodeHost: Sendable {
        public var name: String
        public var events: [NodeLogEvent]
        /// The text of its `/metrics` at the end of the run, if read.
        public var metrics: String?
        public init(name: String, events: [NodeLogEvent], metrics: String? = nil) {
            self.name = name
            self.events = events
            self.metrics = metrics
        }
    }

    public var clients: [ClientHost]
    public var nodes: [NodeHost]
    public var faults: [Fault]
    public var layout: IDLayout
    /// The nodes' lease duration, `--lease-ttl`.
    public var leaseTTL: Duration
    /// The nodes' `--lease-margin`.
    public var leaseMargin: Duration
    /// The nodes' `--max-lead`: how long a claim of a node ID with no stored reservation waits before its first ID.
    public var maxLead: Duration
    /// How late after its bound a node may still refuse or recover: the time a renewal takes and
    /// the scheduling of processes on a loaded machine.
    public var tolerance: Duration

    public init(clients: [ClientHost], nodes: [NodeHost], faults: [Fault], layout: IDLayout = .default, leaseTTL: Duration, leaseMargin: Duration, maxLead: Duration = .seconds(1), tolerance: Duration = .milliseconds(500)) {
        self.clients = clients
        self.nodes = nodes
        self.faults = faults
        self.layout = layout
        self.leaseTTL = leaseTTL
        self.leaseMargin = leaseMargin
        self.maxLead = maxLead
        self.tolerance = tolerance
    }

    /// How far apart two readings of the monotonic clock by different processes may be for the same moment.
    static let readingSlackMicroseconds: Int64 = 1000

    /// One successful call, as the order checks need it.
    struct Received {
        let id: Int64
        let started: Int64
        let ended: Int64
    }

    /// Runs every check.
    public func check() -> HistoryReport {
        var report = RunReport()
        var broken: [String] = []
        let calls = clients.flatMap(\.calls)
        let received = calls.compactMap { call in call.id.map { Received(id: $0, started: call.startedMicroseconds, ended: call.endedMicroseconds) } }
        let failed = calls.count - received.count

        let duplicates = IDLedger.duplicates(among: received.map(\.id))
        let byNode = Dictionary(grouping: received) { node(of: $0.id) }
        let nodeOrderViolations = byNode.values.map(Self.orderViolations).reduce(0, +)
        var clientOrderViolations = 0
        for host in clients {
            for (_, own) in Dictionary(grouping: host.calls, by: \.client) {
                clientOrderViolations += Self.orderViolations(own.compactMap { call in call.id.map { Received(id: $0, started: call.startedMicroseconds, ended: call.endedMicroseconds) } })
            }
        }
        let validity = leaseValidity()
        let lateIDs = received.count { !Self.covers(validity[node(of: $0.id)] ?? [], $0) }
        if duplicates > 0 { broken.append("\(duplicates) duplicate IDs") }
        if nodeOrderViolations > 0 { broken.append("\(nodeOrderViolations) per-node order violations") }
        if clientOrderViolations > 0 { broken.append("\(clientOrderViolations) per-client order violations") }
        if lateIDs > 0 { broken.append("\(lateIDs) IDs received outside every confirmed lease of their node ID") }

        let successes = received.map(\.ended).sorted()
        let longestGap = Self.longestGap(successes, from: successes.first ?? 0, to: successes.last ?? 0)
        report.line("calls", "\(calls.count) (\(received.count) IDs, \(failed) failed) from \(clients.count) client hosts")
        report.line("duplicates", "\(duplicates)")
        report.line("order violations", "\(nodeOrderViolations) per node, \(clientOrderViolations) per client")
        report.line("late IDs", "\(lateIDs) (received outside every confirmed lease of their node ID)")
        report.line("longest no-success", "\(Self.milliseconds(longestGap)) ms")

        let offset = wallOffset(calls)
        let sortedFaults = faults.sorted { $0.startWallMicroseconds < $1.startWallMicroseconds }
        let runEnd = calls.map(\.endedMicroseconds).max() ?? 0
        let firstFault = sortedFaults.first.map { $0.startWallMicroseconds - offset } ?? runEnd
        let failedBefore = calls.count { $0.id == nil && $0.startedMicroseconds < firstFault }
        report.line("before faults", "\(failedBefore) failed calls")
        if failedBefore > 0 { broken.append("\(failedBefore) failed calls before the first fault") }
        var failedPerKind: [Fault.Kind: Int] = [:]
        for (index, fault) in sortedFaults.enumerated() {
            let start = fault.startWallMicroseconds - offset
            let end = fault.endWallMicroseconds - offset
            let windowEnd = index + 1 < sortedFaults.count ? sortedFaults[index + 1].startWallMicroseconds - offset : runEnd
            let (line, problems, failures) = examine(fault, start: start, end: end, windowEnd: windowEnd, calls: calls, successes: successes)
            failedPerKind[fault.kind, default: 0] += failures
            report.line("fault \(index + 1)", line)
            broken += problems.map { "fault \(index + 1) (\(fault.kind.rawValue) \(fault.target)): \($0)" }
        }
        let metrics = nodes.compactMap(\.metrics).map(Self.metricTotals).reduce(into: [String: Double]()) { $0.merge($1, uniquingKeysWith: +) }
        if !metrics.isEmpty {
            report.line("node metrics", metrics.sorted { $0.key < $1.key }.map { "\($0.key)=\(Int($0.value))" }.joined(separator: " "))
        }
        report.line("expectations", broken.isEmpty ? "all held" : broken.joined(separator: "; "))
        report.figure("ids", received.count)
        report.figure("failed", failed)
        report.figure("duplicates", duplicates)
        report.figure("node_order_violations", nodeOrderViolations)
        report.figure("client_order_violations", clientOrderViolations)
        report.figure("late_ids", lateIDs)
        report.figure("faults", sortedFaults.count)
        for kind in Fault.Kind.allCases {
            if let failures = failedPerKind[kind] { report.figure("failed_\(kind.rawValue.replacingOccurrences(of: "-", with: "_"))", failures) }
        }
        report.figure("longest_no_success_ms", Self.milliseconds(longestGap))
        report.figure("broken", broken.count)
        return HistoryReport(report: report, broken: broken)
    }

    /// The figures and broken expectations of one fault, and its failed calls.
    func examine(_ fault: Fault, start: Int64, end: Int64, windowEnd: Int64, calls: [CallRecord], successes: [Int64]) -> (String, [String], Int) {
        var problems: [String] = []
        let failures = calls.count { $0.id == nil && $0.startedMicroseconds >= start && $0.startedMicroseconds < windowEnd }
        let gap = Self.longestGap(successes, from: start, to: windowEnd)
        var parts = ["\(fault.kind.rawValue) \(fault.target) for \(Self.milliseconds(end - start)) ms", "\(failures) failed calls", "longest no-success \(Self.milliseconds(gap)) ms"]
        // While some node can reach the store and the clients, the clients' retries and failover absorb
        // the fault. With the store down, or while etcd elects a leader, no node can renew.
        let everyNodeWaits = fault.kind == .storeStop || fault.kind == .leaderPartition
        if !everyNodeWaits, failures > 0 { problems.append("\(failures) failed calls while other nodes could serve") }
        let renewal = (leaseTTL / 3).wholeMicroseconds
        let slack = tolerance.wholeMicroseconds
        if fault.kind == .leaderPartition, gap > leaseTTL.wholeMicroseconds + slack {
            problems.append("no successful call for \(Self.milliseconds(gap)) ms, beyond the lease TTL (\(Self.milliseconds(leaseTTL.wholeMicroseconds)) ms)")
        }
        let targets = fault.node.map { [$0] } ?? nodes.map(\.name)
        for name in targets {
            guard let host = nodes.first(where: { $0.name == name }) else { continue }
            let stopped = host.events.first { event in
                if case .stopped = event.kind { event.microseconds >= start && event.microseconds < windowEnd } else { false }
            }?.microseconds
            switch fault.kind {
            case .memberKill:
                // Two members of three are a majority: etcd answers as before, and the node fails over at once.
                if let stopped {
                    parts.append("\(name) stopped issuing \(Self.milliseconds(stopped - start)) ms after the fault")
                    problems.append("\(name) stopped issuing while only one member was down")
                } else {
                    parts.append("\(name) kept issuing")
                }
            case .leaderPartition:
                // The other two members elect a leader among themselves, which keeps every etcd lease:
                // a node may pause while they do, and issues again before the old leader returns.
                guard let stopped, stopped < end else {
                    parts.append("\(name) kept issuing")
                    continue
                }
                if let served = firstIssuing(of: host, after: stopped), served < end {
                    parts.append("\(name) refused \(Self.milliseconds(stopped - start)) ms after the fault, served again \(Self.milliseconds(served - start)) ms after it, before the heal")
                } else {
                    parts.append("\(name) refused \(Self.milliseconds(stopped - start)) ms after the fault, not served again before the heal")
                    problems.append("\(name) did not serve again while the old leader was cut off")
                }
            case .storePartition, .storeStop, .majorityPartition:
                guard let (lastSent, refused) = validityEnd(of: host, at: start) else {
                    parts.append("\(name) was not serving")
                    continue
                }
                parts.append("\(name) refused \(Self.milliseconds(refused - start)) ms after the fault, \(Self.milliseconds(refused - lastSent)) ms after its last renewal")
                if refused - lastSent > (leaseTTL - leaseMargin).wholeMicroseconds + Self.readingSlackMicroseconds {
                    problems.append("\(name) issued for \(Self.milliseconds(refused - lastSent)) ms after its last renewal, beyond ttl - margin")
                }
                if let served = firstIssuing(of: host, after: refused) {
                    // A node ID claimed with no stored reservation issues only after the maximum lead, by design.
                    let fresh = host.events.contains { $0.kind == .claimedWithoutReservation && $0.microseconds >= refused && $0.microseconds <= served }
                    let bound = renewal + (fresh ? maxLead.wholeMicroseconds : 0)
                    let recovery = Self.sinceHeal(served, end)
                    parts.append("served again \(Self.milliseconds(recovery)) ms after the heal\(fresh ? " (a node ID with no stored reservation)" : "")")
                    if fault.kind == .storeStop, recovery > bound + slack {
                        problems.append("\(name) served again \(Self.milliseconds(recovery)) ms after the store's return, beyond one renewal\(fresh ? " and the maximum lead" : "") (\(Self.milliseconds(bound)) ms)")
                    }
                } else {
                    parts.append("never served again")
                    problems.append("\(name) never served again")
                }
            case .clockBack1s, .clockBack1h, .clockForward1h, .clockSkew:
                guard let refused = host.events.first(where: { $0.kind == .stopped(reason: .clockSkewed) && $0.microseconds >= start && $0.microseconds < windowEnd })?.microseconds else {
                    parts.append("\(name) never refused")
                    problems.append("\(name) did not refuse for its clock")
                    continue
                }
                parts.append("\(name) refused \(Self.milliseconds(refused - start)) ms after the fault")
                if refused - start > renewal + slack {
                    problems.append("\(name) refused \(Self.milliseconds(refused - start)) ms after its clock moved, beyond one renewal (\(Self.milliseconds(renewal)) ms)")
                }
                if let served = firstIssuing(of: host, after: refused) {
                    parts.append("served again \(Self.milliseconds(Self.sinceHeal(served, end))) ms after the heal")
                } else {
                    parts.append("never served again")
                }
            case .pause, .killRestart:
                if let served = firstIssuing(of: host, after: end) {
                    parts.append("\(name) served again \(Self.milliseconds(served - end)) ms after the heal")
                } else {
                    parts.append("\(name) never served again")
                }
            case .clientPartition:
                break
            }
        }
        return (parts.joined(separator: "; "), problems, failures)
    }

    /// The node ID of an ID.
    func node(of id: Int64) -> Int {
        StampID(rawValue: id)?.fields(in: layout).node ?? -1
    }

    /// For each node ID, the merged stretches of monotonic time its leases were confirmed for, over every host.
    func leaseValidity() -> [Int: [(Int64, Int64)]] {
        var stretches: [Int: [(Int64, Int64)]] = [:]
        for host in nodes {
            for event in host.events {
                if case .confirmed(let node, let sent, let validUntil) = event.kind { stretches[node, default: []].append((sent, validUntil)) }
            }
        }
        return stretches.mapValues(Self.merge)
    }

    /// The end of the host's confirmed validity that covers `moment`, with the sending time of the
    /// confirmation that set it; `nil` when the host held no lease then.
    func validityEnd(of host: NodeHost, at moment: Int64) -> (lastSent: Int64, end: Int64)? {
        var confirmations: [(Int64, Int64)] = []
        for event in host.events {
            if case .confirmed(_, let sent, let validUntil) = event.kind { confirmations.append((sent, validUntil)) }
        }
        confirmations.sort { $0.0 < $1.0 }
        guard let covering = Self.merge(confirmations).first(where: { $0.0 <= moment && moment <= $0.1 }) else { return nil }
        guard let last = confirmations.last(where: { $0.1 == covering.1 }) else { return nil }
        return (last.0, covering.1)
    }

    /// When the host logged `issuing IDs` first at or after `moment`.
    func firstIssuing(of host: NodeHost, after moment: Int64) -> Int64? {
        host.events.first { event in
            if case .issuing = event.kind { event.microseconds >= moment } else { false }
        }?.microseconds
    }

    /// How long after the heal at `end` a node that refused served again at `served`: 0 when it
    /// logged serving before the heal's recorded end, which the nemesis reads just after healing.
    static func sinceHeal(_ served: Int64, _ end: Int64) -> Int64 {
        max(0, served - end)
    }

    /// Wall-clock microseconds minus monotonic microseconds, from the clients' paired readings (the median).
    func wallOffset(_ calls: [CallRecord]) -> Int64 {
        let offsets = calls.map { $0.endedWallMilliseconds * 1000 - $0.endedMicroseconds }.sorted()
        return offsets.isEmpty ? 0 : offsets[offsets.count / 2]
    }

    /// How many calls got an ID no greater than that of a call that ended before they started.
    static func orderViolations(_ calls: [Received]) -> Int {
        let byStart = calls.sorted { $0.started < $1.started }
        let byEnd = calls.sorted { $0.ended < $1.ended }
        var ended = 0
        var greatest = Int64.min
        var violations = 0
        for call in byStart {
            while ended < byEnd.count, byEnd[ended].ended < call.started {
                greatest = max(greatest, byEnd[ended].id)
                ended += 1
            }
            if call.id <= greatest { violations += 1 }
        }
        return violations
    }

    /// Whether a call's span meets one of the merged, sorted validity stretches.
    static func covers(_ stretches: [(Int64, Int64)], _ call: Received) -> Bool {
        var low = 0
        var high = stretches.count
        // The first stretch that starts after the call ended (with the slack of the readings).
        while low < high {
            let middle = (low + high) / 2
            if stretches[middle].0 <= call.ended + readingSlackMicroseconds { low = middle + 1 } else { high = middle }
        }
        return low > 0 && stretches[low - 1].1 >= call.started - readingSlackMicroseconds
    }

    /// Overlapping stretches joined, sorted by start.
    static func merge(_ stretches: [(Int64, Int64)]) -> [(Int64, Int64)] {
        var merged: [(Int64, Int64)] = []
        for stretch in stretches.sorted(by: { $0.0 < $1.0 }) {
            if let last = merged.last, stretch.0 <= last.1 {
                merged[merged.count - 1].1 = max(last.1, stretch.1)
            } else {
                merged.append(stretch)
            }
        }
        return merged
    }

    /// The longest time between consecutive successes (sorted), or from `start` to the first, that
    /// ends within `start..<end`; from `start` to `end` when none does.
    static func longestGap(_ successes: [Int64], from start: Int64, to end: Int64) -> Int64 {
        var previous = start
        var longest: Int64 = 0
        var low = 0
        var high = successes.count
        while low < high {
            let middle = (low + high) / 2
            if successes[middle] < start { low = middle + 1 } else { high = middle }
        }
        if low > 0 { previous = successes[low - 1] }
        var index = low
        while index < successes.count, successes[index] < end {
            longest = max(longest, successes[index] - previous)
            previous = successes[index]
            index += 1
        }
        return max(longest, index < successes.count ? 0 : end - previous)
    }

    /// Sums of the counters the report shows, from a node's Prometheus text.
    static func metricTotals(_ text: String) -> [String: Double] {
        var totals: [String: Double] = [:]
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            let fields = line.split(separator: " ")
            guard fields.count >= 2, let value = Double(fields[fields.count - 1]) else { continue }
            let series = String(fields[0])
            let name = series.prefix { $0 != "{" }
            switch name {
            case "stamp_ids_issued_total", "stamp_clock_backward_steps_total":
                totals[String(name), default: 0] += value
            case "stamp_refusals_total":
                let reason = series.split(separator: "\"").dropFirst().first.map(String.init) ?? "unknown"
                totals["stamp_refusals_total{\(reason)}", default: 0] += value
            default:
                continue
            }
        }
        return totals
    }

    static func milliseconds(_ microseconds: Int64) -> Int64 { microseconds / 1000 }
}

/// What ``HistoryChecker`` found: the report's text, and each expectation that did not hold.
public struct HistoryReport: Sendable, CustomStringConvertible {
    public let report: RunReport
    /// The broken expectations, safe to show; empty when the run passed.
    public let broken: [String]

    public var passed: Bool { broken.isEmpty }

    public var description: String { report.description }
}
