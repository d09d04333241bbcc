import Foundation
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import StampAPI
import StampAudit
import StampAuditService
import StampClient
import StampHTTP

/// Builds an audit server from its configuration: the HTTP application with every service it
/// needs (the shard set, the shard map source, the ID client), ready for `runService()`.
/// `stamp audit serve` calls it.
///
/// - Parameters:
///   - configuration: The server's configuration.
///   - metrics: Renders the Prometheus text of `/metrics`; `nil` serves an empty document.
///   - logger: The server's logger. Personal-data values never reach it.
/// - Throws: ``AuditServiceError`` with code `invalidConfiguration` when the configuration cannot
///   work (no tokens or data key, an unreadable shard map).
public func buildAuditApplication(configuration: AuditServerConfiguration, metrics: (@Sendable () -> String)? = nil, logger: Logger) throws(AuditServiceError) -> some ApplicationProtocol {
    guard let tokens = configuration.tokens else {
        throw AuditServiceError(.invalidConfiguration, "the audit server needs writer and reader tokens")
    }
    guard AuditServerConfiguration.prefetchRange.contains(configuration.prefetch) else {
        throw AuditServiceError(.invalidConfiguration, "the prefetch must be between \(AuditServerConfiguration.prefetchRange.lowerBound) and \(AuditServerConfiguration.prefetchRange.upperBound)")
    }
    var clientConfiguration = StampClientConfiguration(nodes: configuration.generators, token: configuration.generatorToken)
    if configuration.prefetch > 0 {
        clientConfiguration.prefetch = StampClientConfiguration.Prefetch(capacity: configuration.prefetch)
    }
    let client = StampIDClient(configuration: clientConfiguration, logger: logger)
    let service = try AuditService(configuration: configuration.service, ids: client, clock: ContinuousClock(), logger: logger)
    var application = buildAuditApplication(service: service, tokens: tokens, server: configuration.server, metrics: metrics, logger: logger)
    application.addServices(service.shards, service.shardMap, client)
    if configuration.service.checkpoints != nil {
        application.addServices(CheckpointService(service: service))
    } else {
        logger.warning("no checkpoint signing key (STAMP_AUDIT_SIGNING_KEY): the shards' hash chains are kept, but no checkpoint is signed")
    }
    logger.notice("audit server starting", metadata: [
        "stamp.listen": "\(configuration.server.host):\(configuration.server.port)", "stamp.shard_map.version": "\(service.shardMap.current.version)",
        "stamp.generators": "\(configuration.generators.joined(separator: ","))",
    ])
    return application
}

/// Builds the HTTP application of an audit service, its routes and middlewares, without services:
/// run the service's shard set and shard map source beside it.
/// ``buildAuditApplication(configuration:metrics:logger:)`` composes it, and tests with their own
/// ID source call it directly.
///
/// - Parameters:
///   - service: The audit operations.
///   - tokens: The writer and reader bearer tokens.
///   - server: Where to listen and the bounds on requests.
///   - metrics: Renders the Prometheus text of `/metrics`; `nil` serves an empty document.
///   - listening: Told where the server listens once it does.
///   - logger: The server's logger. Personal-data values never reach it.
public func buildAuditApplication<C: Clock<Duration>>(
    service: AuditService<C>,
    tokens: AuditTokens,
    server: HTTPServerConfiguration = AuditServerConfiguration().server,
    metrics: (@Sendable () -> String)? = nil,
    listening: ListeningAddress? = nil,
    logger: Logger
) -> Application<RouterResponder<BasicRequestContext>> {
    let router = Router(context: BasicRequestContext.self)
    router.add(middleware: ProblemMiddleware(allowedMethods: AuditRoutes<C>.allowedMethods))
    router.add(middleware: RequestMetricsMiddleware())
    router.add(middleware: BodyLimitMiddleware(maxBodySize: server.maxBodySize))
    AuditRoutes(service: service, tokens: tokens, maxBodySize: server.maxBodySize).add(to: router)
    AuditConsole().add(to: router)
    OperationalRoutes(
        readiness: {
            if let reason = await service.unreadiness() {
                throw Problem.unavailable("not ready: \(reason)", retryAfterMilliseconds: 1000)
            }
            return HealthStatus(status: .ready, shardMapVersion: service.shardMap.current.version)
        },
        metrics: { metrics?() ?? "" },
        openAPIDocument: AuditOpenAPIDocument.text
    ).add(to: router)

    // Writes are the audit server's hot path: answered in the channel pipeline, not the router.
    let eventLoopRoutes: [any EventLoopRoute] = [AuditWriteRoute(service: service, tokens: tokens)]
    return server.application(router: router, eventLoopRoutes: eventLoopRoutes, serverName: "stamp-audit", listening: listening, logger: logger)
}

/// The OpenAPI 3.1 document of the audit API, as shipped in the package.
public enum AuditOpenAPIDocument {
    /// The document's YAML text, or `nil` when the build lacks its resource bundle.
    public static let text: String? = Bundle.module.url(forResource: "openapi", withExtension: "yaml").flatMap { try? String(contentsOf: $0, encoding: .utf8) }
}
