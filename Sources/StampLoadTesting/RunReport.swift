import Foundation

/// The text of a run's report: aligned `label: value` lines, then one line of `key=value`
/// figures that tests and scripts read.
public struct RunReport: Sendable, CustomStringConvertible {
    /// The labelled lines, in order.
    public var lines: [(label: String, value: String)] = []
    /// The figures of the last line, in order.
    public var figures: [(key: String, value: String)] = []

    public init() {}

    /// Labels are padded to this width (the colon included).
    static let labelWidth = 19

    public mutating func line(_ label: String, _ value: String) {
        lines.append((label, value))
    }

    public mutating func figure(_ key: String, _ value: some CustomStringConvertible) {
        figures.append((key, value.description))
    }

    public var description: String {
        let labelled = lines.map { line in
            let label = line.label + ":"
            return label.padding(toLength: max(Self.labelWidth, label.count + 1), withPad: " ", startingAt: 0) + line.value
        }
        return (labelled + [figures.map { "\($0.key)=\($0.value)" }.joined(separator: " ")]).joined(separator: "\n")
    }
}

/// Latency samples in nanoseconds, sorted once, read as percentiles in milliseconds.
public struct LatencySummary: Sendable {
    /// The samples, ascending.
    public let sorted: [Int64]
    /// Decimals of the milliseconds shown.
    public let decimals: Int

    public init(_ samples: [Int64], decimals: Int) {
        sorted = samples.sorted()
        self.decimals = decimals
    }

    /// The sample at `quantile` (nearest rank), 0 without samples.
    public func value(_ quantile: Double) -> Int64 {
        guard !sorted.isEmpty else { return 0 }
        let rank = Int((quantile * Double(sorted.count)).rounded(.up)) - 1
        return sorted[min(sorted.count - 1, max(0, rank))]
    }

    /// The sample at `quantile` in milliseconds, as text.
    public func milliseconds(_ quantile: Double) -> String {
        Self.milliseconds(value(quantile), decimals: decimals)
    }

    /// The largest sample in milliseconds, as text.
    public var maximum: String { Self.milliseconds(sorted.last ?? 0, decimals: decimals) }

    /// `p50 A p99 B p99.9 C max D`.
    public var text: String {
        "p50 \(milliseconds(0.5)) p99 \(milliseconds(0.99)) p99.9 \(milliseconds(0.999)) max \(maximum)"
    }

    /// Nanoseconds as milliseconds with `decimals` decimals.
    public static func milliseconds(_ nanoseconds: Int64, decimals: Int) -> String {
        String(format: "%.\(decimals)f", Double(nanoseconds) / 1e6)
    }
}
