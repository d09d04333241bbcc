import Foundation
import StampCore

/// The figures of a demo run, and their text, which ends in
/// `writes=N rows=M duplicates=D order_violations=V rate=R p99_ms=P` and then the ID side's and the
/// CPU's figures: `id_requests_per_s=Q ids_per_s=I ids=K driver_cores=C audit_driver_cores=A balancer_cores=B`.
public struct DemoReport: Sendable, CustomStringConvertible {
    /// What the single-ID requests straight at the generator nodes did.
    struct DirectIDs: Sendable {
        var calls = RequestRecorder.Tally()
        var ledger = IDLedger.Totals()
        /// Attempts the client made again after a failed one.
        var retries = 0
    }

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
        chains: (verified: Bool, output: String),
        directIDs: DirectIDs,
        served: GeneratorCounts,
        auditRequests: [Int],
        cpu: CPUShares,
        drove: Duration,
        checked: Duration
    ) {
        let latencies = LatencySummary(writes.latencies, decimals: Self.decimals)
        let seconds = max(drove.secondsValue, 0.001)
        let acknowledged = writes.answered
        let failures = writes.reasons.merging(reads.reasons, uniquingKeysWith: +).merging(directIDs.calls.reasons.map { ("ID request: \($0.key)", $0.value) }, uniquingKeysWith: +).sorted { $0.key < $1.key }.map { "\($0.value)× \($0.key)" }.joined(separator: "; ")
        let shards = verification.rowsPerShard.sorted { $0.key < $1.key }.map { "shard \($0.key): \($0.value)" }.joined(separator: ", ")
        let ids = verification.ids.count + directIDs.ledger.ids.count
        let duplicates = IDLedger.duplicates(among: verification.ids + directIDs.ledger.ids)
        let orderViolations = verification.orderViolations + directIDs.ledger.orderViolations
        passed = acknowledged > 0 && verification.rows == acknowledged && duplicates == 0 && orderViolations == 0
            && verification.lost == 0 && verification.unreadableUsers == 0 && verification.foreignRows == 0
            && writes.unanswered == 0 && reads.unanswered == 0 && directIDs.calls.unanswered == 0 && chains.verified
        let readShare = Int((configuration.readFraction * 100).rounded())

        var report = RunReport()
        report.line("folder", "\(folder.path)\(configuration.keepFolder ? " (kept)" : " (deleted)")")
        report.line("topology", topology)
        report.line("load", "\(configuration.rate) writes/s scheduled for \(String(format: "%.1f", configuration.duration.secondsValue)) s over \(configuration.users) users, \(readShare)% of requests reads; ran \(String(format: "%.1f", seconds)) s until the last answer")
        report.line("writes", "\(acknowledged) acknowledged (\(users.replayed) replayed), \(writes.failed) failed, \(writes.notStarted) not started, \(users.retries) retries")
        report.line("reads", "\(reads.answered) answered, \(reads.unanswered) failed, p99 \(LatencySummary(reads.latencies, decimals: Self.decimals).milliseconds(0.99)) ms")
        report.line("ID requests", "\(directIDs.calls.answered) answered, \(directIDs.calls.failed) failed, \(directIDs.calls.notStarted) not started (\(configuration.idRate)/s scheduled straight at the generators through StampClient, no prefetch, no coalescing), \(directIDs.retries) retries, p99 \(LatencySummary(directIDs.calls.latencies, decimals: Self.decimals).milliseconds(0.99)) ms")
        report.line("failures", failures.isEmpty ? "none" : failures)
        report.line("write latency (ms)", latencies.text)
        report.line("generators served", String(format: "%.0f ID requests/s, %.0f IDs/s (their /metrics: the audit servers' requests and the direct ones)", Double(served.requests) / seconds, Double(served.ids) / seconds))
        report.line("audit servers", "answered \(auditRequests.map(String.init).joined(separator: ", ")) API requests (their /metrics: the balance)")
        report.line("cpu while driving", cpu.text)
        report.line("check", "\(verification.users) users read back in \(String(format: "%.1f", checked.secondsValue)) s, \(verification.unreadableUsers) unreadable\(verification.firstProblem.map { " (\($0))" } ?? "")")
        report.line("rows", "\(verification.rows)\(shards.isEmpty ? "" : " (\(shards))")\(verification.foreignRows > 0 ? ", \(verification.foreignRows) under another user" : "")")
        report.line("lost", "\(verification.lost) acknowledged writes not stored")
        report.line("duplicates", "\(duplicates) among \(ids) IDs (every stored row's and every direct ID request's)")
        report.line("hash chains", "\(chains.verified ? "verified" : "NOT VERIFIED") (stamp audit verify: \(chains.output))")
        report.line("order violations", "\(verification.orderViolations) users whose rows are not in write order, \(directIDs.ledger.orderViolations) direct IDs not above the client's earlier ones")
        report.line("result", passed ? "passed" : "FAILED")
        report.figure("writes", acknowledged)
        report.figure("rows", verification.rows)
        report.figure("duplicates", duplicates)
        report.figure("order_violations", orderViolations)
        report.figure("rate", Int((Double(acknowledged) / seconds).rounded()))
        report.figure("p99_ms", latencies.milliseconds(0.99))
        report.figure("id_requests_per_s", Int((Double(served.requests) / seconds).rounded()))
        report.figure("ids_per_s", Int((Double(served.ids) / seconds).rounded()))
        report.figure("ids", ids)
        report.figure("driver_cores", String(format: "%.2f", cpu.driver))
        report.figure("audit_driver_cores", String(format: "%.2f", cpu.auditTraffic))
        report.figure("balancer_cores", cpu.balancer.map { String(format: "%.2f", $0) } ?? "none")
        self.report = report
    }

    public var description: String { report.description }
}
