import StampCore
import StampCoordination

/// Everything a generator node is configured with; the `stamp serve` flags fill it.
public struct NodeConfiguration: Sendable {
    /// The ID layout; every node of a cluster must use the same one.
    public var layout: IDLayout
    /// How far logical time may run ahead of the wall clock, in milliseconds (default 1000).
    public var maxLeadMilliseconds: Int64
    /// Lease and reservation durations.
    public var lease: LeaseConfiguration
    /// The URL other nodes and clients reach this node at, recorded with its lease; `nil`
    /// advertises the address the node's HTTP server listens on (see ``GeneratorNode``'s `listening`).
    public var advertisedAddress: String?
    /// Largest `count` of one request (default 10,000).
    public var maxCount: Int
    /// The node refuses to start when the layout runs out sooner than this (default 365 days).
    public var minimumLifetime: Duration

    public init(
        layout: IDLayout = .default,
        maxLeadMilliseconds: Int64 = 1000,
        lease: LeaseConfiguration = LeaseConfiguration(),
        advertisedAddress: String? = nil,
        maxCount: Int = 10_000,
        minimumLifetime: Duration = .seconds(365 * 86_400)
    ) {
        self.layout = layout
        self.maxLeadMilliseconds = maxLeadMilliseconds
        self.lease = lease
        self.advertisedAddress = advertisedAddress
        self.maxCount = maxCount
        self.minimumLifetime = minimumLifetime
    }

    /// Checks the lease durations, and that the clock skew bound is below the maximum lead.
    public func validate() throws(CoordinationError) {
        try lease.validate()
        guard lease.maxClockSkew.wholeMilliseconds < maxLeadMilliseconds else {
            throw CoordinationError(.invalidConfiguration, "maximum clock skew must be below the maximum lead, so that a node's IDs stay acceptable floors for the others")
        }
    }
}
