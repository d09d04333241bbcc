import Foundation
import NIOCore
import NIOPosix
import StampCore
import StampLoadTesting

/// Sends `GET URL` at a fixed rate whatever the answers (open loop) and prints the latency of
/// each request counted from when it was due, so that a server that falls behind shows its
/// queue in the percentiles instead of slowing the client down (coordinated omission).
///
/// Arguments: the URL (`http://HOST:PORT/PATH?QUERY`), requests per second (default 20000),
/// seconds (default 10), connections (default 64), the latency in milliseconds above which an
/// answered request counts as late (default 2). The requests start from timers on one event
/// loop of its own (StampLoadTesting's `EventLoopOpenLoop`, waking at most every 100 µs) and go
/// over keep-alive connections (its `PipelinedHTTPClient`: to an idle connection, else pipelined
/// on the least busy one). Ends with one line of `key=value` figures; the exit status is 0 when
/// the run could be driven, whatever the figures.
@main
enum FixedRateCommand {
    /// How long a request may wait for its answer before it counts as failed.
    static let timeout = TimeAmount.seconds(2)
    /// Requests due while this many are in flight are not started and count as not started.
    static let inFlightLimit = 10_000
    /// The least time between two wake-ups of the schedule: what a request may start late by.
    static let wakeInterval = Duration.microseconds(100)

    static func main() async throws {
        let arguments = Array(CommandLine.arguments.dropFirst())
        guard let address = arguments.first, let url = URLComponents(string: address), url.scheme == "http",
              let host = url.host, let port = url.port,
              let rate = arguments.count > 1 ? Int(arguments[1]) : 20_000, rate > 0,
              let seconds = arguments.count > 2 ? Int(arguments[2]) : 10, seconds > 0,
              let connections = arguments.count > 3 ? Int(arguments[3]) : 64, connections > 0,
              let lateAfter = arguments.count > 4 ? Double(arguments[4]) : 2, lateAfter > 0
        else {
            FileHandle.standardError.write(Data("usage: FixedRateLoad http://HOST:PORT/PATH [requests/s] [seconds] [connections] [late after ms]\n".utf8))
            exit(2)
        }
        let target = (url.percentEncodedPath.isEmpty ? "/" : url.percentEncodedPath) + (url.percentEncodedQuery.map { "?\($0)" } ?? "")

        let eventLoops = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let eventLoop = eventLoops.next()
        let client = try await PipelinedHTTPClient.connect(host: host, port: port, connections: connections, eventLoop: eventLoop)
        let request = PipelinedHTTPClient.Request(method: .GET, target: target, host: client.authority)
        let recorder = RequestRecorder()
        let startLag = StartLag()
        let runner = EventLoopOpenLoop(eventLoop: eventLoop, inFlightLimit: inFlightLimit, wakeInterval: wakeInterval)

        let cpuBefore = ProcessCPU.ownTime
        let started = ContinuousClock.now
        await runner.run(OpenLoopSchedule(rates: [Double(rate)], duration: .seconds(seconds)), from: started) { _, due in
            startLag.record(due.duration(to: .now))
            client.send(request, timeout: timeout, bodyLimit: 0) { result in
                switch result {
                case .success(let answer) where answer.status == .ok:
                    recorder.answered(latency: due.duration(to: .now))
                case .success(let answer):
                    recorder.failed(reason: "HTTP \(answer.status.code)")
                case .failure(let error):
                    recorder.failed(reason: error.code.rawValue)
                }
                runner.finished()
            }
        } notStarted: { _ in
            recorder.notStarted(reason: "in-flight limit")
        }
        let elapsed = started.duration(to: .now)
        let cpu = ProcessCPU.ownTime.flatMap { after in cpuBefore.map { after - $0 } }
        let lag = LatencySummary(await startLag.samples(on: eventLoop), decimals: 2)
        try? await client.close().get()
        try? await eventLoops.shutdownGracefully()

        let total = recorder.total
        let latency = LatencySummary(total.latencies, decimals: 2)
        let late = total.latencies.count { Double($0) > lateAfter * 1e6 }
        var figures: [(String, String)] = [
            ("rate", "\(rate)"),
            ("seconds", "\(seconds)"),
            ("connections", "\(connections)"),
            ("sent", "\(total.answered + total.failed)"),
            ("answered", "\(total.answered)"),
            ("failed", "\(total.failed)"),
            ("not_started", "\(total.notStarted)"),
            ("late", "\(late)"),
            ("late_after_ms", "\(lateAfter)"),
            ("answered_per_s", String(format: "%.0f", Double(total.answered) / (Double(elapsed.wholeNanoseconds) / 1e9))),
            ("p50_ms", latency.milliseconds(0.5)),
            ("p99_ms", latency.milliseconds(0.99)),
            ("p99.9_ms", latency.milliseconds(0.999)),
            ("max_ms", latency.maximum),
            ("start_lag_p99_ms", lag.milliseconds(0.99)),
            ("start_lag_max_ms", lag.maximum),
        ]
        if let cpu { figures.append(("client_cpu_us_per_request", String(format: "%.1f", Double(cpu.wholeNanoseconds) / 1e3 / Double(max(1, total.answered + total.failed))))) }
        let reasons = total.reasons.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value)" }
        if !reasons.isEmpty { FileHandle.standardError.write(Data("FixedRateLoad: unanswered: \(reasons.joined(separator: ", "))\n".utf8)) }
        print(figures.map { "\($0.0)=\($0.1)" }.joined(separator: " "))
    }
}

/// How late each request started after it was due: the client's own share of the latency.
final class StartLag: @unchecked Sendable {
    /// Used on the client's event loop only.
    private var nanoseconds: [Int64] = []

    /// Records one request's lag; on the event loop.
    func record(_ lag: Duration) {
        nanoseconds.append(lag.wholeNanoseconds)
    }

    /// The lags recorded, read on `eventLoop` after the run.
    func samples(on eventLoop: any EventLoop) async -> [Int64] {
        (try? await eventLoop.submit { self.nanoseconds }.get()) ?? []
    }
}
