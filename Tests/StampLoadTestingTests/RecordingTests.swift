import Foundation
import StampCore
import Synchronization
import Testing
@testable import StampLoadTesting

@Suite("Request recorder")
struct RequestRecorderTests {
    @Test func countsLatenciesAndReasonsInTotalAndWindow() {
        let firsts = Mutex<[String]>([])
        let recorder = RequestRecorder { outcome, reason, detail in
            firsts.withLock { $0.append("\(outcome) \(reason) \(detail)") }
        }
        recorder.answered(latency: .milliseconds(3))
        recorder.answered(latency: .microseconds(1500))
        recorder.failed(reason: "HTTP 503")
        recorder.failed(reason: "HTTP 503")
        recorder.notStarted(reason: "not started: busy", detail: "busy")
        let window = recorder.drainWindow()
        #expect(window.answered == 2)
        #expect(window.latencies == [3_000_000, 1_500_000])
        #expect(window.failed == 2)
        #expect(window.notStarted == 1)
        #expect(window.unanswered == 3)
        #expect(recorder.drainWindow() == RequestRecorder.Tally(), "a drained window starts again empty")

        recorder.answered(latency: .milliseconds(1))
        let total = recorder.total
        #expect(total.answered == 3)
        #expect(total.reasons == ["HTTP 503": 2, "not started: busy": 1])
        #expect(firsts.withLock { $0 } == ["failed HTTP 503 HTTP 503", "notStarted not started: busy busy"], "only the first of each reason is told")
    }

    @Test func aBatchIsMergedWhole() {
        let recorder = RequestRecorder()
        var batch = RequestRecorder.Batch()
        for milliseconds in 1...3 { batch.answered(latency: .milliseconds(milliseconds)) }
        recorder.merge(&batch)
        #expect(batch.latencies.isEmpty)
        #expect(recorder.total.answered == 3)
        #expect(recorder.drainWindow().latencies == [1_000_000, 2_000_000, 3_000_000])
    }
}

@Suite("ID ledger")
struct IDLedgerTests {
    @Test func anIDAtOrBelowTheFloorOfItsCallIsOutOfOrder() {
        let ledger = IDLedger()
        let floor = ledger.floor
        ledger.record(StampID(rawValue: 10)!, floor: floor)
        // Two calls started before either answered share the floor: both answers are in order.
        let shared = ledger.floor
        ledger.record(StampID(rawValue: 30)!, floor: shared)
        ledger.record(StampID(rawValue: 20)!, floor: shared)
        #expect(ledger.totals.orderViolations == 0)
        ledger.record(StampID(rawValue: 25)!, floor: ledger.floor)
        #expect(ledger.totals.orderViolations == 1)
        #expect(ledger.floor == 30)
    }

    @Test func batchesAreCheckedWithinAndAgainstWhatCameBefore() {
        let ledger = IDLedger()
        var batch = IDLedger.Batch()
        for raw: Int64 in [5, 6, 6, 7] { batch.record(StampID(rawValue: raw)!) }
        ledger.merge(&batch)
        #expect(ledger.totals.orderViolations == 1)
        #expect(batch.ids.isEmpty)
        batch.record(StampID(rawValue: 8)!)
        ledger.merge(&batch)
        #expect(ledger.totals.orderViolations == 1, "the batch keeps the greatest ID across merges")
        let other = IDLedger()
        var late = IDLedger.Batch()
        late.record(StampID(rawValue: 1)!)
        other.merge(&late)
        late.record(StampID(rawValue: 2)!)
        other.record(StampID(rawValue: 9)!, floor: other.floor)
        other.merge(&late)
        #expect(other.totals.orderViolations == 1, "a batch whose first ID is below the ledger's greatest is out of order")
    }

    @Test func duplicatesAreCountedOverAllClients() {
        let first = IDLedger()
        let second = IDLedger()
        for raw: Int64 in [1, 2, 3] { first.record(StampID(rawValue: raw)!, floor: first.floor) }
        for raw: Int64 in [3, 4, 3] { second.record(StampID(rawValue: raw)!, floor: -1) }
        let (ids, duplicates) = IDLedger.duplicates(in: [first, second])
        #expect(ids == 6)
        #expect(duplicates == 2)
    }
}

@Suite("Reports")
struct ReportTests {
    @Test func linesAreAlignedAndTheFiguresComeLast() {
        var report = RunReport()
        report.line("duration", "1.0 s")
        report.line("write latency (ms)", "p50 1.0")
        report.figure("ids", 3)
        report.figure("p99_ms", "0.250")
        #expect(report.description == """
        duration:          1.0 s
        write latency (ms): p50 1.0
        ids=3 p99_ms=0.250
        """)
    }

    @Test func percentilesAreNearestRank() {
        let summary = LatencySummary((1...100).map { Int64($0) * 1_000_000 }.reversed(), decimals: 1)
        #expect(summary.value(0.5) == 50_000_000)
        #expect(summary.value(0.99) == 99_000_000)
        #expect(summary.value(0.999) == 100_000_000)
        #expect(summary.text == "p50 50.0 p99 99.0 p99.9 100.0 max 100.0")
        #expect(LatencySummary([], decimals: 3).milliseconds(0.99) == "0.000")
    }

    @Test func theLoadReportEndsInItsFigures() {
        let ledger = IDLedger()
        for raw: Int64 in [1, 2, 2] { ledger.record(StampID(rawValue: raw)!, floor: -1) }
        var calls = RequestRecorder.Tally()
        calls.answered = 3
        calls.latencies = [1_000_000, 2_000_000, 4_000_000]
        calls.failed = 1
        calls.reasons = ["all-nodes-failed": 1]
        let report = LoadReport(calls: calls, ledgers: [ledger], statistics: [], elapsed: .seconds(2))
        #expect(!report.passed)
        let lines = report.description.split(separator: "\n")
        #expect(lines.contains("calls:             4 (3 IDs, 1 failed: all-nodes-failed=1)"))
        #expect(lines.last == "ids=3 failed=1 duplicates=1 order_violations=0 rate=2 p99_ms=4.000")
    }

    @Test func theDemoReportEndsInItsFigures() {
        let report = Self.demoReport()
        #expect(report.passed)
        let lines = report.description.split(separator: "\n")
        #expect(lines.contains("writes:            4 acknowledged (1 replayed), 0 failed, 0 not started, 2 retries"))
        #expect(lines.contains("rows:              4 (shard 0: 1, shard 1: 3)"))
        #expect(lines.contains("ID requests:       3 answered, 0 failed, 0 not started (1000/s scheduled straight at the generators through StampClient, no prefetch, no coalescing), 1 retries, p99 3.0 ms"))
        #expect(lines.contains("generators served: 60 ID requests/s, 500 IDs/s (their /metrics: the audit servers' requests and the direct ones)"))
        #expect(lines.contains("audit servers:     answered 3, 2, 2 API requests (their /metrics: the balance)"))
        #expect(lines.contains("cpu while driving: driver 0.30 cores (15 % of the machine; audit traffic 0.12), balancer 0.05, audit servers 1.00, generators 0.10"))
        #expect(lines.contains("duplicates:        0 among 7 IDs (every stored row's and every direct ID request's)"))
        #expect(lines.contains("hash chains:       verified (stamp audit verify: shard 0: verified)"))
        #expect(lines.contains("result:            passed"))
        #expect(lines.last == "writes=4 rows=4 duplicates=0 order_violations=0 rate=2 p99_ms=40.0 id_requests_per_s=60 ids_per_s=500 ids=7 driver_cores=0.30 audit_driver_cores=0.12 balancer_cores=0.05")
    }

    @Test func aShardThatDoesNotVerifyFailsTheDemo() {
        let report = Self.demoReport(chainsVerified: false)
        #expect(!report.passed)
        #expect(report.description.contains("hash chains:       NOT VERIFIED (stamp audit verify: shard 0: FAILED: edited at position 2)"))
    }

    @Test func anIDSeenTwiceAcrossRowsAndDirectRequestsFailsTheDemo() {
        let report = Self.demoReport(directIDs: [1, 2, 40])
        #expect(!report.passed)
        #expect(report.description.split(separator: "\n").last?.hasPrefix("writes=4 rows=4 duplicates=1 order_violations=0 ") == true)
    }

    @Test func aFailedOrOutOfOrderDirectIDRequestFailsTheDemo() {
        var failed = Self.demoReport(directFailures: 1)
        #expect(!failed.passed)
        #expect(failed.description.contains("1× ID request: all-nodes-failed"))
        failed = Self.demoReport(directOrderViolations: 1)
        #expect(!failed.passed)
        #expect(failed.description.split(separator: "\n").last?.contains(" order_violations=1 ") == true)
    }

    static func demoReport(directIDs: [Int64] = [1, 2, 3], directFailures: Int = 0, directOrderViolations: Int = 0, chainsVerified: Bool = true) -> DemoReport {
        var writes = RequestRecorder.Tally()
        writes.answered = 4
        writes.latencies = [10_000_000, 20_000_000, 30_000_000, 40_000_000]
        var verification = DemoVerifier.Result()
        verification.users = 2
        verification.rows = 4
        verification.rowsPerShard = [0: 1, 1: 3]
        verification.ids = [10, 20, 30, 40]
        var direct = DemoReport.DirectIDs()
        direct.calls.answered = directIDs.count
        direct.calls.latencies = [1_000_000, 2_000_000, 3_000_000]
        direct.calls.failed = directFailures
        if directFailures > 0 { direct.calls.reasons = ["all-nodes-failed": directFailures] }
        direct.ledger.ids = directIDs
        direct.ledger.orderViolations = directOrderViolations
        direct.retries = 1
        var configuration = DemoConfiguration()
        configuration.idRate = 1000
        return DemoReport(
            configuration: configuration,
            folder: URL(fileURLWithPath: "/tmp/stamp-demo-test"),
            topology: "3 generators, 3 audit servers, 3 shards on SQLite, no load balancer installed: the driver spreads requests round-robin over 3 audit servers",
            writes: writes,
            reads: RequestRecorder.Tally(),
            users: UserLedger.Snapshot(users: [], replayed: 1, retries: 2),
            verification: verification,
            chains: (chainsVerified, chainsVerified ? "shard 0: verified" : "shard 0: FAILED: edited at position 2"),
            directIDs: direct,
            served: GeneratorCounts(requests: 120, ids: 1000),
            auditRequests: [3, 2, 2],
            cpu: CPUShares(driver: 0.3, auditTraffic: 0.12, balancer: 0.05, auditServers: 1, generators: 0.1, machineCores: 2),
            drove: .seconds(2),
            checked: .milliseconds(100)
        )
    }
}
