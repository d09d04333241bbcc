import Foundation
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import StampCore

/// Builds the HTTP application of a generator node; `stamp serve` and the tests both call it.
///
/// - Parameters:
///   - node: The generator node whose IDs are served. Run it as a service beside the application.
///   - server: Where to listen and the bounds on requests.
///   - metrics: Renders the Prometheus text of `/metrics`; `nil` serves an empty document.
///   - wallClock: Wall time, for validating IDs at `/v1/ids/{id}`.
///   - knowsShard: Whether the shard map lists a shard; IDs for other shards are refused.
///     `nil` serves every shard of the layout.
///   - listening: Told where the server listens once it does; give the node the same one.
///   - logger: The server's logger.
public func buildApplication<C: Clock<Duration>>(
    node: GeneratorNode<C>,
    server: ServerConfiguration = ServerConfiguration(),
    metrics: (@Sendable () -> String)? = nil,
    wallClock: any WallClock = SystemWallClock(),
    knowsShard: (@Sendable (Int) async -> Bool)? = nil,
    listening: ListeningAddress? = nil,
    logger: Logger
) -> some ApplicationProtocol {
    let router = Router(context: BasicRequestContext.self)
    router.add(middleware: ProblemMiddleware(allowedMethods: GeneratorPaths.allowedMethods))
    router.add(middleware: RequestMetricsMiddleware())
    router.add(middleware: BodyLimitMiddleware(maxBodySize: server.maxBodySize))
    IDRoutes(node: node, wallClock: wallClock, knowsShard: knowsShard).add(to: router)

    router.get("/health/live") { _, _ in
        Response(status: .ok, headers: [.contentType: "application/json", .cacheControl: "no-store"], body: ResponseBody(byteBuffer: ByteBuffer(string: #"{"status":"live"}"#)))
    }
    router.get("/health/ready") { _, _ -> Response in
        let readiness = node.readiness()
        guard readiness.isReady, let held = readiness.node else {
            throw Problem.unavailable("not ready: \(readiness.reason ?? "unknown")", retryAfterMilliseconds: node.configuration.lease.retryInterval.wholeMilliseconds)
        }
        return Response(status: .ok, headers: [.contentType: "application/json", .cacheControl: "no-store"], body: ResponseBody(byteBuffer: ByteBuffer(string: #"{"status":"ready","node":\#(held)}"#)))
    }
    router.get("/metrics") { _, _ in
        node.refreshMetrics()
        return OperationalResponses.metrics(metrics?() ?? "")
    }
    router.get("/openapi.yaml") { _, _ in try OperationalResponses.openAPI(OpenAPIDocument.text) }

    return Application(
        router: router,
        server: .http1(configuration: server.http1),
        configuration: ApplicationConfiguration(address: .hostname(server.host, port: server.port), serverName: "stamp"),
        onServerRunning: server.announceListening(to: listening, logger: logger),
        logger: logger
    )
}

/// The OpenAPI 3.1 document of the node's API, as shipped in the package.
public enum OpenAPIDocument {
    /// The document's YAML text, or `nil` when the build lacks its resource bundle.
    public static let text: String? = Bundle.module.url(forResource: "openapi", withExtension: "yaml").flatMap { try? String(contentsOf: $0, encoding: .utf8) }
}
