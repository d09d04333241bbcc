import StampAudit
import StampAuditService
import StampHTTP

/// Everything an audit server runs with, every default in one place: `stamp audit serve` fills it
/// from flags and the environment, and its `--help` shows these defaults.
public struct AuditServerConfiguration: Sendable {
    /// Where the API listens (default `127.0.0.1:7500`) and the bounds on requests (bodies up to
    /// ``AuditLimits/maxBodyBytes``).
    public var server: HTTPServerConfiguration
    /// The audit service: shard map, layout, batches, commits per shard, data key.
    public var service: AuditServiceConfiguration
    /// Base URLs of the generator nodes (default `http://127.0.0.1:7400`).
    public var generators: [String]
    /// IDs prefetched per shard (default 256, at most ``prefetchRange``); 0 asks the generators for every write.
    public var prefetch: Int
    /// The generator nodes' bearer token, when they have one (default none).
    public var generatorToken: String?
    /// The writer and reader bearer tokens; the server refuses to start without them.
    public var tokens: AuditTokens?

    /// The prefetch sizes a server accepts.
    public static let prefetchRange = 0...10_000

    public init(
        server: HTTPServerConfiguration = HTTPServerConfiguration(port: 7500, maxBodySize: AuditLimits.maxBodyBytes),
        service: AuditServiceConfiguration = AuditServiceConfiguration(),
        generators: [String] = ["http://127.0.0.1:7400"],
        prefetch: Int = 256,
        tokens: AuditTokens? = nil
    ) {
        self.server = server
        self.service = service
        self.generators = generators
        self.prefetch = prefetch
        self.tokens = tokens
    }
}
