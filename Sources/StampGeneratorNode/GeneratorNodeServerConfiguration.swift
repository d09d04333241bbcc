import StampDatabase
import StampHTTP

/// Everything a generator node server runs with, every default in one place: `stamp serve` fills
/// it from flags and the environment, and its `--help` shows these defaults.
public struct GeneratorNodeServerConfiguration: Sendable {
    /// Where the HTTP API listens (default `127.0.0.1:7400`) and the bounds on requests.
    public var server: HTTPServerConfiguration
    /// The coordination store (default `sqlite:.stamp/coordination.sqlite`).
    public var store: CoordinationStoreLocation
    /// The node: layout, lease durations, maximum lead, largest count, minimum lifetime, and the
    /// advertised address (default: where the server listens, with the port it bound).
    public var node: NodeConfiguration
    /// A shard map file; when given, IDs are issued only for the shards it lists, and the file is
    /// re-read as it changes (default none: every shard of the layout).
    public var shardMapPath: String?
    /// The bearer token every request but `/health/*` and `/metrics` must carry (default none:
    /// the API is open to anyone who can reach it).
    public var token: NodeToken?

    public init(
        server: HTTPServerConfiguration = HTTPServerConfiguration(port: 7400),
        store: CoordinationStoreLocation = .database(.sqlite(path: ".stamp/coordination.sqlite")),
        node: NodeConfiguration = NodeConfiguration(),
        shardMapPath: String? = nil,
        token: NodeToken? = nil
    ) {
        self.server = server
        self.store = store
        self.node = node
        self.shardMapPath = shardMapPath
        self.token = token
    }
}
