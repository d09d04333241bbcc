import ArgumentParser
import Foundation
import StampLoadTesting

struct CheckHistory: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check-history",
        abstract: "Check the calls of load runs against the nodes' logs and a fault schedule (the nemesis's checker).",
        discussion: """
        Reads the history files of `stamp load --record`, the logs of `stamp serve --log-level debug` (which carry \
        each claim's and renewal's validity on the machine's monotonic clock), the fault file of scripts/nemesis \
        and, optionally, each node's /metrics text. Reports total IDs, duplicates, per-node and per-client order \
        violations, IDs received outside every confirmed lease of their node ID, failed calls and the longest \
        stretch with no successful call per fault, and each node's time from a fault to refusing and from the \
        heal to serving. The exit status is non-zero when any invariant or expectation is broken.
        """
    )

    @Option(name: .customLong("calls"), help: ArgumentHelp("A client host's history file, as HOST=PATH; repeat for each host.", valueName: "host=path"))
    var calls: [String] = []

    @Option(name: .customLong("node-log"), help: ArgumentHelp("A node host's log, as HOST=PATH; repeat for each host.", valueName: "host=path"))
    var nodeLogs: [String] = []

    @Option(name: .customLong("node-metrics"), help: ArgumentHelp("A node host's /metrics text at the end, as HOST=PATH.", valueName: "host=path"))
    var nodeMetrics: [String] = []

    @Option(help: ArgumentHelp("The fault file: KIND TARGET START_US END_US per line, wall-clock microseconds.", valueName: "path"))
    var faults: String

    @Option(help: ArgumentHelp("The nodes' --lease-ttl.", valueName: "duration"))
    var leaseTtl: String

    @Option(help: ArgumentHelp("The nodes' --lease-margin.", valueName: "duration"))
    var leaseMargin: String

    @Option(help: ArgumentHelp("The nodes' --max-lead.", valueName: "duration"))
    var maxLead: String = "1s"

    @Option(help: ArgumentHelp("How late past its bound a node may still refuse or recover (a renewal's round trip and scheduling).", valueName: "duration"))
    var tolerance: String = "500ms"

    @OptionGroup var layoutOptions: LayoutOptions

    func validate() throws {
        guard !calls.isEmpty else { throw ValidationError("give at least one --calls HOST=PATH") }
        for pair in calls + nodeLogs + nodeMetrics { _ = try Self.split(pair) }
        _ = try DurationText.parse(leaseTtl, name: "--lease-ttl")
        _ = try DurationText.parse(leaseMargin, name: "--lease-margin")
        _ = try DurationText.parse(tolerance, name: "--tolerance")
        _ = try DurationText.parse(maxLead, name: "--max-lead")
    }

    func run() throws {
        let clients = try calls.map(Self.split).map { host, path in HistoryChecker.ClientHost(name: host, calls: try CallHistory.read(from: path)) }
        let metrics = Dictionary(try nodeMetrics.map(Self.split), uniquingKeysWith: { _, last in last })
        let nodes = try nodeLogs.map(Self.split).map { host, path in
            HistoryChecker.NodeHost(name: host, events: try NodeLogEvent.read(from: path), metrics: try metrics[host].map { try String(contentsOfFile: $0, encoding: .utf8) })
        }
        let checker = HistoryChecker(
            clients: clients,
            nodes: nodes,
            faults: try Fault.read(from: faults),
            layout: try layoutOptions.resolved(),
            leaseTTL: try DurationText.parse(leaseTtl, name: "--lease-ttl"),
            leaseMargin: try DurationText.parse(leaseMargin, name: "--lease-margin"),
            maxLead: try DurationText.parse(maxLead, name: "--max-lead"),
            tolerance: try DurationText.parse(tolerance, name: "--tolerance")
        )
        let report = checker.check()
        print(report)
        if !report.passed { throw ExitCode.failure }
    }

    /// `HOST=PATH` as its two parts.
    static func split(_ pair: String) throws -> (String, String) {
        guard let equals = pair.firstIndex(of: "="), equals != pair.startIndex, pair.index(after: equals) != pair.endIndex else {
            throw ValidationError("expected HOST=PATH, got '\(pair)'")
        }
        return (String(pair[..<equals]), String(pair[pair.index(after: equals)...]))
    }
}
