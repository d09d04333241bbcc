import ArgumentParser
import StampCore

/// The `--layout` option shared by the commands that make or read IDs.
struct LayoutOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("ID layout: field widths summing to 63 and the epoch.", valueName: "spec"))
    var layout: String = IDLayout.default.description

    func resolved() throws -> IDLayout {
        do {
            return try IDLayout(parsing: layout)
        } catch {
            throw ValidationError(error.description)
        }
    }

    func validate() throws {
        _ = try resolved()
    }
}
