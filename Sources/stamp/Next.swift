import ArgumentParser
import Foundation
import Logging
import StampClient
import StampCore
import StampGeneratorNode

struct Next: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print IDs from a running cluster, one per line, through the client library.",
        discussion: "Applies the client's policy: 2 s per attempt, up to 3 retries 1 s apart, each to another node. `stamp generate` makes IDs in this process instead."
    )

    @OptionGroup var nodes: NodesOption

    @Option(help: "Shard (database) ID to embed.")
    var shard: Int = 0

    /// The most IDs one request to a node with the default configuration may ask for.
    static let maxCount = GeneratorNodeServerConfiguration().node.maxCount

    @Option(help: "How many IDs to print (1 to \(maxCount)).")
    var count: Int = 1

    func validate() throws {
        guard shard >= 0 else { throw ValidationError("--shard must be 0 or more") }
        guard (1...Self.maxCount).contains(count) else { throw ValidationError("--count must be between 1 and \(Self.maxCount)") }
    }

    func run() async throws {
        let logger = ClientLogging.logger(level: .warning)
        let client = StampIDClient(configuration: StampClientConfiguration(nodes: nodes.urls, discoveryInterval: nil, token: try nodes.token()), logger: logger)
        let ids: [StampID]
        do {
            ids = try await client.nextIDs(shard: shard, count: count)
        } catch {
            await client.shutdown()
            printError("stamp next: \(error)")
            throw ExitCode.failure
        }
        await client.shutdown()
        print(ids.map(\.description).joined(separator: "\n"))
    }
}

/// The `--nodes` option shared by the commands that talk to a running cluster.
struct NodesOption: ParsableArguments {
    /// Where a node listens by default.
    static let defaultNode = GeneratorNodeServerConfiguration().server

    @Option(help: ArgumentHelp("Comma-separated base URLs of generator nodes.", valueName: "urls"))
    var nodes: String = "http://\(defaultNode.host):\(defaultNode.port)"

    @Option(help: ArgumentHelp("File holding the nodes' bearer token; the token itself may come in STAMP_TOKEN instead. [env: STAMP_TOKEN_FILE] (default: none)", valueName: "path"))
    var tokenFile: String?

    /// The nodes' bearer token, from the token file or `STAMP_TOKEN`.
    func token() throws -> String? {
        try OptionValues().secret(file: tokenFile, fileVariable: "STAMP_TOKEN_FILE", variable: "STAMP_TOKEN")
    }

    /// The URLs, trimmed, without empty entries.
    var urls: [String] {
        nodes.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
    }

    func validate() throws {
        guard !urls.isEmpty else { throw ValidationError("--nodes must list at least one URL, such as http://\(Self.defaultNode.host):\(Self.defaultNode.port)") }
    }
}

/// Logging for the client commands: to standard error, so that standard output holds only results.
enum ClientLogging {
    static func logger(level: Logger.Level) -> Logger {
        var logger = Logger(label: "stamp") { label in StreamLogHandler.standardError(label: label) }
        logger.logLevel = level
        return logger
    }
}
