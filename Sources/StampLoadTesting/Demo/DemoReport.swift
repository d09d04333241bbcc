import Foundation
import StampCore

/// The figures of a demo run, and their text, which ends in
/// `writes=N rows=M duplicates=D order_violations=V rate=R p99_ms=P`.
public struct DemoReport: Sendable, CustomStringConvertible {
    /// Whether every check passed and no request failed.
    public let passed: Bool
    public let report: RunReport

    /// Decimals of the milliseconds in the demo's lines.
    static let decimals = 1

    init(
        configuration: DemoConfiguration,
        folder: URL,
        topology: String,
        writes: RequestRecorder.Tally,
        reads: RequestRecorder.Tally,
        users: UserLedger.Snapshot,
        verification: DemoVerifier.Result,
        drove: Duration,
        checked: Duration
    ) {
        let latencies = LatencySummary(writes.latencies, decimals: Self.decimals)
        let seconds = max(drove.secondsValue, 0.001)
        let acknowledged = writes.answered
        let failures = writes.reasons.merging(reads.reasons, uniquingKeysWith: +).sorted { $0.key < $1.key }.map { "\($0.value)× \($0.key)" }.joined(separator: "; ")
        let shards = verification.rowsPerShard.sorted { $0.key < $1.key }.map { "shard \($0.key): \($0.value)" }.joined(separator: ", ")
        passed = acknowledged > 0 && verification.rows == acknowledged && verification.duplicates == 0 && verification.orderViolations == 0
            && verification.lost == 0 && verification.unreadableUsers == 0 && verification.foreignRows == 0
            && writes.unanswered == 0 && reads.unanswered == 0
        let readShare = Int((configuration.readFraction * 100).rounded())

        var report = RunReport()
        report.line("folder", "\(folder.path)\(configuration.keepFolder ? " (kept)" : " (deleted)")")
        report.line("topology", topology)
        report.line("load", "\(configuration.rate) writes/s scheduled for \(String(format: "%.1f", configuration.duration.secondsValue)) s over \(configuration.users) users, \(readShare)% of requests reads; ran \(String(format: "%.1f", seconds)) s until the last answer")
        report.line("writes", "\(acknowledged) acknowledged (\(users.replayed) replayed), \(writes.failed) failed, \(writes.notStarted) not started, \(users.retries) retries")
        report.line("reads", "\(reads.answered) answered, \(reads.unanswered) failed, p99 \(LatencySummary(reads.latencies, decimals: Self.decimals).milliseconds(0.99)) ms")
        report.line("failures", failures.isEmpty ? "none" : failures)
        report.line("write latency (ms)", latencies.text)
        report.line("check", "\(verification.users) users read back in \(String(format: "%.1f", checked.secondsValue)) s, \(verification.unreadableUsers) unreadable\(verification.firstProblem.map { " (\($0))" } ?? "")")
        report.line("rows", "\(verification.rows)\(shards.isEmpty ? "" : " (\(shards))")\(verification.foreignRows > 0 ? ", \(verification.foreignRows) under another user" : "")")
        report.line("lost", "\(verification.lost) acknowledged writes not stored")
        report.line("duplicates", "\(verification.duplicates)")
        report.line("order violations", "\(verification.orderViolations) users whose rows are not in write order")
        report.line("result", passed ? "passed" : "FAILED")
        report.figure("writes", acknowledged)
        report.figure("rows", verification.rows)
        report.figure("duplicates", verification.duplicates)
        report.figure("order_violations", verification.orderViolations)
        report.figure("rate", Int((Double(acknowledged) / seconds).rounded()))
        report.figure("p99_ms", latencies.milliseconds(0.99))
        self.report = report
    }

    public var description: String { report.description }
}
