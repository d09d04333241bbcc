import ArgumentParser

/// Durations written with a unit: `250ms`, `10s`, `2m`. The one reader of duration text; every
/// command's duration flags go through it.
enum DurationText {
    static func parse(_ text: String, name: String) throws -> Duration {
        let units: [(String, Int64)] = [("ms", 1), ("s", 1000), ("m", 60_000)]
        for (unit, milliseconds) in units where text.hasSuffix(unit) {
            let number = text.dropLast(unit.count)
            if !number.isEmpty, number.allSatisfy(\.isASCII), number.allSatisfy(\.isNumber), let value = Int64(number), value <= 86_400_000 {
                return .milliseconds(value * milliseconds)
            }
        }
        throw ValidationError("\(name) must be a whole number with a unit (ms, s or m), such as 500ms or 10s; got '\(text)'")
    }

    /// The text ``parse(_:name:)`` reads back as `duration`, in the largest unit that keeps it whole.
    static func format(_ duration: Duration) -> String {
        let milliseconds = duration.wholeMilliseconds
        if milliseconds != 0, milliseconds % 60_000 == 0 { return "\(milliseconds / 60_000)m" }
        if milliseconds != 0, milliseconds % 1000 == 0 { return "\(milliseconds / 1000)s" }
        return "\(milliseconds)ms"
    }
}
