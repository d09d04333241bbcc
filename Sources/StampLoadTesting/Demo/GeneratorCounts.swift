/// Sums over the series of the Prometheus text that servers answer `/metrics` with.
enum PrometheusText {
    /// The sum of the values of `metric`'s series whose labels contain each of `labels`, text
    /// such as `status="200"` or `route="/v1/` (a prefix); 0 when there is none.
    static func sum(_ metric: String, labels: [String] = [], in text: Substring) -> Double {
        var total = 0.0
        for line in text.split(separator: "\n") where line.hasPrefix(metric) {
            let rest = line.dropFirst(metric.count)
            guard rest.first == "{" || rest.first == " ", let space = rest.lastIndex(of: " "), let value = Double(rest[rest.index(after: space)...]) else { continue }
            let series = rest[..<space]
            if labels.allSatisfy({ series.contains($0) }) { total += value }
        }
        return total
    }
}

/// What generator nodes have served, from their `/metrics`: the ID requests answered 200
/// (`stamp_http_request_duration_seconds_count{route="/v1/ids",status="200"}`) and the IDs issued
/// (`stamp_ids_issued_total`, every shard).
public struct GeneratorCounts: Sendable, Equatable {
    public var requests: Int
    public var ids: Int

    public init(requests: Int = 0, ids: Int = 0) {
        self.requests = requests
        self.ids = ids
    }

    /// The counts in one node's metrics text; a metric that is missing counts 0.
    public init(metrics text: Substring) {
        requests = Int(PrometheusText.sum("stamp_http_request_duration_seconds_count", labels: [#"route="/v1/ids""#, #"status="200""#], in: text))
        ids = Int(PrometheusText.sum("stamp_ids_issued_total", in: text))
    }

    /// Both counts of several nodes together.
    public static func + (left: GeneratorCounts, right: GeneratorCounts) -> GeneratorCounts {
        GeneratorCounts(requests: left.requests + right.requests, ids: left.ids + right.ids)
    }

    /// What was served between two readings.
    public static func - (later: GeneratorCounts, earlier: GeneratorCounts) -> GeneratorCounts {
        GeneratorCounts(requests: later.requests - earlier.requests, ids: later.ids - earlier.ids)
    }
}
