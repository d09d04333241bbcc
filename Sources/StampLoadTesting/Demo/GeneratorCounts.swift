/// What generator nodes have served, from the Prometheus text of their `/metrics`: the ID
/// requests answered 200 (`stamp_http_request_duration_seconds_count{route="/v1/ids",status="200"}`)
/// and the IDs issued (`stamp_ids_issued_total`, every shard).
public struct GeneratorCounts: Sendable, Equatable {
    public var requests: Int
    public var ids: Int

    public init(requests: Int = 0, ids: Int = 0) {
        self.requests = requests
        self.ids = ids
    }

    /// The counts in one node's metrics text; a metric that is missing counts 0.
    public init(metrics text: Substring) {
        self.init()
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            guard let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...]) else { continue }
            let series = line[..<space]
            if series.hasPrefix("stamp_ids_issued_total") {
                ids += Int(value)
            } else if series.hasPrefix("stamp_http_request_duration_seconds_count{"), series.contains(#"route="/v1/ids""#), series.contains(#"status="200""#) {
                requests += Int(value)
            }
        }
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
