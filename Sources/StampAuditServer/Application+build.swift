import Foundation
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import StampAudit
import StampGeneratorNode

/// Builds the HTTP application of an audit server; `stamp audit serve` and the tests both call it.
///
/// - Parameters:
///   - service: The audit operations. Run its shard map source and shard set as services beside
///     the application.
///   - tokens: The writer and reader bearer tokens.
///   - server: Where to listen and the bounds on requests (bodies: 64 KiB by default here).
///   - metrics: Renders the Prometheus text of `/metrics`; `nil` serves an empty document.
///   - logger: The server's logger. Personal-data values never reach it.
public func buildAuditApplication<C: Clock<Duration>>(
    service: AuditService<C>,
    tokens: AuditTokens,
    server: StampGeneratorNode.ServerConfiguration = StampGeneratorNode.ServerConfiguration(port: 7500, maxBodySize: AuditLimits.maxBodyBytes),
    metrics: (@Sendable () -> String)? = nil,
    logger: Logger
) -> some ApplicationProtocol {
    let router = Router(context: BasicRequestContext.self)
    router.add(middleware: ProblemMiddleware(allowedMethods: AuditRoutes<C>.allowedMethods))
    router.add(middleware: RequestMetricsMiddleware())
    router.add(middleware: BodyLimitMiddleware(maxBodySize: server.maxBodySize))
    AuditRoutes(service: service, tokens: tokens, maxBodySize: server.maxBodySize).add(to: router)

    router.get("/health/live") { _, _ in
        AuditRoutes<C>.json(#"{"status":"live"}"#)
    }
    router.get("/health/ready") { _, _ -> Response in
        if let reason = await service.unreadiness() {
            throw Problem.unavailable("not ready: \(reason)", retryAfterMilliseconds: 1000)
        }
        return AuditRoutes<C>.json(#"{"status":"ready","shardMapVersion":\#(service.shardMap.current.version)}"#)
    }
    router.get("/metrics") { _, _ in OperationalResponses.metrics(metrics?() ?? "") }
    router.get("/openapi.yaml") { _, _ in try OperationalResponses.openAPI(AuditOpenAPIDocument.text) }

    return Application(
        router: router,
        server: .http1(configuration: server.http1),
        configuration: ApplicationConfiguration(address: .hostname(server.host, port: server.port), serverName: "stamp-audit"),
        onServerRunning: server.announceListening(logger: logger),
        logger: logger
    )
}

/// The OpenAPI 3.1 document of the audit API, as shipped in the package.
public enum AuditOpenAPIDocument {
    /// The document's YAML text, or `nil` when the build lacks its resource bundle.
    public static let text: String? = Bundle.module.url(forResource: "openapi", withExtension: "yaml").flatMap { try? String(contentsOf: $0, encoding: .utf8) }
}
