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
