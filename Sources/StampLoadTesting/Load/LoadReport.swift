import Foundation
import StampClient

/// The figures of a load run, and their text, which ends in
/// `ids=N failed=F duplicates=D order_violations=V rate=R p99_ms=P`.
public struct LoadReport: Sendable, CustomStringConvertible {
    public let ids: Int
    /// Calls that failed or were not started.
    public let failures: Int
    public let duplicates: Int
    public let orderViolations: Int
    public let report: RunReport

    /// Decimals of the milliseconds in the load's lines.
    static let decimals = 3

    public init(calls: RequestRecorder.Tally, ledgers: [IDLedger], statistics: [StampClientStatistics], elapsed: Duration) {
        let (ids, duplicates) = IDLedger.duplicates(in: ledgers)
        let latencies = LatencySummary(calls.latencies, decimals: Self.decimals)
        let seconds = max(elapsed.secondsValue, 0.001)
        let requests = statistics.map(\.requests).reduce(0, +)
        let retries = statistics.map(\.retries).reduce(0, +)
        let failovers = statistics.map(\.failovers).reduce(0, +)
        let attempts = statistics.map(\.attempts).reduce(0, +)
        let prefetched = statistics.map(\.prefetchHits).reduce(0, +)
        let discarded = statistics.map(\.prefetchDiscarded).reduce(0, +)
        self.ids = ids
        failures = calls.unanswered
        self.duplicates = duplicates
        orderViolations = ledgers.map(\.totals.orderViolations).reduce(0, +)
        let reasons = calls.reasons.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")

        var report = RunReport()
        report.line("duration", "\(String(format: "%.1f", seconds)) s")
        report.line("calls", "\(ids + failures) (\(ids) IDs, \(failures) failed\(reasons.isEmpty ? "" : ": " + reasons))")
        report.line("requests to nodes", "\(requests) (\(attempts) attempts, \(retries) retries, \(failovers) failovers)")
        report.line("prefetch", "\(prefetched) IDs from buffers, \(discarded) discarded as old")
        report.line("duplicates", "\(duplicates)")
        report.line("order violations", "\(orderViolations)")
        report.line("latency (ms)", latencies.text)
        report.figure("ids", ids)
        report.figure("failed", failures)
        report.figure("duplicates", duplicates)
        report.figure("order_violations", orderViolations)
        report.figure("rate", Int((Double(ids) / seconds).rounded()))
        report.figure("p99_ms", latencies.milliseconds(0.99))
        self.report = report
    }

    /// Whether every ID was unique and each client's IDs rose.
    public var passed: Bool { duplicates == 0 && orderViolations == 0 }

    public var description: String { report.description }
}
