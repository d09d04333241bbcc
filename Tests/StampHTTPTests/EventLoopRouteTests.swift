import Hummingbird
import HummingbirdTesting
import Logging
import MetricsTestKit
import NIOCore
import NIOPosix
import StampHTTP
import Testing

/// A route that answers `/echo` and `/later` with `route:<n>:<body>`, where `n` is the request's
/// `n` query parameter; `pass` in the query passes the request on to the router.
struct EchoRoute: EventLoopRoute {
    var label: String { "/echo" }

    func matches(method: HTTPRequest.Method, path: Substring) -> Bool {
        path == "/echo" || path == "/later"
    }

    func answer(_ request: EventLoopRequest, body: ByteBuffer, eventLoop: any EventLoop) -> EventLoopAnswer {
        let target = request.target.split(separator: "?", maxSplits: 1)
        var query: [Substring: Substring] = [:]
        for pair in target.dropFirst().first?.split(separator: "&") ?? [] {
            let parts = pair.split(separator: "=", maxSplits: 1)
            query[parts[0]] = parts.dropFirst().first ?? ""
        }
        if query["pass"] != nil { return .passOn }
        let response = DirectResponse(status: .ok, headers: [.contentType: "text/plain"], body: ByteBuffer(string: "route:\(query["n"] ?? ""):\(String(buffer: body))"))
        guard target.first == "/later" else { return .now(response) }
        // Completed from another thread, as an answer that waited for a database would be.
        let promise = eventLoop.makePromise(of: DirectResponse.self)
        Task.detached { promise.succeed(response) }
        return .later(promise.futureResult)
    }
}

/// One answer read off the wire.
struct WireResponse {
    let status: Int
    let headers: [String: String]
    let body: String
}

@Suite("Event-loop routes")
struct EventLoopRouteTests {
    /// Runs `body` with the port of a live server: ``EchoRoute`` ahead of a router that answers
    /// `/echo` (requests passed on) and `/slow`, which takes many scheduling turns to answer.
    func withServer(metrics: TestMetrics = TestMetrics(), _ body: @Sendable (Int) async throws -> Void) async throws {
        let router = Router()
        router.add(middleware: ProblemMiddleware(allowedMethods: { _ in nil }))
        router.on("/echo", method: .post) { request, _ in
            var request = request
            let body = try await request.collectBody(upTo: 1024)
            return "router:\(request.uri.queryParameters["n"] ?? ""):\(String(buffer: body))"
        }
        router.get("/echo") { request, _ in "router:\(request.uri.queryParameters["n"] ?? ""):" }
        router.get("/slow") { request, _ in
            for _ in 0..<1000 { await Task.yield() }
            return "router:\(request.uri.queryParameters["n"] ?? ""):"
        }
        let application = HTTPServerConfiguration(port: 0, maxBodySize: 64).application(
            router: router, eventLoopRoutes: [EchoRoute()], serverName: "stamp-test", metricsFactory: metrics,
            logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })
        )
        try await application.test(.live) { client in
            try await body(try #require(client.port))
        }
    }

    /// Writes `requests` on one connection at once and reads `count` answers (fewer if the server closes).
    func exchange(port: Int, _ requests: String, answers count: Int) async throws -> [WireResponse] {
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton).connect(host: "127.0.0.1", port: port) { channel in
            channel.eventLoop.makeCompletedFuture { try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel) }
        }
        return try await channel.executeThenClose { inbound, outbound in
            try await outbound.write(ByteBuffer(string: requests))
            var received = ""
            var answers: [WireResponse] = []
            for try await chunk in inbound {
                received += String(buffer: chunk)
                answers = Self.parse(received)
                if answers.count >= count { break }
            }
            return answers
        }
    }

    /// The complete answers in `text`.
    static func parse(_ text: String) -> [WireResponse] {
        var answers: [WireResponse] = []
        var rest = Substring(text)
        while let end = rest.range(of: "\r\n\r\n") {
            let lines = rest[..<end.lowerBound].components(separatedBy: "\r\n")
            var headers: [String: String] = [:]
            for line in lines.dropFirst() {
                guard let colon = line.firstIndex(of: ":") else { continue }
                headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
            }
            let length = Int(headers["content-length"] ?? "0") ?? 0
            let body = rest[end.upperBound...]
            guard body.utf8.count >= length else { break }
            let status = Int(lines[0].split(separator: " ")[1]) ?? 0
            answers.append(WireResponse(status: status, headers: headers, body: String(body.utf8.prefix(length))!))
            rest = body.dropFirst(length)
        }
        return answers
    }

    static func get(_ target: String, _ extra: String = "") -> String {
        "GET \(target) HTTP/1.1\r\nHost: localhost\r\n\(extra)\r\n"
    }

    static func post(_ target: String, body: String) -> String {
        "POST \(target) HTTP/1.1\r\nHost: localhost\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)"
    }

    /// Pipelined requests get their answers in request order, whether the route answers at once,
    /// later, or leaves the request to a router that takes its time.
    @Test func pipelinedRequestsAreAnsweredInOrder() async throws {
        try await withServer { port in
            let requests = [
                Self.get("/echo?n=1"), Self.get("/slow?n=2"), Self.get("/echo?n=3"), Self.get("/later?n=4"),
                Self.get("/slow?n=5"), Self.post("/echo?n=6&pass", body: "passed"), Self.post("/later?n=7", body: "kept"), Self.get("/echo?n=8"),
            ]
            let answers = try await exchange(port: port, requests.joined(), answers: requests.count)
            #expect(answers.map(\.body) == ["route:1:", "router:2:", "route:3:", "route:4:", "router:5:", "router:6:passed", "route:7:kept", "route:8:"])
            #expect(answers.allSatisfy { $0.status == 200 })
        }
    }

    /// The route's answers carry what Hummingbird's do: length, date and server name.
    @Test func answersCarryLengthDateAndServer() async throws {
        try await withServer { port in
            let answer = try #require(try await exchange(port: port, Self.get("/echo?n=1"), answers: 1).first)
            #expect(answer.headers["content-length"] == "8")
            #expect(answer.headers["server"] == "stamp-test")
            let date = try #require(answer.headers["date"])
            #expect(date.hasSuffix(" GMT") && date.count == 29, "IMF-fixdate, such as 'Tue, 01 Dec 2026 19:47:40 GMT'; got \(date)")
        }
    }

    /// A body above the server's limit is refused with a 413 problem before the route sees it,
    /// and the connection goes on serving.
    @Test func bodiesAboveTheLimitAreRefused() async throws {
        try await withServer { port in
            let large = String(repeating: "x", count: 65)
            let chunked = "POST /echo?n=2 HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n20\r\n\(large.prefix(32))\r\n21\r\n\(large.prefix(33))\r\n0\r\n\r\n"
            let answers = try await exchange(port: port, Self.post("/echo?n=1", body: large) + chunked + Self.post("/echo?n=3", body: String(large.dropFirst())), answers: 3)
            #expect(answers.map(\.status) == [413, 413, 200])
            #expect(answers.prefix(2).allSatisfy { $0.headers["content-type"] == "application/problem+json" && $0.body.contains("urn:stamp:problem:body-too-large") })
            #expect(answers.last?.body == "route:3:" + String(large.dropFirst()))
        }
    }

    /// `Connection: close` is answered with the same header, then the server closes the connection.
    @Test func connectionCloseIsHonoured() async throws {
        try await withServer { port in
            let answers = try await exchange(port: port, Self.get("/echo?n=1", "Connection: close\r\n") + Self.get("/echo?n=2"), answers: 2)
            #expect(answers.map(\.body) == ["route:1:"], "nothing is answered after the close")
            #expect(answers.first?.headers["connection"] == "close")
        }
    }

    /// Each request a route answers is timed under the route's label and the answer's status;
    /// a request passed on is left to the router's middleware.
    @Test func routeRequestsAreTimed() async throws {
        let metrics = TestMetrics()
        try await withServer(metrics: metrics) { port in
            _ = try await exchange(port: port, Self.get("/echo?n=1") + Self.get("/later?n=2") + Self.post("/echo?n=3", body: String(repeating: "x", count: 65)) + Self.get("/echo?n=4&pass"), answers: 4)
        }
        let label = "stamp_http_request_duration_seconds"
        #expect(try metrics.expectTimer(label, [("route", "/echo"), ("status", "200")]).values.count == 2)
        #expect(try metrics.expectTimer(label, [("route", "/echo"), ("status", "413")]).values.count == 1)
    }
}
