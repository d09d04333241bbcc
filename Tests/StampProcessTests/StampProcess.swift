import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// A `stamp` process started from the package's build folder, for tests of the real binary.
final class StampProcess: @unchecked Sendable {
    let process = Process()
    let port: Int
    /// Standard output and error together, as they arrive.
    let output = OutputWatcher()

    /// The `stamp` binary built beside the test bundle, or the one `STAMP_BINARY` names.
    static var binary: URL {
        if let path = ProcessInfo.processInfo.environment["STAMP_BINARY"] { return URL(fileURLWithPath: path) }
        return URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("stamp")
    }

    /// Starts `stamp serve` on loopback with `arguments`, on `port` or a free one, logging at
    /// `info`, the level of the lines ``waitUntilReady()`` waits for.
    init(serve arguments: [String], directory: URL, port: Int? = nil) throws {
        self.port = try port ?? Self.freePort()
        process.executableURL = Self.binary
        process.arguments = ["serve", "--listen", "127.0.0.1:\(self.port)", "--log-level", "info"] + arguments
        process.currentDirectoryURL = directory
        process.standardOutput = output.pipe
        process.standardError = output.pipe
        try process.run()
    }

    /// Starts `stamp serve` on loopback port 0 with `arguments` and a port file in `directory`,
    /// and reads the port it bound from that file once its log says it listens.
    init(serveOnPortZero arguments: [String], directory: URL) async throws {
        let portFile = directory.appendingPathComponent("port-\(UUID().uuidString)")
        process.executableURL = Self.binary
        process.arguments = ["serve", "--listen", "127.0.0.1:0", "--port-file", portFile.path, "--log-level", "info"] + arguments
        process.currentDirectoryURL = directory
        process.standardOutput = output.pipe
        process.standardError = output.pipe
        try process.run()
        guard await output.waitFor("stamp.port="), let port = Int(try String(contentsOf: portFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)) else {
            throw ProcessTestError("node on port 0 wrote no port file: \(output.contents)")
        }
        self.port = port
    }

    var baseURL: String { "http://127.0.0.1:\(port)" }

    /// Stops the process with `signal` and waits for it to end.
    func stop(signal: Int32 = SIGTERM) {
        guard process.isRunning else { return }
        kill(process.processIdentifier, signal)
        process.waitUntilExit()
    }

    /// Waits for the node's log to say that it listens and issues IDs, then checks that
    /// `/health/ready` agrees.
    func waitUntilReady() async throws {
        for line in ["Server started and listening", "issuing IDs"] where await !output.waitFor(line) {
            throw ProcessTestError("node on port \(port) exited before it was ready: \(output.contents)")
        }
        let (_, status) = try await HTTP.get("\(baseURL)/health/ready")
        guard status == 200 else { throw ProcessTestError("node on port \(port) logged that it issues IDs but answers \(status) to /health/ready") }
    }

    static func freePort() throws -> Int {
        let socket = Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(socket) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(socket, $0, length) == 0 && getsockname(socket, $0, &length) == 0 }
        }
        guard bound else { throw ProcessTestError("no free port") }
        return Int(UInt16(bigEndian: address.sin_port))
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

    static func get(_ url: String, accept: String = "application/json") async throws -> (Data, Int) {
        var request = URLRequest(url: URL(string: url)!)
        request.setValue(accept, forHTTPHeaderField: "Accept")
        let (data, response) = try await session.data(for: request)
        return (data, (response as? HTTPURLResponse)?.statusCode ?? 0)
    }
}

/// A child process's output, read as it arrives, so that a test waits for a line the process
/// prints instead of sleeping or polling.
final class OutputWatcher: @unchecked Sendable {
    let pipe = Pipe()
    private let lock = NSLock()
    private var text = ""
    private var ended = false
    private var waiters: [(needle: String, continuation: CheckedContinuation<Bool, Never>)] = []

    init() {
        pipe.fileHandleForReading.readabilityHandler = { [weak self] handle in
            let data = handle.availableData
            if data.isEmpty {
                handle.readabilityHandler = nil
                self?.finish()
            } else {
                self?.append(String(decoding: data, as: UTF8.self))
            }
        }
    }

    /// Everything read so far.
    var contents: String { lock.withLock { text } }

    /// Waits until the output contains `needle`; `false` when the output ends first.
    func waitFor(_ needle: String) async -> Bool {
        await withCheckedContinuation { continuation in
            let answer: Bool? = lock.withLock {
                if text.contains(needle) { return true }
                if ended { return false }
                waiters.append((needle, continuation))
                return nil
            }
            if let answer { continuation.resume(returning: answer) }
        }
    }

    /// Marks the output ended (the process exited), answering every waiter still waiting.
    func finish() {
        let waiting = lock.withLock {
            ended = true
            defer { waiters = [] }
            return waiters
        }
        waiting.forEach { $0.continuation.resume(returning: false) }
    }

    private func append(_ chunk: String) {
        let ready = lock.withLock {
            text += chunk
            let ready = waiters.filter { text.contains($0.needle) }
            waiters.removeAll { text.contains($0.needle) }
            return ready
        }
        ready.forEach { $0.continuation.resume(returning: true) }
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
