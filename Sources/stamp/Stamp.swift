import ArgumentParser

@main
struct Stamp: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stamp",
        abstract: "Globally unique, time-ordered 64-bit IDs for a fleet of servers.",
        subcommands: [Demo.self, Serve.self, Audit.self, Generate.self, Next.self, Load.self, CheckHistory.self, Decode.self, Layout.self, Bench.self]
    )
}
