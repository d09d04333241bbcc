import Foundation
import Testing

/// `stamp demo`: the whole topology on loopback, a short run, every check passing, and no
/// process left behind, also when the demo is interrupted.
@Suite("Demo", .serialized, .timeLimit(.minutes(5)))
struct DemoProcessTests {
    static let postgresURL = ProcessInfo.processInfo.environment["STAMP_TEST_POSTGRES_PROCESS_URL"]

    @Test func demoOnSQLite() async throws {
        try await runDemo(extraArguments: [])
    }

    @Test(.enabled(if: postgresURL != nil, "set STAMP_TEST_POSTGRES_PROCESS_URL (scripts/test does)"))
    func demoOnPostgreSQL() async throws {
        try await runDemo(extraArguments: ["--postgres-url", Self.postgresURL!])
    }

    /// SIGINT while the load runs: the demo stops every process it started and exits with 130.
    @Test func anInterruptedDemoLeavesNoProcess() async throws {
        let demo = try DemoRun(arguments: ["--duration", "60s", "--rate", "100"])
        defer { demo.removeOutput() }
        // The first progress line says the load has begun.
        #expect(await demo.progress.waitFor("t=1s "), "the demo did not start its load: \(demo.errors)")
        kill(demo.process.processIdentifier, SIGINT)
        let status = try await demo.waitForExit()
        #expect(status == 130, "\(demo.errors)")
        let folder = try #require(demo.folder, "the demo names its folder on standard error")
        #expect(Self.processes(mentioning: folder).isEmpty, "processes left running")
        #expect(!FileManager.default.fileExists(atPath: folder), "the folder was deleted")
    }

    private func runDemo(extraArguments: [String]) async throws {
        let demo = try DemoRun(arguments: ["--duration", "3s", "--rate", "200"] + extraArguments)
        defer { demo.removeOutput() }
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
        let folder = try #require(demo.folder, "the demo names its folder on standard error")
        #expect(Self.processes(mentioning: folder).isEmpty, "processes left running")
        #expect(!FileManager.default.fileExists(atPath: folder), "the folder was deleted")
    }

    /// The `key=value` figures of the report's last line.
    static func figures(_ report: String) -> [String: Double] {
        let last = report.split(separator: "\n").last { $0.hasPrefix("writes=") } ?? ""
        var figures: [String: Double] = [:]
        for pair in last.split(separator: " ") {
            let parts = pair.split(separator: "=", maxSplits: 1)
            if parts.count == 2, let value = Double(parts[1]) { figures[String(parts[0])] = value }
        }
        return figures
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

/// One `stamp demo` process, its standard output and error in files.
private final class DemoRun: @unchecked Sendable {
    let process = Process()
    let output: URL
    /// Standard error: the folder line and the progress lines.
    let progress = OutputWatcher()
    private let exited = AsyncStream<Int32>.makeStream()

    init(arguments: [String]) throws {
        let name = "stamp-demo-test-\(UUID().uuidString.prefix(8))"
        output = FileManager.default.temporaryDirectory.appendingPathComponent("\(name).out")
        _ = FileManager.default.createFile(atPath: output.path, contents: nil)
        process.executableURL = StampProcess.binary
        process.arguments = ["demo"] + arguments
        process.standardOutput = try FileHandle(forWritingTo: output)
        process.standardError = progress.pipe
        let continuation = exited.continuation
        let progress = self.progress
        process.terminationHandler = { process in
            progress.finish()
            continuation.yield(process.terminationStatus)
            continuation.finish()
        }
        try process.run()
    }

    var report: String { (try? String(contentsOf: output, encoding: .utf8)) ?? "" }
    var errors: String { progress.contents }

    /// The demo's temporary folder, from its first line on standard error.
    var folder: String? {
        guard let line = errors.split(separator: "\n").first(where: { $0.hasPrefix("stamp demo: folder ") }) else { return nil }
        return String(line.dropFirst("stamp demo: folder ".count))
    }

    /// The exit status. A hung demo meets the suite's time limit, which cancels the wait and
    /// kills the demo.
    func waitForExit() async throws -> Int32 {
        let stream = exited.stream
        let pid = process.processIdentifier
        let status: Int32? = await withTaskCancellationHandler {
            var iterator = stream.makeAsyncIterator()
            return await iterator.next()
        } onCancel: {
            kill(pid, SIGKILL)
        }
        guard let status else { throw ProcessTestError("stamp demo did not report its exit: \(errors)") }
        return status
    }

    func removeOutput() {
        try? FileManager.default.removeItem(at: output)
    }
}
