import Foundation
import StampLoadTesting
import Synchronization
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// A `stamp serve` process started from the package's build folder, for tests of the real binary.
final class StampProcess: Sendable {
    let process: ChildProcess
    /// Where the node writes the port it bound.
    private let portFile: String
    private let boundPort = Mutex<Int?>(nil)

    /// The `stamp` binary built beside the test bundle, or the one `STAMP_BINARY` names.
    static var binary: URL {
        if let path = ProcessInfo.processInfo.environment["STAMP_BINARY"] { return URL(fileURLWithPath: path) }
        return URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("stamp")
    }

    /// Starts `stamp serve` on loopback with `arguments`, on `port` (0: one the system chooses,
    /// which ``waitUntilReady()`` learns), logging at `info`, the level of the lines it waits for.
    init(serve arguments: [String], directory: URL, port: Int = 0) throws {
        portFile = directory.appendingPathComponent("node-\(UUID().uuidString).port").path
        process = try ChildProcess.start(ChildProcess.Launch(
            name: "stamp serve",
            executable: Self.binary.path,
            arguments: ["serve", "--listen", "127.0.0.1:\(port)", "--port-file", portFile, "--log-level", "info"] + arguments,
            directory: directory.path
        ))
    }

    /// Standard output and error together, as they arrive.
    var output: OutputWatcher { process.output }

    /// The port the node bound; known once ``waitUntilReady()`` has returned.
    var port: Int {
        guard let port = boundPort.withLock({ $0 }) else { preconditionFailure("the port of a node is known once it is ready") }
        return port
    }

    var baseURL: String { "http://127.0.0.1:\(port)" }

    /// Stops the process with `signal` and waits for it to end.
    func stop(signal: Int32 = SIGTERM) {
        process.send(signal)
        process.waitUntilExit()
    }

    /// Waits for the node's log to say that it listens (which it says once it has written its
    /// port file) and issues IDs, reads the port it bound, then checks that `/health/ready` agrees.
    func waitUntilReady() async throws {
        for line in ["listening", "stamp.port=", "issuing IDs"] where await !output.waitFor(line) {
            throw ProcessTestError("the node exited before it was ready: \(output.contents)")
        }
        guard let port = Readiness.port(inFile: portFile) else { throw ProcessTestError("the node logged that it listens but wrote no port file: \(output.contents)") }
        boundPort.withLock { $0 = port }
        let (_, status) = try await HTTP.get("\(baseURL)/health/ready")
        guard status == 200 else { throw ProcessTestError("node on port \(port) logged that it issues IDs but answers \(status) to /health/ready") }
    }
}

struct ProcessTestError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// Plain HTTP GETs for process tests.
enum HTTP {
    static let session: URLSession = {
        let configuration = URLSessionConfiguration.ephemeral
        configuration.timeoutIntervalForRequest = 2
        configuration.httpMaximumConnectionsPerHost = 16
        return URLSession(configuration: configuration)
    }()

    static func get(_ url: String, accept: String = "application/json", token: String? = nil) async throws -> (Data, Int) {
        var request = URLRequest(url: URL(string: url)!)
        request.setValue(accept, forHTTPHeaderField: "Accept")
        if let token { request.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization") }
        let (data, response) = try await session.data(for: request)
        return (data, (response as? HTTPURLResponse)?.statusCode ?? 0)
    }
}

/// A count that tasks raise and a test awaits, for faults that must land while work is under way.
final class ProgressCount: @unchecked Sendable {
    private let lock = NSLock()
    private var count = 0
    private var waiters: [(target: Int, continuation: CheckedContinuation<Void, Never>)] = []

    func increment() {
        let ready = lock.withLock {
            count += 1
            let ready = waiters.filter { $0.target <= count }
            waiters.removeAll { $0.target <= count }
            return ready
        }
        ready.forEach { $0.continuation.resume() }
    }

    /// Waits until the count reaches `target`.
    func waitUntil(_ target: Int) async {
        await withCheckedContinuation { continuation in
            let reached = lock.withLock {
                if count >= target { return true }
                waiters.append((target, continuation))
                return false
            }
            if reached { continuation.resume() }
        }
    }
}
