import Hummingbird
import Logging
import MetricsTestKit
import NIOCore
import NIOEmbedded
import NIOHTTPTypes
@testable import StampHTTP
import Synchronization
import Testing

/// A route that answers `/later?n=N` with `route:N:` once the test completes the promise it
/// keeps, and `/now?n=N` at once; `pass` in the query passes the request on.
final class HeldRoute: EventLoopRoute {
    /// The answers held back, each with the promise that delivers it.
    private let held = Mutex<[(EventLoopPromise<DirectResponse>, DirectResponse)]>([])

    var label: String { "/held" }

    func matches(method: HTTPRequest.Method, path: Substring) -> Bool {
        path == "/later" || path == "/now"
    }

    func answer(_ request: EventLoopRequest, body: ByteBuffer, eventLoop: any EventLoop) -> EventLoopAnswer {
        if request.target.contains("pass") { return .passOn }
        let number = request.target.split(separator: "=").last ?? ""
        let response = DirectResponse(status: .ok, headers: [.contentType: "text/plain"], body: ByteBuffer(string: "route:\(number):"))
        guard request.path == "/later" else { return .now(response) }
        let promise = eventLoop.makePromise(of: DirectResponse.self)
        held.withLock { $0.append((promise, response)) }
        return .later(promise.futureResult)
    }

    /// How many answers wait for ``answerAll()``.
    var waiting: Int { held.withLock { $0.count } }

    /// Delivers every answer held so far.
    func answerAll() {
        for (promise, response) in held.withLock({ held in defer { held = [] }; return held }) {
            promise.succeed(response)
        }
    }
}

/// Stands in for Hummingbird's router at the end of the pipeline: records the paths of the
/// requests passed on, and answers the last one when the test says.
final class RouterStandIn: ChannelInboundHandler {
    typealias InboundIn = HTTPRequestPart
    typealias OutboundOut = HTTPResponsePart

    private(set) var paths: [String] = []
    private var context: ChannelHandlerContext?

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .head(let head) = unwrapInboundIn(data) { paths.append(head.path ?? "") }
    }

    /// Writes a 200 answer with `text` as its body.
    func answer(_ text: String) {
        guard let context else { return }
        context.write(wrapOutboundOut(.head(HTTPResponse(status: .ok, headerFields: [.contentLength: String(text.utf8.count)]))), promise: nil)
        context.write(wrapOutboundOut(.body(ByteBuffer(string: text))), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
    }
}

@Suite("Connection idle timeout and graceful close with event-loop routes")
struct ConnectionLifecycleTests {
    /// A connected channel with the server's pipeline, idle timeout 10 s: ``HeldRoute`` ahead of a
    /// router stand-in.
    static func connection(route: HeldRoute, router: RouterStandIn) throws -> EmbeddedChannel {
        let channel = EmbeddedChannel()
        let configuration = HTTPServerConfiguration(port: 0, idleTimeout: .seconds(10)).http1
        let server = RoutingHTTP1Channel(
            responder: { _, _, _ in }, configuration: configuration, routes: [route], maxBodySize: 64, serverName: "stamp-test",
            timers: RequestTimers(factory: TestMetrics())
        )
        try server.configure(channel.pipeline.syncOperations, logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }))
        try channel.pipeline.syncOperations.addHandler(router)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        return channel
    }

    static func send(_ text: String, to channel: EmbeddedChannel) throws {
        try channel.writeInbound(ByteBuffer(string: text))
    }

    /// Everything written to the socket so far.
    static func written(_ channel: EmbeddedChannel) throws -> String {
        var text = ""
        while let data = try channel.readOutbound(as: IOData.self) {
            if case .byteBuffer(let buffer) = data { text += String(buffer: buffer) }
        }
        return text
    }

    static func get(_ target: String) -> String {
        "GET \(target) HTTP/1.1\r\nHost: localhost\r\n\r\n"
    }

    /// A graceful shutdown that arrives while a route's answer is pending lets the answer out,
    /// marked `Connection: close`, and then closes the connection.
    @Test func quiesceWithALaterAnswerPendingDeliversItThenCloses() throws {
        let route = HeldRoute()
        let channel = try Self.connection(route: route, router: RouterStandIn())
        try Self.send(Self.get("/later?n=1"), to: channel)
        #expect(route.waiting == 1)
        channel.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        #expect(channel.isActive, "the answer is still to come")
        #expect(try Self.written(channel).isEmpty)

        route.answerAll()
        channel.embeddedEventLoop.run()
        let answer = try Self.written(channel)
        #expect(answer.hasPrefix("HTTP/1.1 200 OK\r\n"))
        #expect(answer.lowercased().contains("connection: close\r\n"))
        #expect(answer.hasSuffix("\r\n\r\nroute:1:"))
        #expect(!channel.isActive, "closed once the answer is written")
    }

    /// A graceful shutdown between requests closes the connection at once.
    @Test func quiesceBetweenRequestsCloses() throws {
        let channel = try Self.connection(route: HeldRoute(), router: RouterStandIn())
        try Self.send(Self.get("/now?n=1"), to: channel)
        #expect(try Self.written(channel).hasSuffix("route:1:"))
        channel.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        channel.embeddedEventLoop.run()
        #expect(!channel.isActive)
    }

    /// A route's answer that takes longer than the idle timeout keeps the connection open; the
    /// timeout counts again from the answer.
    @Test func idleTimeoutWaitsForAPendingAnswer() throws {
        let route = HeldRoute()
        let channel = try Self.connection(route: route, router: RouterStandIn())
        try Self.send(Self.get("/later?n=1"), to: channel)
        channel.embeddedEventLoop.advanceTime(by: .seconds(25))
        #expect(channel.isActive)

        route.answerAll()
        channel.embeddedEventLoop.run()
        #expect(try Self.written(channel).hasSuffix("route:1:"))
        channel.embeddedEventLoop.advanceTime(by: .seconds(9))
        #expect(channel.isActive)
        channel.embeddedEventLoop.advanceTime(by: .seconds(2))
        #expect(!channel.isActive)
    }

    /// Requests the route answers count as activity: a connection kept busy with them for longer
    /// than the timeout stays open, and is closed once it has been idle for the timeout.
    @Test func idleTimeoutCountsRouteAnswersAsActivity() throws {
        let channel = try Self.connection(route: HeldRoute(), router: RouterStandIn())
        for number in 1...5 {
            channel.embeddedEventLoop.advanceTime(by: .seconds(6))
            try Self.send(Self.get("/now?n=\(number)"), to: channel)
            #expect(try Self.written(channel).hasSuffix("route:\(number):"))
        }
        #expect(channel.isActive, "30 s of requests 6 s apart")
        channel.embeddedEventLoop.advanceTime(by: .seconds(9))
        #expect(channel.isActive)
        channel.embeddedEventLoop.advanceTime(by: .seconds(2))
        #expect(!channel.isActive)
    }

    /// The router's answers count too: a request passed on that the router answers after the
    /// timeout keeps the connection open until it is answered and then idle for the timeout.
    @Test func idleTimeoutWaitsForTheRouter() throws {
        let router = RouterStandIn()
        let channel = try Self.connection(route: HeldRoute(), router: router)
        try Self.send(Self.get("/elsewhere"), to: channel)
        #expect(router.paths == ["/elsewhere"])
        channel.embeddedEventLoop.advanceTime(by: .seconds(15))
        #expect(channel.isActive)

        router.answer("router")
        #expect(try Self.written(channel).hasSuffix("\r\n\r\nrouter"))
        channel.embeddedEventLoop.advanceTime(by: .seconds(9))
        #expect(channel.isActive)
        channel.embeddedEventLoop.advanceTime(by: .seconds(2))
        #expect(!channel.isActive)
    }

    /// A client that stops sending in the middle of a request is closed on at the timeout.
    @Test func idleTimeoutClosesOnAStalledRequest() throws {
        let route = HeldRoute()
        let channel = try Self.connection(route: route, router: RouterStandIn())
        try Self.send("POST /now?n=1 HTTP/1.1\r\nHost: localhost\r\nContent-Length: 10\r\n\r\nabc", to: channel)
        channel.embeddedEventLoop.advanceTime(by: .seconds(9))
        #expect(channel.isActive)
        channel.embeddedEventLoop.advanceTime(by: .seconds(2))
        #expect(!channel.isActive)
        #expect(try Self.written(channel).isEmpty)
    }
}

@Suite("Idle timeout decisions")
struct IdleTimeoutTests {
    static let start = NIODeadline.uptimeNanoseconds(1_000_000_000)

    static func at(seconds: Int64) -> NIODeadline {
        start + .seconds(seconds)
    }

    @Test func anIdleConnectionClosesAtTheTimeout() {
        let idle = IdleTimeout(timeout: .seconds(10), now: Self.start)
        #expect(idle.fired(at: Self.at(seconds: 10)) == .close)
    }

    @Test func activityMovesTheDeadline() {
        var idle = IdleTimeout(timeout: .seconds(10), now: Self.start)
        idle.requestStarted(at: Self.at(seconds: 4))
        idle.requestEnded(at: Self.at(seconds: 4))
        idle.answered(at: Self.at(seconds: 5))
        #expect(idle.fired(at: Self.at(seconds: 10)) == .wait(until: Self.at(seconds: 15)))
        #expect(idle.fired(at: Self.at(seconds: 15)) == .close)
    }

    @Test func aRequestReadWholeWaitsForItsAnswer() {
        var idle = IdleTimeout(timeout: .seconds(10), now: Self.start)
        idle.requestStarted(at: Self.at(seconds: 1))
        idle.requestEnded(at: Self.at(seconds: 1))
        #expect(idle.fired(at: Self.at(seconds: 30)) == .waitForAnswer)
        idle.answered(at: Self.at(seconds: 30))
        #expect(idle.deadline == Self.at(seconds: 40))
    }

    @Test func aRequestStillArrivingDoesNotWait() {
        var idle = IdleTimeout(timeout: .seconds(10), now: Self.start)
        idle.requestStarted(at: Self.at(seconds: 1))
        idle.bodyRead(at: Self.at(seconds: 3))
        #expect(idle.fired(at: Self.at(seconds: 11)) == .wait(until: Self.at(seconds: 13)))
        #expect(idle.fired(at: Self.at(seconds: 13)) == .close)
    }

    /// An answer written before its request's end was read (a refusal that needs no body) does
    /// not leave the request counted as waiting for an answer.
    @Test func anEarlyAnswerLeavesNothingInProgress() {
        var idle = IdleTimeout(timeout: .seconds(10), now: Self.start)
        idle.requestStarted(at: Self.at(seconds: 1))
        idle.answered(at: Self.at(seconds: 1))
        idle.requestEnded(at: Self.at(seconds: 2))
        #expect(idle.fired(at: Self.at(seconds: 12)) == .close)
    }
}
