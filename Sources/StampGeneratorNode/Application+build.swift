import Foundation
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import ServiceLifecycle
import StampAPI
import StampCoordination
import StampCore
import StampHTTP
import StampShardMap

/// Builds a generator node server from its configuration: the HTTP application with every service
/// it needs (the coordination store, the node, the shard map source when configured), ready for
/// `runService()`. `stamp serve` and the tests both call it.
///
/// - Parameters:
///   - configuration: The server's configuration.
///   - metrics: Renders the Prometheus text of `/metrics`; `nil` serves an empty document.
///   - logger: The server's logger.
/// - Throws: ``CoordinationError`` when the store location cannot be used, `ShardMapError` when
///   the shard map cannot be read.
public func buildApplication(configuration: GeneratorNodeServerConfiguration, metrics: (@Sendable () -> String)? = nil, logger: Logger) throws -> some ApplicationProtocol {
    var shardMapServices: [any Service] = []
    var shards: ShardCheck?
    if let path = configuration.shardMapPath {
        let source = try ShardMapSource(path: path, layout: configuration.node.layout, clock: ContinuousClock(), logger: logger)
        logger.notice("shard map loaded", metadata: ["stamp.shard_map.version": "\(source.current.version)", "stamp.shard_map.shards": "\(source.current.shards.map(\.id).sorted())"])
        shardMapServices.append(source)
        shards = ShardCheck(known: { source.knows(shard: $0) }, refreshed: { await source.refreshIfChanged().knows(shard: $0) })
    }
    let store = try configuration.store.makeCoordinationStore(logger: logger)
    let listening = ListeningAddress()
    let node = GeneratorNode(configuration: configuration.node, store: store, clock: ContinuousClock(), logger: logger, listening: listening)
    var application = buildApplication(node: node, server: configuration.server, metrics: metrics, shards: shards, token: configuration.token, listening: listening, logger: logger)
    // Shut down in reverse: the shard map source, then the node (releasing its lease), then the store.
    application.addServices([StoreService(store: store), node] + shardMapServices)
    return application
}

/// Builds the HTTP application of a generator node, its routes and middlewares, without services:
/// run the node beside it. ``buildApplication(configuration:metrics:logger:)`` composes it, and
/// tests with manual clocks call it directly.
///
/// - Parameters:
///   - node: The generator node whose IDs are served.
///   - server: Where to listen and the bounds on requests.
///   - metrics: Renders the Prometheus text of `/metrics`; `nil` serves an empty document.
///   - wallClock: Wall time, for validating IDs at `/v1/ids/{id}`.
///   - shards: Whether the shard map lists a shard; IDs for other shards are refused.
///     `nil` serves every shard of the layout.
///   - token: The bearer token every request but health, metrics and the console's page must
///     carry; `nil` for none.
///   - peers: How `GET /v1/cluster/nodes` asks the other nodes for their status.
///   - listening: Told where the server listens once it does; give the node the same one.
///   - logger: The server's logger.
public func buildApplication<C: Clock<Duration>>(
    node: GeneratorNode<C>,
    server: HTTPServerConfiguration = GeneratorNodeServerConfiguration().server,
    metrics: (@Sendable () -> String)? = nil,
    wallClock: any WallClock = SystemWallClock(),
    shards: ShardCheck? = nil,
    token: NodeToken? = nil,
    peers: PeerStatusSource = .http(),
    listening: ListeningAddress? = nil,
    logger: Logger
) -> Application<RouterResponder<BasicRequestContext>> {
    let router = Router(context: BasicRequestContext.self)
    router.add(middleware: ProblemMiddleware(allowedMethods: GeneratorPaths.allowedMethods))
    router.add(middleware: RequestMetricsMiddleware())
    if let token { router.add(middleware: NodeTokenMiddleware(token: token)) }
    router.add(middleware: BodyLimitMiddleware(maxBodySize: server.maxBodySize))
    IDRoutes(node: node, wallClock: wallClock, shards: shards).add(to: router)
    ClusterConsole(node: node, peers: peers, needsToken: token != nil).add(to: router)
    OperationalRoutes(
        readiness: {
            let readiness = node.readiness()
            guard readiness.isReady, let held = readiness.node else {
                throw Problem.unavailable("not ready: \(readiness.reason ?? "unknown")", retryAfterMilliseconds: node.configuration.lease.retryInterval.wholeMilliseconds)
            }
            return HealthStatus(status: .ready, node: held)
        },
        metrics: {
            node.refreshMetrics()
            return metrics?() ?? ""
        },
        openAPIDocument: OpenAPIDocument.text
    ).add(to: router)

    // Single-ID requests are the node's hot path: answered in the channel pipeline, not the router.
    let eventLoopRoutes: [any EventLoopRoute] = [IssueRoute(node: node, shards: shards, token: token)]
    return server.application(router: router, eventLoopRoutes: eventLoopRoutes, serverName: "stamp", listening: listening, logger: logger)
}

/// Runs a coordination store's background work as a service, and closes the store when it ends.
///
/// Listed before the node, it is shut down after the node has released its lease.
struct StoreService: Service {
    let store: any CoordinationStore

    func run() async throws {
        do {
            try await cancelWhenGracefulShutdown {
                try await store.run()
            }
        } catch is CancellationError {
            // Graceful shutdown: close below.
        } catch {
            await store.close()
            throw error
        }
        await store.close()
    }
}

/// The OpenAPI 3.1 document of the node's API, as shipped in the package.
public enum OpenAPIDocument {
    /// The document's YAML text, or `nil` when the build lacks its resource bundle.
    public static let text: String? = Bundle.module.url(forResource: "openapi", withExtension: "yaml").flatMap { try? String(contentsOf: $0, encoding: .utf8) }
}
