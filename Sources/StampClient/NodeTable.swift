/// The client's view of the nodes: which are healthy, which cool down after a failure, and which
/// to ask next. A pure state machine: callers pass the time and perform what it decides.
///
/// Requests go to the healthy node with the fewest requests in flight, so that a node that hangs
/// soon stops receiving new ones; ties rotate. A node that fails cools down, then waits for a
/// probe of `GET /health/ready` before it is used again.
struct NodeTable<Instant: InstantProtocol> where Instant.Duration == Swift.Duration {
    /// The health of one node.
    enum Health: Equatable {
        case healthy
        /// Skipped until `until`, then probed.
        case coolingDown(until: Instant)
        /// Cooled down; a probe is in flight.
        case probing
    }

    struct Node {
        let address: String
        var health: Health = .healthy
        var inFlight = 0
        /// When the node last failed, to prefer the least recently failed among unhealthy nodes.
        var lastFailure: Instant?
    }

    private(set) var nodes: [Node]
    let coolDown: Duration
    private var rotation = 0

    init(addresses: [String], coolDown: Duration) {
        nodes = Self.unique(addresses).map { Node(address: $0) }
        self.coolDown = coolDown
    }

    var addresses: [String] { nodes.map(\.address) }

    /// Base URLs without trailing slashes, each once, in the order first given.
    static func unique(_ addresses: [String]) -> [String] {
        var seen = Set<String>()
        var result: [String] = []
        for address in addresses {
            var normalized = address
            while normalized.hasSuffix("/") { normalized.removeLast() }
            if !normalized.isEmpty, seen.insert(normalized).inserted { result.append(normalized) }
        }
        return result
    }

    /// Replaces the node list: nodes still listed keep their state, new ones start healthy,
    /// missing ones are dropped. Returns the addresses added and removed.
    mutating func replace(with addresses: [String]) -> (added: [String], removed: [String]) {
        let wanted = Self.unique(addresses)
        let old = Dictionary(nodes.map { ($0.address, $0) }, uniquingKeysWith: { first, _ in first })
        let removed = nodes.map(\.address).filter { !wanted.contains($0) }
        let added = wanted.filter { old[$0] == nil }
        nodes = wanted.map { old[$0] ?? Node(address: $0) }
        return (added, removed)
    }

    /// Picks the node for an attempt and counts it in flight.
    ///
    /// Prefers healthy nodes not in `tried`, then any healthy node, then (when none is healthy)
    /// the node that failed least recently, so that a request still has somewhere to go.
    mutating func choose(excluding tried: Set<String>) -> String? {
        guard !nodes.isEmpty else { return nil }
        let healthy = nodes.indices.filter { nodes[$0].health == .healthy }
        let fresh = healthy.filter { !tried.contains(nodes[$0].address) }
        let index: Int
        if let best = leastLoaded(fresh.isEmpty ? healthy : fresh) {
            index = best
        } else {
            let untried = nodes.indices.filter { !tried.contains(nodes[$0].address) }
            let candidates = untried.isEmpty ? Array(nodes.indices) : untried
            index = candidates.min { left, right in
                switch (nodes[left].lastFailure, nodes[right].lastFailure) {
                case (nil, nil): left < right
                case (nil, _): true
                case (_, nil): false
                case (let leftFailure?, let rightFailure?): leftFailure < rightFailure
                }
            }!
        }
        nodes[index].inFlight += 1
        return nodes[index].address
    }

    /// The candidate with the fewest requests in flight; ties go to the first at or after the
    /// rotation point in list order, and the rotation moves on with each choice.
    private mutating func leastLoaded(_ candidates: [Int]) -> Int? {
        guard !candidates.isEmpty else { return nil }
        let start = rotation % nodes.count
        rotation &+= 1
        let ordered = candidates.sorted { ($0 - start + nodes.count) % nodes.count < ($1 - start + nodes.count) % nodes.count }
        var best = ordered[0]
        for candidate in ordered.dropFirst() where nodes[candidate].inFlight < nodes[best].inFlight {
            best = candidate
        }
        return best
    }

    /// Records the end of an attempt on `address`: a success keeps it healthy; a failure that
    /// says the node is sick starts its cool-down.
    mutating func finish(_ address: String, failed: Bool, at now: Instant) {
        guard let index = nodes.firstIndex(where: { $0.address == address }) else { return }
        nodes[index].inFlight = max(0, nodes[index].inFlight - 1)
        guard failed else { return }
        nodes[index].lastFailure = now
        if nodes[index].health != .probing {
            nodes[index].health = .coolingDown(until: now.advanced(by: coolDown))
        }
    }

    /// Marks every node whose cool-down has ended as probing, and returns them to probe.
    mutating func takeDueProbes(at now: Instant) -> [String] {
        var due: [String] = []
        for index in nodes.indices {
            if case .coolingDown(let until) = nodes[index].health, until <= now {
                nodes[index].health = .probing
                due.append(nodes[index].address)
            }
        }
        return due
    }

    /// Records a probe's outcome: a ready node is healthy again, another cools down anew.
    mutating func finishProbe(_ address: String, ready: Bool, at now: Instant) {
        guard let index = nodes.firstIndex(where: { $0.address == address }), nodes[index].health == .probing else { return }
        nodes[index].health = ready ? .healthy : .coolingDown(until: now.advanced(by: coolDown))
        if !ready { nodes[index].lastFailure = now }
    }

    /// The health of `address`, or `nil` when it is not in the table.
    func health(of address: String) -> Health? {
        nodes.first { $0.address == address }?.health
    }
}
