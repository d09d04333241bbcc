import AsyncHTTPClient
import Foundation

/// Waiting for a started server: for the port it bound, then for its readiness endpoint.
public enum Readiness {
    /// The port in a server's `--port-file`: a decimal number on a line of its own.
    public static func port(inFile path: String) -> Int? {
        guard let data = FileManager.default.contents(atPath: path) else { return nil }
        let text = String(decoding: data, as: UTF8.self)
        guard text.hasSuffix("\n"), let port = Int(text.dropLast()), (1...65_535).contains(port) else { return nil }
        return port
    }

    /// Waits until `child` has written its bound port to `path`, looking every 10 ms for at most
    /// `limit`: a file's appearance gives no signal of its own. Fails at once when the process ends.
    public static func port(writtenTo path: String, by child: ChildProcess, within limit: Duration = .seconds(60)) async throws -> Int {
        let clock = ContinuousClock()
        let deadline = clock.now.advanced(by: limit)
        while clock.now < deadline {
            if let port = port(inFile: path) { return port }
            guard child.isRunning else { throw await ended(child) }
            try await Task.sleep(for: .milliseconds(10))
        }
        throw LoadTestingError(.notReady, "\(child.name) did not report its port within \(limit); \(lastWords(child))")
    }

    /// Waits until `url` answers 200, asking every 100 ms for at most `limit`: a started process
    /// gives no other sign that it is ready. Fails at once when the process ends.
    public static func waitUntilReady(_ child: ChildProcess, url: String, http: HTTPClient, within limit: Duration = .seconds(60)) async throws {
        let clock = ContinuousClock()
        let deadline = clock.now.advanced(by: limit)
        while clock.now < deadline {
            guard child.isRunning else { throw await ended(child) }
            if let response = try? await http.execute(HTTPClientRequest(url: url), timeout: .seconds(1)) {
                _ = try? await response.body.collect(upTo: 1 << 16)
                if response.status == .ok { return }
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw LoadTestingError(.notReady, "\(child.name) was not ready within \(limit); \(lastWords(child))")
    }

    /// The error for a process that ended, once all its output has been read.
    private static func ended(_ child: ChildProcess) async -> LoadTestingError {
        await child.output.waitForEnd()
        return LoadTestingError(.processFailed, "\(child.name) \(child.termination.map(\.description) ?? "ended"); \(lastWords(child))")
    }

    private static func lastWords(_ child: ChildProcess) -> String {
        "the end of its output\(child.log.map { " (\($0))" } ?? ""):\n\(child.output.tail())"
    }
}
