import StampCore
import Testing
@testable import StampLoadTesting

/// A history built by hand: node 0 on host n1 and node 1 on host n2, both confirmed for the
/// first 20 s of the monotonic clock; the wall clock of the clients reads a fixed offset ahead of it.
private struct Scenario {
    static let wallOffsetMicroseconds: Int64 = 1_000_000_000
    var calls: [CallRecord] = []
    var faults: [Fault] = []
    var n1: [NodeLogEvent] = [NodeLogEvent(kind: .confirmed(node: 0, sentMicroseconds: 0, validUntilMicroseconds: 20_000_000), microseconds: 0)]
    var n2: [NodeLogEvent] = [NodeLogEvent(kind: .confirmed(node: 1, sentMicroseconds: 0, validUntilMicroseconds: 20_000_000), microseconds: 0)]

    static func id(millisecond: Int64, sequence: Int64 = 0, node: Int) -> Int64 {
        StampID(time: millisecond, sequence: sequence, shard: 0, node: node, layout: .default).rawValue
    }

    mutating func call(client: Int = 0, _ outcome: CallRecord.Outcome, from start: Int64, to end: Int64) {
        calls.append(CallRecord(client: client, outcome: outcome, startedMicroseconds: start, endedMicroseconds: end, endedWallMilliseconds: (end + Self.wallOffsetMicroseconds) / 1000))
    }

    mutating func fault(_ kind: Fault.Kind, _ target: String, from start: Int64, to end: Int64) {
        faults.append(Fault(kind: kind, target: target, startWallMicroseconds: start + Self.wallOffsetMicroseconds, endWallMicroseconds: end + Self.wallOffsetMicroseconds))
    }

    /// Steady successful calls, one every 10 ms over `range` microseconds, alternating between the two nodes.
    mutating func steady(_ range: Range<Int64>) {
        for (index, start) in stride(from: range.lowerBound, to: range.upperBound, by: 10_000).enumerated() {
            call(.id(Self.id(millisecond: 1_000_000 + start / 1000, node: index % 2)), from: start, to: start + 2000)
        }
    }

    func check() -> HistoryReport {
        HistoryChecker(
            clients: [HistoryChecker.ClientHost(name: "c1", calls: calls)],
            nodes: [HistoryChecker.NodeHost(name: "n1", events: n1), HistoryChecker.NodeHost(name: "n2", events: n2)],
            faults: faults,
            leaseTTL: .seconds(3),
            leaseMargin: .seconds(1),
            tolerance: .milliseconds(500)
        ).check()
    }
}

@Suite("History checker")
struct HistoryCheckerTests {
    @Test func aCleanHistoryPasses() {
        var scenario = Scenario()
        scenario.steady(0..<1_000_000)
        let report = scenario.check()
        #expect(report.passed, "\(report.broken)")
        #expect(report.description.contains("ids=100 failed=0 duplicates=0 node_order_violations=0 client_order_violations=0 late_ids=0"))
    }

    @Test func aDuplicateBreaksTheRun() {
        var scenario = Scenario()
        scenario.steady(0..<100_000)
        scenario.call(client: 1, .id(Scenario.id(millisecond: 1_000_000, node: 0)), from: 5000, to: 6000)
        let report = scenario.check()
        #expect(report.broken.contains("1 duplicate IDs"))
        #expect(!report.passed)
    }

    @Test func anIDBelowOneReceivedBeforeTheCallStartedIsAnOrderViolation() {
        var scenario = Scenario()
        // Node 0's IDs: the second call starts after the first ended, yet gets a smaller ID.
        scenario.call(.id(Scenario.id(millisecond: 500, node: 0)), from: 0, to: 1000)
        scenario.call(client: 1, .id(Scenario.id(millisecond: 400, node: 0)), from: 2000, to: 3000)
        let report = scenario.check()
        #expect(report.broken == ["1 per-node order violations"], "different clients: only the node's order is broken")
    }

    @Test func oneClientsIDsMustRiseAcrossNodes() {
        var scenario = Scenario()
        scenario.call(.id(Scenario.id(millisecond: 500, node: 0)), from: 0, to: 1000)
        scenario.call(.id(Scenario.id(millisecond: 400, node: 1)), from: 2000, to: 3000)
        let report = scenario.check()
        #expect(report.broken == ["1 per-client order violations"])
    }

    @Test func overlappingCallsMayReturnInEitherOrder() {
        var scenario = Scenario()
        scenario.call(.id(Scenario.id(millisecond: 500, node: 0)), from: 0, to: 3000)
        scenario.call(.id(Scenario.id(millisecond: 400, node: 0)), from: 1000, to: 2000)
        #expect(scenario.check().passed)
    }

    @Test func anIDReceivedAfterEveryLeaseOfItsNodeEndedIsLate() {
        var scenario = Scenario()
        scenario.steady(0..<100_000)
        // Node 1's lease ends at 20 s; a call that starts 5 ms later got one of its IDs.
        scenario.call(.id(Scenario.id(millisecond: 2_000_000, node: 1)), from: 20_005_000, to: 20_006_000)
        // A call that was in flight when the lease ended is not late: it may have been issued before.
        scenario.call(.id(Scenario.id(millisecond: 1_999_999, node: 1)), from: 19_999_000, to: 20_100_000)
        let report = scenario.check()
        #expect(report.broken == ["1 IDs received outside every confirmed lease of their node ID"])
    }

    @Test func failedCallsBreakTheRunUnlessTheStoreIsDown() {
        var partitioned = Scenario()
        partitioned.steady(0..<10_000_000)
        partitioned.fault(.storePartition, "n1", from: 1_000_000, to: 5_000_000)
        // n1 (node 0) renewed last at 0, so its lease ran out at 2 s; it renewed again 200 ms after the heal.
        partitioned.n1 = [
            NodeLogEvent(kind: .confirmed(node: 0, sentMicroseconds: 0, validUntilMicroseconds: 2_000_000), microseconds: 0),
            NodeLogEvent(kind: .confirmed(node: 0, sentMicroseconds: 5_200_000, validUntilMicroseconds: 20_000_000), microseconds: 5_200_000),
            NodeLogEvent(kind: .issuing(node: 0), microseconds: 5_300_000),
        ]
        partitioned.dropCalls(node: 0, startingIn: 1_990_000..<5_300_000)
        partitioned.call(.failed("unavailable"), from: 2_500_000, to: 4_500_000)
        let report = partitioned.check()
        #expect(report.broken == ["fault 1 (store-partition n1): 1 failed calls while other nodes could serve"])
        #expect(report.description.contains("n1 refused 1000 ms after the fault, 2000 ms after its last renewal; served again 300 ms after the heal"))

        var storeDown = partitioned
        storeDown.faults = []
        storeDown.fault(.storeStop, "store", from: 1_000_000, to: 5_000_000)
        storeDown.n2 = [
            NodeLogEvent(kind: .confirmed(node: 1, sentMicroseconds: 0, validUntilMicroseconds: 2_000_000), microseconds: 0),
            NodeLogEvent(kind: .confirmed(node: 1, sentMicroseconds: 5_200_000, validUntilMicroseconds: 20_000_000), microseconds: 5_200_000),
            NodeLogEvent(kind: .issuing(node: 1), microseconds: 6_600_000),
        ]
        storeDown.dropCalls(node: 1, startingIn: 1_990_000..<6_600_000)
        let down = storeDown.check()
        #expect(down.broken == ["fault 1 (store-stop store): n2 served again 1600 ms after the store's return, beyond one renewal (1000 ms)"], "failed calls are expected while the store is down; a slow recovery is not")

        // A node ID claimed with no stored reservation waits for the maximum lead (1 s) on top.
        storeDown.n2.insert(NodeLogEvent(kind: .claimedWithoutReservation, microseconds: 5_200_000), at: 1)
        #expect(storeDown.check().passed)
        storeDown.n2[3] = NodeLogEvent(kind: .issuing(node: 1), microseconds: 7_600_000)
        storeDown.dropCalls(node: 1, startingIn: 6_600_000..<7_600_000)
        #expect(storeDown.check().broken == ["fault 1 (store-stop store): n2 served again 2600 ms after the store's return, beyond one renewal and the maximum lead (2000 ms)"])
    }

    @Test func aNodeWhoseClockMovedMustRefuseWithinOneRenewal() {
        var scenario = Scenario()
        scenario.steady(0..<6_000_000)
        scenario.fault(.clockSkew, "n1", from: 1_000_000, to: 4_000_000)
        let silent = scenario.check()
        #expect(silent.broken == ["fault 1 (clock-skew n1): n1 did not refuse for its clock"])

        scenario.n1.append(NodeLogEvent(kind: .stopped(reason: .clockSkewed), microseconds: 2_700_000))
        #expect(scenario.check().broken == ["fault 1 (clock-skew n1): n1 refused 1700 ms after its clock moved, beyond one renewal (1000 ms)"])

        scenario.n1[1] = NodeLogEvent(kind: .stopped(reason: .clockSkewed), microseconds: 1_900_000)
        scenario.n1.append(NodeLogEvent(kind: .issuing(node: 0), microseconds: 4_800_000))
        let prompt = scenario.check()
        #expect(prompt.passed, "\(prompt.broken)")
        #expect(prompt.description.contains("n1 refused 900 ms after the fault; served again 800 ms after the heal"))

        // Serving again logged a few milliseconds before the heal's recorded end (which the nemesis
        // reads just after healing) is serving at the heal, not a wait for the next "issuing IDs".
        scenario.n1.insert(NodeLogEvent(kind: .issuing(node: 0), microseconds: 3_995_000), at: 2)
        #expect(scenario.check().description.contains("n1 refused 900 ms after the fault; served again 0 ms after the heal"))
    }

    @Test func oneEtcdMemberKilledMustNotStopAnyNode() {
        var scenario = Scenario()
        scenario.steady(0..<6_000_000)
        scenario.fault(.memberKill, "e2", from: 1_000_000, to: 4_000_000)
        let unaffected = scenario.check()
        #expect(unaffected.passed, "\(unaffected.broken)")
        #expect(unaffected.description.contains("n1 kept issuing; n2 kept issuing"))

        scenario.n1.append(NodeLogEvent(kind: .stopped(reason: .leaseExpired), microseconds: 2_000_000))
        #expect(scenario.check().broken == ["fault 1 (member-kill e2): n1 stopped issuing while only one member was down"])
    }

    @Test func theEtcdLeaderCutOffMayPauseEveryNodeUntilTheOthersElectOne() {
        var scenario = Scenario()
        scenario.steady(0..<10_000_000)
        scenario.fault(.leaderPartition, "e1", from: 1_000_000, to: 8_000_000)
        // Both nodes' leases run out during the election, and both issue again, on new confirmations, at 4 s.
        for (index, events) in [\Scenario.n1, \Scenario.n2].enumerated() {
            scenario[keyPath: events] = [
                NodeLogEvent(kind: .confirmed(node: index, sentMicroseconds: 0, validUntilMicroseconds: 2_500_000), microseconds: 0),
                NodeLogEvent(kind: .stopped(reason: .leaseExpired), microseconds: 2_500_000),
                NodeLogEvent(kind: .confirmed(node: index, sentMicroseconds: 3_900_000, validUntilMicroseconds: 20_000_000), microseconds: 3_900_000),
                NodeLogEvent(kind: .issuing(node: index), microseconds: 4_000_000),
            ]
            scenario.dropCalls(node: index, startingIn: 2_500_000..<4_000_000)
        }
        scenario.call(.failed("unavailable"), from: 2_600_000, to: 3_900_000)
        let paused = scenario.check()
        #expect(paused.passed, "failed calls are allowed while the members elect a leader: \(paused.broken)")
        #expect(paused.description.contains("n1 refused 1500 ms after the fault, served again 3000 ms after it, before the heal"))

        var late = scenario
        late.n2[3] = NodeLogEvent(kind: .issuing(node: 1), microseconds: 9_000_000)
        late.dropCalls(node: 1, startingIn: 4_000_000..<9_000_000)
        #expect(late.check().broken == ["fault 1 (leader-partition e1): n2 did not serve again while the old leader was cut off"])

        var long = scenario
        for node in [0, 1] { long.dropCalls(node: node, startingIn: 4_000_000..<6_600_000) }
        #expect(long.check().broken == ["fault 1 (leader-partition e1): no successful call for 4110 ms, beyond the lease TTL (3000 ms)"])
    }

    @Test func aNodeCutOffWithAMinorityMemberRefusesWithinTheLease() {
        var scenario = Scenario()
        scenario.steady(0..<10_000_000)
        scenario.fault(.majorityPartition, "n1+e3", from: 1_000_000, to: 5_000_000)
        scenario.n1 = [
            NodeLogEvent(kind: .confirmed(node: 0, sentMicroseconds: 0, validUntilMicroseconds: 2_000_000), microseconds: 0),
            NodeLogEvent(kind: .confirmed(node: 0, sentMicroseconds: 5_200_000, validUntilMicroseconds: 20_000_000), microseconds: 5_200_000),
            NodeLogEvent(kind: .issuing(node: 0), microseconds: 5_300_000),
        ]
        scenario.dropCalls(node: 0, startingIn: 1_990_000..<5_300_000)
        let report = scenario.check()
        #expect(report.passed, "\(report.broken)")
        #expect(report.description.contains("majority-partition n1+e3 for 4000 ms; 0 failed calls"))
        #expect(report.description.contains("n1 refused 1000 ms after the fault, 2000 ms after its last renewal; served again 300 ms after the heal"))

        scenario.n1[0] = NodeLogEvent(kind: .confirmed(node: 0, sentMicroseconds: 0, validUntilMicroseconds: 3_000_000), microseconds: 0)
        scenario.call(.id(Scenario.id(millisecond: 1_002_550, node: 0)), from: 2_500_000, to: 2_600_000)
        #expect(scenario.check().broken == ["fault 1 (majority-partition n1+e3): n1 issued for 3000 ms after its last renewal, beyond ttl - margin"])
    }

    @Test func theLongestStretchWithoutSuccessIsMeasured() {
        #expect(HistoryChecker.longestGap([10, 20, 50, 55], from: 0, to: 60) == 30)
        #expect(HistoryChecker.longestGap([10, 20, 50, 55], from: 21, to: 60) == 30, "the success before the window starts the first stretch")
        #expect(HistoryChecker.longestGap([10], from: 20, to: 100) == 90, "no success in the window: the whole window and the time before it")
    }

    @Test func recordsLogLinesAndFaultsAreRead() throws {
        let record = CallRecord(client: 1, outcome: .failed("timeout"), startedMicroseconds: 5, endedMicroseconds: 9, endedWallMilliseconds: 1_700_000_000_000)
        #expect(CallRecord(line: record.line) == record)
        #expect(CallRecord(line: "0 ok 42 1 2 3")?.id == 42)
        #expect(CallRecord(line: "0 maybe 42 1 2 3") == nil)

        let renewed = "2026-12-02T02:40:00+0000 debug stamp : stamp.node_id=2 stamp.owner=ab-cd stamp.reserved_until=17 stamp.sent_at_us=100 stamp.valid_until_us=2000100 [StampGeneratorNode] renewed lease"
        #expect(NodeLogEvent(line: renewed) == NodeLogEvent(kind: .confirmed(node: 2, sentMicroseconds: 100, validUntilMicroseconds: 2_000_100), microseconds: 100))
        let skewed = "2026-12-02T02:40:00+0000 error stamp : stamp.clock_skew_ms=2001 stamp.max_clock_skew_ms=250 stamp.monotonic_us=77 stamp.node_id=2 [StampGeneratorNode] the wall clock differs from the coordination store's beyond the bound; stopped issuing until it is back"
        #expect(NodeLogEvent(line: skewed) == NodeLogEvent(kind: .stopped(reason: .clockSkewed), microseconds: 77))
        let issuing = "2026-12-02T02:40:00+0000 notice stamp : stamp.monotonic_us=80 stamp.node_id=2 [StampGeneratorNode] issuing IDs"
        #expect(NodeLogEvent(line: issuing) == NodeLogEvent(kind: .issuing(node: 2), microseconds: 80))
        let fresh = "2026-12-02T02:40:00+0000 notice stamp: stamp.issuing_from=2026-12-02T03:08:46.003Z stamp.monotonic_us=90 stamp.node_id=4 [StampGeneratorNode] the node ID has no stored reservation; issuing waits until the wall clock passes the claim time plus the maximum lead"
        #expect(NodeLogEvent(line: fresh) == NodeLogEvent(kind: .claimedWithoutReservation, microseconds: 90))
        #expect(NodeLogEvent(line: "2026-12-02T02:40:00+0000 info stamp : [StampGeneratorNode] coordination store ready") == nil)

        #expect(Fault(line: "clock-back-1h n3 10 20") == Fault(kind: .clockBack1h, target: "n3", startWallMicroseconds: 10, endWallMicroseconds: 20))
        #expect(Fault(line: "clock-back-1h n3 20 10") == nil, "a fault ends after it starts")
        #expect(Fault(line: "meteor n3 10 20") == nil)
    }
}

extension Scenario {
    /// Removes the successful calls that `node` answered and that started in `range`.
    mutating func dropCalls(node: Int, startingIn range: Range<Int64>) {
        calls.removeAll { call in
            guard let id = call.id, range.contains(call.startedMicroseconds) else { return false }
            return StampID(rawValue: id)?.fields(in: .default).node == node
        }
    }
}
