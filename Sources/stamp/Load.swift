import ArgumentParser
import StampClient
import StampLoadTesting

struct Load: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Drive a running cluster through the client library and check every ID it gets.",
        discussion: """
        Each client is a separate StampIDClient with its own connections. With --rate above 0 the requests start \
        on a fixed schedule whatever the answers (open loop), and latency counts from the scheduled start; with \
        --rate 0 each client asks again as soon as it has an answer (closed loop), as fast as it can. A progress \
        line goes to standard error once a second; the report ends in one line of key=value figures. The exit \
        status is non-zero when any ID was seen twice or any client saw its IDs out of order.
        """
    )

    @OptionGroup var nodes: NodesOption

    @Option(help: "IDs per second over all clients; 0 asks as fast as possible.")
    var rate: Int = LoadConfiguration.defaults.rate

    @Option(help: ArgumentHelp("How long to run: 500ms, 30s, 2m.", valueName: "duration"))
    var duration: String = "10s"

    @Option(help: "How many independent clients share the rate.")
    var clients: Int = LoadConfiguration.defaults.clients

    @Option(help: "Shard (database) ID to ask for.")
    var shard: Int = LoadConfiguration.defaults.shard

    @Option(help: ArgumentHelp("Prefetch buffer size per client (0: no prefetch).", valueName: "n"))
    var prefetch: Int = 0

    @Option(help: ArgumentHelp("Requests each client keeps in flight before it coalesces further calls into one request (0: every call is its own request).", valueName: "n"))
    var requestsInFlight: Int = StampClientConfiguration.Coalescing().requestsInFlight

    @Option(help: ArgumentHelp("How often each client rereads /v1/cluster.", valueName: "duration"))
    var discoveryInterval: String = "2s"

    @Option(help: ArgumentHelp("Write every call (its ID or failure, and its times) to this file at the end, for `stamp check-history`.", valueName: "path"))
    var record: String?

    func validate() throws {
        guard rate >= 0, rate <= 10_000_000 else { throw ValidationError("--rate must be between 0 and 10000000") }
        guard (1...256).contains(clients) else { throw ValidationError("--clients must be between 1 and 256") }
        guard shard >= 0 else { throw ValidationError("--shard must be 0 or more") }
        guard (0...10_000).contains(prefetch) else { throw ValidationError("--prefetch must be between 0 and 10000") }
        guard (0...1000).contains(requestsInFlight) else { throw ValidationError("--requests-in-flight must be between 0 and 1000") }
        _ = try DurationText.parse(duration, name: "--duration")
        _ = try DurationText.parse(discoveryInterval, name: "--discovery-interval")
    }

    func run() async throws {
        var client = StampClientConfiguration(nodes: nodes.urls, discoveryInterval: try DurationText.parse(discoveryInterval, name: "--discovery-interval"))
        client.token = try nodes.token()
        if prefetch > 0 { client.prefetch = StampClientConfiguration.Prefetch(capacity: prefetch) }
        client.coalescing = requestsInFlight > 0 ? StampClientConfiguration.Coalescing(requestsInFlight: requestsInFlight) : nil
        let configuration = LoadConfiguration(client: client, rate: rate, duration: try DurationText.parse(duration, name: "--duration"), clients: clients, shard: shard, historyPath: record)
        let printer = ProgressPrinter()
        let report = try await LoadRun(configuration: configuration, logger: ClientLogging.logger(level: .error), output: printer.output).run()
        printer.endLine()
        print(report)
        if !report.passed { throw ExitCode.failure }
    }
}
