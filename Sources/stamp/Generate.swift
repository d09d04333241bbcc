import ArgumentParser
import StampCore

struct Generate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print IDs generated in this process, one per line.",
        discussion: "For scripts and single-process use. A fleet asks `stamp serve` nodes instead, which hold node IDs under leases."
    )

    enum Format: String, ExpressibleByArgument, CaseIterable {
        case decimal, text, json
    }

    @Option(help: "How many IDs to print (1 to 1,000,000).")
    var count: Int = 1

    @Option(help: "Shard (database) ID to embed.")
    var shard: Int = 0

    @Option(help: "Node ID to embed. Only one process may use a node ID at a time.")
    var node: Int = 0

    @Option(help: "decimal, text (13-character sortable form) or json (a JSON string per line).")
    var format: Format = .decimal

    @OptionGroup var layoutOptions: LayoutOptions

    func validate() throws {
        let layout = try layoutOptions.resolved()
        guard (1...IDGenerator.maxBatch).contains(count) else { throw ValidationError("--count must be between 1 and \(IDGenerator.maxBatch)") }
        guard (0...layout.maxShard).contains(shard) else { throw ValidationError("--shard must be between 0 and \(layout.maxShard) for this layout") }
        guard (0...layout.maxNode).contains(node) else { throw ValidationError("--node must be between 0 and \(layout.maxNode) for this layout") }
    }

    func run() async throws {
        let layout = try layoutOptions.resolved()
        try layout.checkLifetime(at: SystemWallClock().unixMilliseconds(), minimumLifetimeMilliseconds: 0)
        let generator = try IDGenerator(layout: layout, node: node)
        var output = ""
        var remaining = count
        while remaining > 0 {
            let batch = min(remaining, Int(layout.idsPerMillisecond))
            for id in try await generator.nextWaiting(shard: shard, count: batch, clock: ContinuousClock()) {
                switch format {
                case .decimal: output += id.description
                case .text: output += id.text
                case .json: output += "\"\(id.description)\""
                }
                output += "\n"
            }
            remaining -= batch
            print(output, terminator: "")
            output = ""
        }
    }
}
