import StampCore

/// The JSON answer of `GET /v1/ids`: the IDs issued, in order, and the node that issued them.
///
/// The node writes this document by hand (``writeJSON(ids:node:into:)``), its hot path; the
/// `Codable` form is what clients decode, and a test holds the two to the same document.
public struct IDBatch: Codable, Sendable, Equatable {
    /// The IDs, as decimal strings in JSON.
    public var ids: [StampID]
    /// The node ID of the node that issued them.
    public var node: Int

    public init(ids: [StampID], node: Int) {
        self.ids = ids
        self.node = node
    }
}

/// The answer of `GET /v1/ids/{id}`: the fields of one ID.
public struct DecodedID: Codable, Sendable, Equatable {
    public var id: StampID
    /// The ID's text form (Crockford base 32).
    public var text: String
    /// The time field as an RFC 3339 instant.
    public var time: String
    public var unixMilliseconds: Int64
    public var sequence: Int64
    public var shard: Int
    public var node: Int
    /// Whether the time lies further ahead of the node's clock than its maximum lead.
    public var timeInFuture: Bool

    public init(id: StampID, text: String, time: String, unixMilliseconds: Int64, sequence: Int64, shard: Int, node: Int, timeInFuture: Bool) {
        self.id = id
        self.text = text
        self.time = time
        self.unixMilliseconds = unixMilliseconds
        self.sequence = sequence
        self.shard = shard
        self.node = node
        self.timeInFuture = timeInFuture
    }
}

/// The answer of `GET /v1/cluster`: the layout, the answering node, and the live nodes.
public struct ClusterStatus: Codable, Sendable, Equatable {
    /// One live node of the cluster.
    public struct Member: Codable, Sendable, Equatable {
        public var node: Int
        /// The URL the node advertised; `null` when it advertised none.
        public var address: String?
        /// When its lease ends unless renewed, as an RFC 3339 instant.
        public var expiresAt: String

        public init(node: Int, address: String?, expiresAt: String) {
            self.node = node
            self.address = address
            self.expiresAt = expiresAt
        }

        enum CodingKeys: String, CodingKey { case node, address, expiresAt }

        /// Encodes every member, `address` as `null` when absent.
        public func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encode(node, forKey: .node)
            try container.encode(address, forKey: .address)
            try container.encode(expiresAt, forKey: .expiresAt)
        }
    }

    /// The ID layout's text form.
    public var layout: String
    public var idsPerMillisecond: Int64
    public var maxLeadMilliseconds: Int64
    /// The node ID the answering node holds; `null` when it holds none.
    public var node: Int?
    /// Whether the answering node can issue IDs now.
    public var ready: Bool
    public var nodes: [Member]

    public init(layout: String, idsPerMillisecond: Int64, maxLeadMilliseconds: Int64, node: Int?, ready: Bool, nodes: [Member]) {
        self.layout = layout
        self.idsPerMillisecond = idsPerMillisecond
        self.maxLeadMilliseconds = maxLeadMilliseconds
        self.node = node
        self.ready = ready
        self.nodes = nodes
    }

    enum CodingKeys: String, CodingKey { case layout, idsPerMillisecond, maxLeadMilliseconds, node, ready, nodes }

    /// Encodes every member, `node` as `null` when absent.
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(layout, forKey: .layout)
        try container.encode(idsPerMillisecond, forKey: .idsPerMillisecond)
        try container.encode(maxLeadMilliseconds, forKey: .maxLeadMilliseconds)
        try container.encode(node, forKey: .node)
        try container.encode(ready, forKey: .ready)
        try container.encode(nodes, forKey: .nodes)
    }
}

/// The answer of `GET /v1/node`: how the answering node is doing, for its console and monitors.
public struct NodeStatus: Codable, Sendable, Equatable {
    /// The node ID held; `null` when the node holds none.
    public var node: Int?
    /// Whether the node can issue IDs now.
    public var ready: Bool
    /// Why the node cannot issue, safe to show; `null` when it can.
    public var reason: String?
    /// When the lease ends unless renewed, as an RFC 3339 instant on the store's clock; `null` without one.
    public var leaseExpiresAt: String?
    /// The reservation's end as an RFC 3339 instant: no ID's time reaches it; `null` without a lease.
    public var reservedUntil: String?
    /// How far the reservation reaches past the node's logical time, in milliseconds (0 without a lease).
    public var reservationHeadroomMilliseconds: Int64
    /// How far logical time runs ahead of the wall clock, in milliseconds.
    public var clockLeadMilliseconds: Int64
    /// The wall clock minus the store's, measured at the last claim or renewal, in milliseconds.
    public var clockSkewMilliseconds: Int64
    /// IDs issued per second over ``windowSeconds``.
    public var idsPerSecond: Double
    /// Requests refused over ``windowSeconds``.
    public var refusals: Int64
    /// The span the rates cover: the last minute, or the time since the node started when shorter.
    public var windowSeconds: Double

    public init(node: Int?, ready: Bool, reason: String?, leaseExpiresAt: String?, reservedUntil: String?, reservationHeadroomMilliseconds: Int64, clockLeadMilliseconds: Int64, clockSkewMilliseconds: Int64, idsPerSecond: Double, refusals: Int64, windowSeconds: Double) {
        self.node = node
        self.ready = ready
        self.reason = reason
        self.leaseExpiresAt = leaseExpiresAt
        self.reservedUntil = reservedUntil
        self.reservationHeadroomMilliseconds = reservationHeadroomMilliseconds
        self.clockLeadMilliseconds = clockLeadMilliseconds
        self.clockSkewMilliseconds = clockSkewMilliseconds
        self.idsPerSecond = idsPerSecond
        self.refusals = refusals
        self.windowSeconds = windowSeconds
    }

    enum CodingKeys: String, CodingKey {
        case node, ready, reason, leaseExpiresAt, reservedUntil, reservationHeadroomMilliseconds, clockLeadMilliseconds, clockSkewMilliseconds, idsPerSecond, refusals, windowSeconds
    }

    /// Encodes every member, absent ones as `null`.
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(node, forKey: .node)
        try container.encode(ready, forKey: .ready)
        try container.encode(reason, forKey: .reason)
        try container.encode(leaseExpiresAt, forKey: .leaseExpiresAt)
        try container.encode(reservedUntil, forKey: .reservedUntil)
        try container.encode(reservationHeadroomMilliseconds, forKey: .reservationHeadroomMilliseconds)
        try container.encode(clockLeadMilliseconds, forKey: .clockLeadMilliseconds)
        try container.encode(clockSkewMilliseconds, forKey: .clockSkewMilliseconds)
        try container.encode(idsPerSecond, forKey: .idsPerSecond)
        try container.encode(refusals, forKey: .refusals)
        try container.encode(windowSeconds, forKey: .windowSeconds)
    }
}

/// The answer of `GET /v1/cluster/nodes`: every live node with the status it reports, gathered
/// by the answering node.
public struct ClusterNodes: Codable, Sendable, Equatable {
    /// One live node: its lease as the store records it, and its own ``NodeStatus``.
    public struct Entry: Codable, Sendable, Equatable {
        public var node: Int
        /// The URL the node advertised; `null` when it advertised none.
        public var address: String?
        /// When its lease ends unless renewed, as an RFC 3339 instant.
        public var expiresAt: String
        /// Its stored reservation's end, as an RFC 3339 instant.
        public var reservedUntil: String
        /// What the node reported at `GET /v1/node`; `null` when it could not be asked (see ``error``).
        public var status: NodeStatus?
        /// Why ``status`` is missing, safe to show; `null` when it is there.
        public var error: String?

        public init(node: Int, address: String?, expiresAt: String, reservedUntil: String, status: NodeStatus?, error: String?) {
            self.node = node
            self.address = address
            self.expiresAt = expiresAt
            self.reservedUntil = reservedUntil
            self.status = status
            self.error = error
        }

        enum CodingKeys: String, CodingKey { case node, address, expiresAt, reservedUntil, status, error }

        /// Encodes every member, absent ones as `null`.
        public func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encode(node, forKey: .node)
            try container.encode(address, forKey: .address)
            try container.encode(expiresAt, forKey: .expiresAt)
            try container.encode(reservedUntil, forKey: .reservedUntil)
            try container.encode(status, forKey: .status)
            try container.encode(error, forKey: .error)
        }
    }

    /// The ID layout's text form.
    public var layout: String
    /// The node ID the answering node holds; `null` when it holds none.
    public var node: Int?
    /// The live nodes, by node ID.
    public var nodes: [Entry]

    public init(layout: String, node: Int?, nodes: [Entry]) {
        self.layout = layout
        self.node = node
        self.nodes = nodes
    }

    enum CodingKeys: String, CodingKey { case layout, node, nodes }

    /// Encodes every member, `node` as `null` when absent.
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(layout, forKey: .layout)
        try container.encode(node, forKey: .node)
        try container.encode(nodes, forKey: .nodes)
    }
}
