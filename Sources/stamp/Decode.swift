import ArgumentParser
import StampCore

struct Decode: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the time, sequence, shard and node of IDs.",
        discussion: "Accepts decimal IDs and the 13-character text form. A bad ID is reported by name and makes the exit status non-zero; the others are still decoded."
    )

    @Flag(help: "Print one JSON object per ID with the keys id, time, sequence, shard, node.")
    var json = false

    @OptionGroup var layoutOptions: LayoutOptions

    @Argument(help: "IDs in decimal or text form.")
    var ids: [String]

    func validate() throws {
        guard !ids.isEmpty else { throw ValidationError("give at least one ID") }
    }

    func run() throws {
        let layout = try layoutOptions.resolved()
        var failures = 0
        for text in ids {
            do {
                let id = try StampID(parsing: text)
                let fields = id.fields(in: layout)
                let time = RFC3339.format(unixMilliseconds: fields.unixMilliseconds)
                if json {
                    print(#"{"id":"\#(id)","time":"\#(time)","sequence":\#(fields.sequence),"shard":\#(fields.shard),"node":\#(fields.node)}"#)
                } else {
                    print("\(id) time=\(time) sequence=\(fields.sequence) shard=\(fields.shard) node=\(fields.node)")
                }
            } catch {
                failures += 1
                printError("error: \(error)")
            }
        }
        if failures > 0 { throw ExitCode.failure }
    }
}
