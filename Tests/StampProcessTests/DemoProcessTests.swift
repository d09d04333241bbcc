import Foundation
import StampLoadTesting
import Testing

/// `stamp demo`: the whole topology on loopback, a short run, every check passing, and no
/// process left behind, also when the demo is interrupted.
@Suite("Demo", .serialized, .timeLimit(.minutes(5)))
struct DemoProcessTests {
    static let postgresURL = ProcessInfo.processInfo.environment["STAMP_TEST_POSTGRES_PROCESS_URL"]
    static let haproxyInstalled = ExecutableSearch.find("haproxy", extraDirectories: ExecutableSearch.systemDirectories) != nil
    static let etcdInstalled = ExecutableSearch.find("etcd", extraDirectories: ExecutableSearch.systemDirectories) != nil
    static let driverSpreads = "no load balancer: the driver spreads requests round-robin over 3 audit servers"

    @Test func demoOnSQLite() async throws {
        let report = try await runDemo(extraArguments: ["--no-load-balancer"])
        #expect(Self.topology(report).hasSuffix(Self.driverSpreads))
        #expect(Self.rawFigures(report)["balancer_cores"] == "none")
    }

    @Test(.enabled(if: postgresURL != nil, "set STAMP_TEST_POSTGRES_PROCESS_URL (scripts/test does)"))
    func demoOnPostgreSQL() async throws {
        let report = try await runDemo(extraArguments: ["--postgres-url", Self.postgresURL!, "--no-load-balancer"])
        #expect(Self.topology(report).hasSuffix(Self.driverSpreads))
    }

    /// With etcd installed (scripts/test installs it), `--etcd` runs the generators on a three-member cluster.
    @Test(.enabled(if: etcdInstalled, "install etcd (apt-get install etcd-server; scripts/test does as root)"))
    func demoOnEtcd() async throws {
        let report = try await runDemo(extraArguments: ["--etcd", "--no-load-balancer"])
        let topology = Self.topology(report)
        #expect(topology.hasPrefix("3 generators on etcd (3 members), "), "the topology line names etcd: \(topology)")
        #expect(topology.hasSuffix(Self.driverSpreads))
    }

    /// With HAProxy installed (scripts/test installs it), the demo's requests go through it.
    @Test(.enabled(if: haproxyInstalled, "install HAProxy (apt-get install haproxy; scripts/test does as root)"))
    func demoThroughHAProxy() async throws {
        let report = try await runDemo(extraArguments: [])
        let topology = Self.topology(report)
        #expect(topology.contains(", load balancer: haproxy "), "the topology line names HAProxy: \(topology)")
        #expect(topology.contains(" on 127.0.0.1:"))
        #expect(Self.figures(report)["balancer_cores"] != nil, "HAProxy's CPU is measured")
    }

    /// SIGINT while the load runs: the demo stops every process it started and exits with 130.
    @Test func anInterruptedDemoLeavesNoProcess() async throws {
        let demo = try DemoRun(arguments: ["--duration", "60s", "--rate", "100"])
        // The first progress line says the load has begun.
        #expect(await demo.progress.waitFor("t=1s "), "the demo did not start its load: \(demo.errors)")
        demo.process.send(SIGINT)
        let status = try await demo.waitForExit()
        #expect(status == 130, "\(demo.errors)")
        let folder = try #require(demo.folder, "the demo names its folder on standard error")
        #expect(Self.processes(mentioning: folder).isEmpty, "processes left running")
        #expect(!FileManager.default.fileExists(atPath: folder), "the folder was deleted")
    }

    /// `--keep`: after the run the servers keep running, the demo tells where the cluster console
    /// is and where its token is, the page and its data answer, and SIGINT then ends the demo with
    /// its report, every process stopped and the folder kept.
    @Test func aKeptDemoServesItsConsolesUntilInterrupted() async throws {
        let demo = try DemoRun(arguments: ["--duration", "1s", "--rate", "50", "--id-rate", "20", "--no-load-balancer", "--keep"])
        #expect(await demo.progress.waitFor("the servers keep running"), "the demo did not keep its servers: \(demo.errors)")
        #expect(await demo.progress.waitFor("(token: STAMP_TOKEN in "))
        let line = try #require(demo.errors.split(separator: "\n").first { $0.hasPrefix("  cluster console: ") }, "no console line: \(demo.errors)")
        let parts = line.dropFirst("  cluster console: ".count).split(separator: " ")
        let url = String(parts[0])
        let tokensPath = String(parts.last!.dropLast())
        #expect(url.hasPrefix("http://127.0.0.1:") && url.hasSuffix("/ui"))
        let tokens = try String(contentsOfFile: tokensPath, encoding: .utf8)
        let token = try #require(tokens.split(separator: "\n").first { $0.hasPrefix("STAMP_TOKEN=") }).dropFirst("STAMP_TOKEN=".count)
        let attributes = try FileManager.default.attributesOfItem(atPath: tokensPath)
        #expect((attributes[.posixPermissions] as? NSNumber)?.intValue == 0o600, "the tokens file is its owner's alone")

        let (page, pageStatus) = try await HTTP.get(url, accept: "text/html")
        #expect(pageStatus == 200)
        #expect(String(decoding: page, as: UTF8.self).contains(#"<table id="nodes""#))
        let base = String(url.dropLast("/ui".count))
        let (data, dataStatus) = try await HTTP.get("\(base)/v1/cluster/nodes", token: String(token))
        #expect(dataStatus == 200)
        struct Nodes: Decodable {
            struct Entry: Decodable {
                let node: Int
                let error: String?
            }
            let nodes: [Entry]
        }
        let nodes = try JSONDecoder().decode(Nodes.self, from: data)
        #expect(nodes.nodes.map { $0.node } == [0, 1, 2])
        #expect(nodes.nodes.allSatisfy { $0.error == nil }, "every node answered for itself: \(nodes.nodes.compactMap { $0.error })")

        // The audit viewer: its page answers, and the tokens file holds the reader token it asks for and the admin token that erases.
        let viewer = try #require(demo.errors.split(separator: "\n").first { $0.hasPrefix("  audit viewer: ") }, "no viewer line: \(demo.errors)")
        let viewerParts = viewer.dropFirst("  audit viewer: ".count).split(separator: " ")
        #expect(viewerParts[0].hasPrefix("http://127.0.0.1:") && viewerParts[0].hasSuffix("/ui") && viewerParts[2] == "STAMP_AUDIT_READER_TOKEN")
        let (viewerPage, viewerStatus) = try await HTTP.get(String(viewerParts[0]), accept: "text/html")
        #expect(viewerStatus == 200)
        #expect(String(decoding: viewerPage, as: UTF8.self).contains(#"<table id="history-table""#))
        let reader = try #require(tokens.split(separator: "\n").first { $0.hasPrefix("STAMP_AUDIT_READER_TOKEN=") }).dropFirst("STAMP_AUDIT_READER_TOKEN=".count)
        #expect(tokens.contains("STAMP_AUDIT_ADMIN_TOKEN=demo-admin-"))
        let (caller, callerStatus) = try await HTTP.get("\(viewerParts[0].dropLast("/ui".count))/v1/caller", token: String(reader))
        #expect(callerStatus == 200 && String(decoding: caller, as: UTF8.self).contains(#""role":"reader""#))

        demo.process.send(SIGINT)
        let status = try await demo.waitForExit()
        #expect(status == 0, "\(demo.errors)")
        #expect(Self.rawFigures(demo.report)["writes"] != nil, "the report follows the interruption")
        let folder = try #require(demo.folder)
        #expect(Self.processes(mentioning: folder).isEmpty, "processes left running")
        #expect(FileManager.default.fileExists(atPath: tokensPath), "the folder was kept")
        try? FileManager.default.removeItem(atPath: folder)
    }

    /// Runs a short demo, 100 writes a second with 100 direct ID requests a second beside them,
    /// checks its figures and that it left nothing behind, and returns its report.
    ///
    /// A check of the demo's function must not fail when a shared machine is slow for a while.
    /// On PostgreSQL shards the audit servers of a debug build take about 5 ms of CPU a write, so
    /// at 200 writes/s the demo's processes kept most of 2 cores busy, and in CI a slow spell
    /// made the writes time out, be retried and time out again; 100/s leaves room.
    private func runDemo(extraArguments: [String]) async throws -> String {
        let demo = try DemoRun(arguments: ["--duration", "3s", "--rate", "100", "--id-rate", "100"] + extraArguments)
        let status = try await demo.waitForExit()
        let report = demo.report
        print("stamp demo report:\n\(report)\nprogress:\n\(demo.errors)")
        #expect(status == 0)
        let figures = Self.figures(report)
        let writes = try #require(figures["writes"], "the report ends in writes=N rows=M ...")
        #expect(writes > 0)
        #expect(figures["rows"] == writes)
        #expect(figures["duplicates"] == 0)
        #expect(figures["order_violations"] == 0)
        #expect(figures["rate"] != nil)
        #expect(figures["p99_ms"] != nil)
        // The ID half: 300 direct ID requests, all answered, their IDs checked with the rows'.
        #expect(figures["ids"] == writes + 300)
        #expect((figures["id_requests_per_s"] ?? 0) > 0, "the generators' metrics count the requests they served")
        #expect((figures["ids_per_s"] ?? 0) > 0)
        #expect((figures["driver_cores"] ?? 0) > 0, "the driver's CPU is measured")
        #expect((figures["audit_driver_cores"] ?? 0) > 0)
        let answered = Self.numbers(inLine: "audit servers:", of: report)
        #expect(answered.count == 3, "each audit server's answered requests: \(answered)")
        #expect(answered.reduce(0, +) >= Int(writes), "every write was answered by one of them")
        let folder = try #require(demo.folder, "the demo names its folder on standard error")
        #expect(Self.processes(mentioning: folder).isEmpty, "processes left running")
        #expect(!FileManager.default.fileExists(atPath: folder), "the folder was deleted")
        return report
    }

    /// The value of the report's `topology:` line.
    static func topology(_ report: String) -> String {
        let line = report.split(separator: "\n").first { $0.hasPrefix("topology:") } ?? ""
        return line.dropFirst("topology:".count).trimmingCharacters(in: .whitespaces)
    }

    /// The numeric `key=value` figures of the report's last line.
    static func figures(_ report: String) -> [String: Double] {
        rawFigures(report).compactMapValues(Double.init)
    }

    /// The `key=value` figures of the report's last line, as text.
    static func rawFigures(_ report: String) -> [String: String] {
        let last = report.split(separator: "\n").last { $0.hasPrefix("writes=") } ?? ""
        var figures: [String: String] = [:]
        for pair in last.split(separator: " ") {
            let parts = pair.split(separator: "=", maxSplits: 1)
            if parts.count == 2 { figures[String(parts[0])] = String(parts[1]) }
        }
        return figures
    }

    /// The whole numbers in the report's line that starts with `label`.
    static func numbers(inLine label: String, of report: String) -> [Int] {
        let line = report.split(separator: "\n").first { $0.hasPrefix(label) } ?? ""
        return line.dropFirst(label.count).split { !$0.isNumber }.compactMap { Int($0) }
    }

    /// The IDs of running processes whose command line mentions `text`: every process the demo
    /// starts has its folder in its arguments.
    static func processes(mentioning text: String) -> [Int32] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return entries.compactMap(Int32.init).filter { pid in
            guard let data = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { return false }
            let commandLine = String(decoding: data.map { $0 == 0 ? 0x20 : $0 }, as: UTF8.self)
            return commandLine.contains(text)
        }
    }
}

/// One `stamp demo` process: its report on standard output, its folder and progress lines on
/// standard error.
private struct DemoRun: Sendable {
    let process: ChildProcess

    init(arguments: [String]) throws {
        process = try ChildProcess.start(ChildProcess.Launch(
            name: "stamp demo",
            executable: StampProcess.binary.path,
            arguments: ["demo"] + arguments,
            standardError: .apart
        ))
    }

    /// Standard error: the folder line and the progress lines.
    var progress: OutputWatcher { process.errorOutput! }
    var report: String { process.output.contents }
    var errors: String { progress.contents }

    /// The demo's temporary folder, from its first line on standard error.
    var folder: String? {
        guard let line = errors.split(separator: "\n").first(where: { $0.hasPrefix("stamp demo: folder ") }) else { return nil }
        return String(line.dropFirst("stamp demo: folder ".count))
    }

    /// The exit status, once all output is read. A hung demo meets the suite's time limit, which
    /// cancels the wait and kills the demo.
    func waitForExit() async throws -> Int32 {
        let process = self.process
        let termination = await withTaskCancellationHandler {
            await process.waitForExit()
        } onCancel: {
            process.send(SIGKILL)
        }
        await process.output.waitForEnd()
        await progress.waitForEnd()
        guard case .exited(let status) = termination else { throw ProcessTestError("stamp demo \(termination): \(errors)") }
        return status
    }
}
