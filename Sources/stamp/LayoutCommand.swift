import ArgumentParser
import StampCore

struct Layout: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "layout",
        abstract: "Print an ID layout's fields, capacity and the date it runs out."
    )

    @OptionGroup var layoutOptions: LayoutOptions

    func run() throws {
        let layout = try layoutOptions.resolved()
        let now = SystemWallClock().unixMilliseconds()
        let remainingDays = (layout.lastUnixMilliseconds - now) / 86_400_000
        print("""
        layout      \(layout)
        time        \(layout.timeBits) bits  milliseconds since \(RFC3339.format(unixMilliseconds: layout.epochUnixMilliseconds))
        sequence    \(layout.sequenceBits) bits  \(layout.idsPerMillisecond) IDs per millisecond per node (\(layout.idsPerSecondPerNode) per second)
        shard       \(layout.shardBits) bits  \(layout.shardCount) shards (0...\(layout.maxShard))
        node        \(layout.nodeBits) bits  \(layout.nodeCount) nodes (0...\(layout.maxNode))
        runs out    \(RFC3339.format(unixMilliseconds: layout.lastUnixMilliseconds)) (\(remainingDays) days from now)
        """)
    }
}
