import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// A `stamp` process started from the package's build folder, for tests of the real binary.
final class StampProcess: @unchecked Sendable {
    let process = Process()
    let port: Int
    let output: URL

    /// The `stamp` binary built beside the test bundle, or the one `STAMP_BINARY` names.
    static var binary: URL {
        if let path = ProcessInfo.processInfo.environment["STAMP_BINARY"] { return URL(fileURLWithPath: path) }
        return URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("stamp")
    }

    /// Starts `stamp serve` on loopback with `arguments`, on `port` or a free one.
    init(serve arguments: [String], directory: URL, port: Int? = nil) throws {
        self.port = try port ?? Self.freePort()
        output = directory.appendingPathComponent("node-\(self.port)-\(UUID().uuidString.prefix(8)).log")
        _ = FileManager.default.createFile(atPath: output.path, contents: nil)
        process.executableURL = Self.binary
        process.arguments = ["serve", "--listen", "127.0.0.1:\(self.port)"] + arguments
        process.currentDirectoryURL = directory
        let handle = try FileHandle(forWritingTo: output)
        process.standardOutput = handle
        process.standardError = handle
        try process.run()
    }

    var baseURL: String { "http://127.0.0.1:\(port)" }

    /// Stops the process with `signal` and waits for it to end.
    func stop(signal: Int32 = SIGTERM) {
        guard process.isRunning else { return }
        kill(process.processIdentifier, signal)
        process.waitUntilExit()
    }

    /// Waits until `/health/ready` answers 200, polling at most `attempts` times 50 ms apart: a
    /// started process gives no other signal that it is ready.
    func waitUntilReady(attempts: Int = 300) async throws {
        for _ in 0..<attempts {
            guard process.isRunning else { throw ProcessTestError("node on port \(port) exited: \(log)") }
            if let (_, status) = try? await HTTP.get("\(baseURL)/health/ready"), status == 200 { return }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw ProcessTestError("node on port \(port) did not become ready: \(log)")
    }

    var log: String { (try? String(contentsOf: output, encoding: .utf8)) ?? "" }

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
