import Foundation
import Logging
import StampClient
import StampCore

/// What `stamp load` runs: clients of a running cluster, each a ``StampIDClient`` of its own.
public struct LoadConfiguration: Sendable {
    /// Each client's configuration (the nodes, prefetch, coalescing).
    public var client: StampClientConfiguration
    /// IDs per second over all clients; 0 asks as fast as possible (closed loop).
    public var rate: Int
    /// How long to run.
    public var duration: Duration
    /// How many independent clients share the rate.
    public var clients: Int
    /// The shard (database) ID to ask for.
    public var shard: Int
    /// Where to write every call's outcome and times (``CallHistory``) at the end; `nil` keeps none.
    public var historyPath: String?

    public init(client: StampClientConfiguration, rate: Int = 1000, duration: Duration = .seconds(10), clients: Int = 1, shard: Int = 0, historyPath: String? = nil) {
        self.client = client
        self.rate = rate
        self.duration = duration
        self.clients = clients
        self.shard = shard
        self.historyPath = historyPath
    }

    /// The defaults, for a cluster that has no nodes yet.
    public static var defaults: LoadConfiguration { LoadConfiguration(client: StampClientConfiguration(nodes: [])) }

    /// Most calls of one open-loop client in flight at once.
    public static let inFlightLimit = 4096
    /// How many IDs a closed-loop client records before it takes the ledger's lock.
    static let closedLoopBatch = 4096
}

/// Drives a cluster through the client library and checks every ID it gets.
///
/// With a rate above 0 each client starts its share of the calls on a fixed schedule whatever the
/// answers (open loop), and latency counts from each call's scheduled start, so that a slow
/// answer cannot hide the queue behind it; with rate 0 each client asks again as soon as it has
/// an answer (closed loop).
public struct LoadRun: Sendable {
    public let configuration: LoadConfiguration
    public let logger: Logger
    /// Hears the progress line once a second, and the first failure of each kind.
    public let output: RunOutput

    public init(configuration: LoadConfiguration, logger: Logger, output: RunOutput) {
        self.configuration = configuration
        self.logger = logger
        self.output = output
    }

    /// Runs for the configured duration and returns the report; writes the history file, when one
    /// is configured, before it returns.
    public func run() async throws -> LoadReport {
        let output = self.output
        let recorder = RequestRecorder { outcome, reason, detail in
            switch outcome {
            case .notStarted: output.note("calls are not started while \(LoadConfiguration.inFlightLimit) are in flight: the client cannot keep up with the rate")
            case .failed: output.note("first \(reason) failure: \(detail)")
            }
        }
        let history = configuration.historyPath.map { _ in CallHistory() }
        let clients = (0..<configuration.clients).map { index in
            LoadClient(client: StampIDClient(configuration: configuration.client, logger: logger), ids: IDLedger(), calls: recorder, history: history.map { (index, $0) })
        }
        let clock = ContinuousClock()
        let start = clock.now
        let end = start.advanced(by: configuration.duration)
        let shard = configuration.shard
        let ratePerClient = Double(configuration.rate) / Double(configuration.clients)

        await withTaskGroup(of: Void.self) { services in
            for client in clients {
                services.addTask { try? await client.client.run() }
            }
            await withTaskGroup(of: Void.self) { drivers in
                for client in clients {
                    drivers.addTask {
                        if ratePerClient > 0 {
                            let runner = OpenLoopRunner(clock: clock, inFlightLimit: LoadConfiguration.inFlightLimit)
                            await client.openLoop(shard: shard, schedule: OpenLoopSchedule(rates: [ratePerClient], duration: configuration.duration), runner: runner, from: start)
                        } else {
                            await client.closedLoop(shard: shard, clock: clock, end: end)
                        }
                    }
                }
                drivers.addTask {
                    await ProgressTicker.run(clock: clock, from: start, until: end) { seconds in
                        let window = recorder.drainWindow()
                        let retries = clients.map(\.client.statistics.retries).reduce(0, +)
                        let p99 = LatencySummary(window.latencies, decimals: LoadReport.decimals).milliseconds(0.99)
                        output.progress("t=\(seconds)s ids/s=\(window.answered) errors=\(window.unanswered) retries=\(retries) p99_ms=\(p99)")
                    }
                }
                await drivers.waitForAll()
            }
            services.cancelAll()
        }

        if let history, let path = configuration.historyPath {
            do {
                try history.write(to: path)
            } catch {
                throw LoadTestingError(.setupFailed, "could not write the history file \(path)", cause: error)
            }
        }
        return LoadReport(calls: recorder.total, ledgers: clients.map(\.ids), statistics: clients.map(\.client.statistics), elapsed: start.duration(to: clock.now))
    }
}

/// One client of a load run: a ``StampIDClient``, the IDs it received, and the recorder of its calls
/// (which the clients of a run may share), and the history its calls go to, under its index, if any.
struct LoadClient: Sendable {
    let client: StampIDClient<ContinuousClock>
    let ids: IDLedger
    let calls: RequestRecorder
    let history: (client: Int, calls: CallHistory)?

    init(client: StampIDClient<ContinuousClock>, ids: IDLedger, calls: RequestRecorder, history: (client: Int, calls: CallHistory)? = nil) {
        self.client = client
        self.ids = ids
        self.calls = calls
        self.history = history
    }

    /// Adds a call that started at `startedMicroseconds` and ends now to the history, if the run keeps one.
    func remember(_ outcome: CallRecord.Outcome, startedMicroseconds: Int64) {
        if let history { history.calls.record(client: history.client, outcome: outcome, startedMicroseconds: startedMicroseconds) }
    }

    /// Asks for one ID of `shard` at each request of `schedule`, started by `runner` from `start`,
    /// and records each answer, failure and request not started.
    func openLoop(shard: Int, schedule: OpenLoopSchedule, runner: OpenLoopRunner<ContinuousClock>, from start: ContinuousClock.Instant) async {
        let clock = runner.clock
        await runner.run(schedule, from: start) { _, scheduled in
            let floor = ids.floor
            let started = history.map { _ in CallHistory.now() } ?? 0
            do throws(StampClientError) {
                let id = try await client.nextID(shard: shard)
                calls.answered(latency: scheduled.duration(to: clock.now))
                ids.record(id, floor: floor)
                remember(.id(id.rawValue), startedMicroseconds: started)
            } catch {
                calls.failed(reason: error.code.rawValue, detail: "\(error)")
                remember(.failed(error.code.rawValue), startedMicroseconds: started)
            }
        } notStarted: { _ in
            calls.notStarted(reason: "not-started")
        }
    }

    /// Asks for one ID of `shard` again as soon as each answer comes, until `end`.
    func closedLoop(shard: Int, clock: ContinuousClock, end: ContinuousClock.Instant) async {
        var batch = RequestRecorder.Batch()
        var received = IDLedger.Batch()
        var now = clock.now
        while now < end {
            let started = now
            let startedMicroseconds = history.map { _ in CallHistory.now() } ?? 0
            do throws(StampClientError) {
                let id = try await client.nextID(shard: shard)
                now = clock.now
                batch.answered(latency: started.duration(to: now))
                received.record(id)
                remember(.id(id.rawValue), startedMicroseconds: startedMicroseconds)
            } catch {
                now = clock.now
                calls.failed(reason: error.code.rawValue, detail: "\(error)")
                remember(.failed(error.code.rawValue), startedMicroseconds: startedMicroseconds)
            }
            if received.ids.count >= LoadConfiguration.closedLoopBatch {
                calls.merge(&batch)
                ids.merge(&received)
            }
        }
        calls.merge(&batch)
        ids.merge(&received)
    }
}
