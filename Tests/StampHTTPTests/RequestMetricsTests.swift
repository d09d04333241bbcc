import Hummingbird
import HummingbirdTesting
import MetricsTestKit
import StampHTTP
import Testing

@Suite("Request metrics")
struct RequestMetricsTests {
    /// Each answered request is one observation of its route and status, errors and unmatched paths
    /// (which Hummingbird names `NotFound`) included.
    @Test func everyRequestIsTimedByRouteAndStatus() async throws {
        let metrics = TestMetrics()
        let router = Router()
        router.add(middleware: RequestMetricsMiddleware(factory: metrics))
        router.get("/ok") { _, _ in "fine" }
        router.get("/bad") { _, _ -> String in throw HTTPError(.badRequest) }
        try await Application(router: router).test(.router) { client in
            for _ in 0..<3 { try await client.execute(uri: "/ok", method: .get) { #expect($0.status == .ok) } }
            try await client.execute(uri: "/bad", method: .get) { #expect($0.status == .badRequest) }
            try await client.execute(uri: "/missing", method: .get) { #expect($0.status == .notFound) }
        }
        let label = "stamp_http_request_duration_seconds"
        #expect(try metrics.expectTimer(label, [("route", "/ok"), ("status", "200")]).values.count == 3)
        #expect(try metrics.expectTimer(label, [("route", "/bad"), ("status", "400")]).values.count == 1)
        #expect(try metrics.expectTimer(label, [("route", "NotFound"), ("status", "404")]).values.count == 1)
    }
}
