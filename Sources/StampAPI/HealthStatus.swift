/// The answer of `GET /health/live` and `GET /health/ready` on both servers.
public struct HealthStatus: Codable, Sendable, Equatable {
    /// What the answer says.
    public enum Status: String, Codable, Sendable {
        /// The process runs (`/health/live`).
        case live
        /// The server can serve (`/health/ready`).
        case ready
    }

    public var status: Status
    /// On a ready generator node: the node ID it holds.
    public var node: Int?
    /// On a ready audit server: the version of the shard map it writes under.
    public var shardMapVersion: Int?

    public init(status: Status, node: Int? = nil, shardMapVersion: Int? = nil) {
        self.status = status
        self.node = node
        self.shardMapVersion = shardMapVersion
    }
}
