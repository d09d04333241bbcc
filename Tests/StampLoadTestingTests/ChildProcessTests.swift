import Foundation
import Logging
import Synchronization
import Testing
@testable import StampLoadTesting

@Suite("Child processes")
struct ChildProcessTests {
    static func shell(_ script: String, standardError: ChildProcess.Launch.StandardError = .withOutput, log: String? = nil, inheriting: [Int32] = []) -> ChildProcess.Launch {
        ChildProcess.Launch(name: "sh", executable: "/bin/sh", arguments: ["-c", script], log: log, standardError: standardError, inheritedDescriptors: inheriting)
    }

    @Test func outputArrivesAsItIsWrittenAndTheStatusIsKept() async throws {
        // Standard input is /dev/null, so the read finds its end at once.
        let child = try ChildProcess.start(Self.shell("echo ready; read line; echo \"got $line\" >&2; exit 3"))
        #expect(await child.output.waitFor("ready"))
        #expect(await child.waitForExit() == .exited(3))
        await child.output.waitForEnd()
        #expect(child.output.contents == "ready\ngot \n")
        #expect(await !child.output.waitFor("never printed"), "a wait after the end of output answers false")
    }

    @Test func standardErrorCanBeReadApartAndOutputGoesToTheLog() async throws {
        let log = FileManager.default.temporaryDirectory.appendingPathComponent("stamp-child-\(UUID().uuidString).log").path
        defer { try? FileManager.default.removeItem(atPath: log) }
        let child = try ChildProcess.start(Self.shell("echo report; echo progress >&2", standardError: .apart, log: log))
        #expect(await child.waitForExit() == .exited(0))
        await child.output.waitForEnd()
        await child.errorOutput?.waitForEnd()
        #expect(child.output.contents == "report\n")
        #expect(child.errorOutput?.contents == "progress\n")
        let logged = try String(contentsOfFile: log, encoding: .utf8)
        #expect(logged.contains("report\n") && logged.contains("progress\n"))
    }

    @Test func theChildGetsTheDefaultSignalActionsAndNoOtherDescriptor() async throws {
        let listener = try LoopbackListener()
        defer { listener.close() }
        // Descriptor 3 is the one handed over; 4 and above are closed (or were close-on-exec).
        let child = try ChildProcess.start(Self.shell("ls /proc/self/fd; echo listening; sleep 600", inheriting: [listener.descriptor]))
        #expect(await child.output.waitFor("listening"))
        let descriptors = child.output.contents.split(separator: "\n").dropLast().compactMap { Int($0) }
        // `ls` itself opens one descriptor to read the folder.
        #expect(descriptors.filter { $0 > 3 }.count <= 1, "\(descriptors)")
        #expect(descriptors.contains(3))
        let (termination, killed) = await child.stop()
        #expect(termination == .signalled(SIGTERM), "SIGTERM has its default action in the child")
        #expect(!killed)
    }

    @Test func stopKillsAProcessThatOutlivesItsGrace() async throws {
        let child = try ChildProcess.start(Self.shell("trap '' TERM; echo trapped; while :; do sleep 1; done"))
        #expect(await child.output.waitFor("trapped"))
        let (termination, killed) = await child.stop(signal: SIGTERM, grace: .milliseconds(200))
        #expect(termination == .signalled(SIGKILL))
        #expect(killed)
        child.send(SIGTERM)
        #expect(child.waitUntilExit() == .signalled(SIGKILL), "an ended process is not signalled again")
    }

    @Test func runFailsWithTheEndOfTheOutput() async throws {
        try await ChildProcess.run(Self.shell("exit 0"))
        let error = await #expect(throws: LoadTestingError.self) {
            try await ChildProcess.run(Self.shell("echo broken; exit 2"))
        }
        #expect(error?.code == .processFailed)
        #expect(error?.message.contains("exited with status 2") == true)
        #expect(error?.message.hasSuffix("broken\n") == true)
        await #expect(throws: LoadTestingError.self) {
            try await ChildProcess.run(ChildProcess.Launch(name: "missing", executable: "/nonexistent/program", arguments: []))
        }
    }

    @Test func theSupervisorStopsEveryProcessThenRunsItsStepsLastFirst() async throws {
        let supervisor = ProcessSupervisor(logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }))
        let children = try (0..<3).map { _ in try supervisor.start(Self.shell("echo up; sleep 600")) }
        for child in children { #expect(await child.output.waitFor("up")) }
        let steps = StepLog()
        supervisor.afterwards { steps.append("first") }
        supervisor.afterwards { steps.append("second") }
        await supervisor.stopAll()
        #expect(children.allSatisfy { $0.termination == .signalled(SIGTERM) })
        #expect(steps.entries == ["second", "first"])
        #expect(throws: LoadTestingError.self) { try supervisor.start(Self.shell("true")) }
    }

    @Test func aPortFileIsReadOnlyWhenWhole() throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("stamp-port-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: file) }
        #expect(Readiness.port(inFile: file) == nil)
        try "431".write(toFile: file, atomically: false, encoding: .utf8)
        #expect(Readiness.port(inFile: file) == nil, "a port without its newline may still be being written")
        try "43117\n".write(toFile: file, atomically: false, encoding: .utf8)
        #expect(Readiness.port(inFile: file) == 43117)
    }

    @Test func haproxyConfigurationTakesTheInheritedSocket() {
        let configuration = HAProxy.configuration(backends: [7501, 7502])
        #expect(configuration.contains("    bind fd@3\n"))
        #expect(configuration.contains("    mode tcp\n"))
        #expect(configuration.contains("    balance roundrobin\n    server audit-0 127.0.0.1:7501\n    server audit-1 127.0.0.1:7502\n"))
        #expect(HAProxy.version(in: "HAProxy version 2.6.12-1+deb12u1 2023/12/16 - https://haproxy.org/\n") == "2.6")
        #expect(HAProxy.version(in: "nothing here") == nil)
    }
}

/// Steps run by the supervisor, in order.
private final class StepLog: Sendable {
    private let log = Mutex<[String]>([])
    func append(_ entry: String) { log.withLock { $0.append(entry) } }
    var entries: [String] { log.withLock { $0 } }
}
