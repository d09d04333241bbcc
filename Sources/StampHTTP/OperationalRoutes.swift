import Hummingbird
import NIOCore
import StampAPI

/// The operational endpoints every server has: `/health/live`, `/health/ready`, `/metrics` and
/// `/openapi.yaml`.
public struct OperationalRoutes: Sendable {
    /// The ready answer, or a ``Problem`` (a 503 saying why not).
    let readiness: @Sendable () async throws -> HealthStatus
    /// The Prometheus text of `/metrics`.
    let metrics: @Sendable () -> String
    /// The API's OpenAPI document; `nil` when the build lacks it.
    let openAPIDocument: String?

    public init(readiness: @escaping @Sendable () async throws -> HealthStatus, metrics: @escaping @Sendable () -> String, openAPIDocument: String?) {
        self.readiness = readiness
        self.metrics = metrics
        self.openAPIDocument = openAPIDocument
    }

    /// The paths these routes serve, all with `GET`.
    public static let paths: Set<String> = ["/health/live", "/health/ready", "/metrics", "/openapi.yaml"]

    public func add<Context: RequestContext>(to router: Router<Context>) {
        router.get("/health/live") { _, _ in try Response.json(HealthStatus(status: .live)) }
        router.get("/health/ready") { _, _ in try Response.json(try await readiness()) }
        router.get("/metrics") { _, _ in
            Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8", .cacheControl: "no-store"], body: ResponseBody(byteBuffer: ByteBuffer(string: metrics())))
        }
        router.get("/openapi.yaml") { _, _ in
            guard let openAPIDocument else {
                throw Problem(.internalError, status: .internalServerError, detail: "the OpenAPI document is missing from this build")
            }
            return Response(status: .ok, headers: [.contentType: "application/yaml"], body: ResponseBody(byteBuffer: ByteBuffer(string: openAPIDocument)))
        }
    }
}
