import Foundation
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import NIOHTTP1
import NIOHTTPTypes
import NIOHTTPTypesHTTP1

/// Answers the requests of ``EventLoopRoute``s in the channel pipeline, on NIO's HTTP/1 parts
/// before any conversion to swift-http-types, and passes every other request on untouched to
/// Hummingbird (through its conversion and connection-state handler).
///
/// It sits behind NIO's pipelining assistance, which hands it one request at a time and holds
/// the next until the answer to this one is written, so answers keep the order of requests on a
/// keep-alive connection whichever side (route or router) writes them; the same assistance closes
/// a quiescing connection once the answer in progress is written. As it sees every request and
/// every answer of the connection, it keeps the connection's idle timeout (``IdleTimeout``).
final class EventLoopRouteHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    /// A request a route matched, while its body arrives.
    private struct Pending {
        let route: any EventLoopRoute
        let request: EventLoopRequest
        let started: NIODeadline
        var body: ByteBuffer?
        var tooLarge: Bool
    }

    private enum State {
        /// Between requests.
        case idle
        /// Forwarding the parts of a request to the router.
        case passing
        /// Reading the body of a request a route matched.
        case collecting
        /// Waiting for a route's answer.
        case answering
    }

    private let routes: [any EventLoopRoute]
    private let maxBodySize: Int
    private let serverName: String
    private let timers: RequestTimers
    private let idleTimeout: TimeAmount?
    private var state = State.idle
    private var pending: Pending?
    private var date = HTTPDate()
    private var idle: IdleTimeout?
    private var idleTimer: Scheduled<Void>?

    init(routes: [any EventLoopRoute], maxBodySize: Int, serverName: String, timers: RequestTimers, idleTimeout: TimeAmount?) {
        self.routes = routes
        self.maxBodySize = maxBodySize
        self.serverName = serverName
        self.timers = timers
        self.idleTimeout = idleTimeout
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { startIdleTimer(context: context) }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        idleTimer?.cancel()
        idleTimer = nil
    }

    func channelActive(context: ChannelHandlerContext) {
        startIdleTimer(context: context)
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        idleTimer?.cancel()
        idleTimer = nil
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = unwrapInboundIn(data)
        let now = context.eventLoop.now
        switch part {
        case .head: idle?.requestStarted(at: now)
        case .body: idle?.bodyRead(at: now)
        case .end: idle?.requestEnded(at: now)
        }
        switch state {
        case .idle:
            guard case .head(let head) = part else {
                context.fireChannelRead(data)
                return
            }
            let request = EventLoopRequest(head: head)
            guard let route = route(for: request) else {
                state = .passing
                context.fireChannelRead(data)
                return
            }
            let declared = head.headers.first(name: "content-length").flatMap { Int($0) } ?? 0
            pending = Pending(route: route, request: request, started: now, body: nil, tooLarge: declared > maxBodySize)
            state = .collecting
        case .passing:
            if case .end = part { state = .idle }
            context.fireChannelRead(data)
        case .collecting:
            switch part {
            case .head:
                // Cannot happen behind the pipelining assistance: a new head only after an end.
                context.close(promise: nil)
            case .body(var chunk):
                collect(&chunk)
            case .end(let trailers):
                answer(context: context, trailers: trailers)
            }
        case .answering:
            // The pipelining assistance holds the next request until this answer is written.
            context.close(promise: nil)
        }
    }

    /// Passes the router's answers on, noting when one ends for the idle timeout.
    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .end = unwrapOutboundIn(data) { answered(context: context) }
        context.write(data, promise: promise)
    }

    private func route(for request: EventLoopRequest) -> (any EventLoopRoute)? {
        let method: HTTPRequest.Method
        switch request.head.method {
        case .GET: method = .get
        case .POST: method = .post
        default:
            guard let other = HTTPRequest.Method(request.head.method.rawValue) else { return nil }
            method = other
        }
        return routes.first { $0.matches(method: method, path: request.path) }
    }

    private func collect(_ chunk: inout ByteBuffer) {
        guard var request = pending, !request.tooLarge else { return }
        pending = nil
        if (request.body?.readableBytes ?? 0) + chunk.readableBytes > maxBodySize {
            request.tooLarge = true
            request.body = nil
        } else if request.body == nil {
            request.body = chunk
        } else {
            request.body!.writeBuffer(&chunk)
        }
        pending = request
    }

    private func answer(context: ChannelHandlerContext, trailers: HTTPHeaders?) {
        guard let request = pending else { return }
        pending = nil
        if request.tooLarge {
            let problem = Problem(.bodyTooLarge, status: .contentTooLarge, detail: "request bodies are limited to \(maxBodySize) bytes")
            write(problem.directResponse, for: request, context: context)
            return
        }
        switch request.route.answer(request.request, body: request.body ?? ByteBuffer(), eventLoop: context.eventLoop) {
        case .now(let response):
            write(response, for: request, context: context)
        case .later(let future):
            state = .answering
            future.hop(to: context.eventLoop).assumeIsolated().whenComplete { result in
                switch result {
                case .success(let response):
                    self.write(response, for: request, context: context)
                case .failure:
                    self.write(Problem(.internalError, status: .internalServerError, detail: "internal error").directResponse, for: request, context: context)
                }
            }
        case .passOn:
            state = .passing
            context.fireChannelRead(wrapInboundOut(.head(request.request.head)))
            if let body = request.body { context.fireChannelRead(wrapInboundOut(.body(body))) }
            state = .idle
            context.fireChannelRead(wrapInboundOut(.end(trailers)))
        }
    }

    private func write(_ response: DirectResponse, for request: Pending, context: ChannelHandlerContext) {
        let now = context.eventLoop.now
        timers.timer(route: request.route.label, status: response.status.code).recordNanoseconds((now - request.started).nanoseconds)
        state = .idle
        guard context.channel.isActive else { return }
        let close = !request.request.head.isKeepAlive
        var headers = HTTPHeaders()
        headers.reserveCapacity(response.headers.count + 4)
        for field in response.headers {
            headers.add(name: field.name.rawName, value: field.value)
        }
        headers.add(name: "Content-Length", value: String(response.body.readableBytes))
        headers.add(name: "Date", value: date.now())
        headers.add(name: "Server", value: serverName)
        if close { headers.add(name: "Connection", value: "close") }
        let status = HTTPResponseStatus(statusCode: Int(response.status.code), reasonPhrase: response.status.reasonPhrase)
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))), promise: nil)
        if response.body.readableBytes > 0 {
            context.write(wrapOutboundOut(.body(.byteBuffer(response.body))), promise: nil)
        }
        answered(context: context)
        if close {
            let loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
            context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in loopBound.value.close(promise: nil) }
        } else {
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        }
    }

    /// Starts the idle timeout once the connection is active.
    private func startIdleTimer(context: ChannelHandlerContext) {
        guard let idleTimeout, idle == nil else { return }
        idle = IdleTimeout(timeout: idleTimeout, now: context.eventLoop.now)
        setIdleTimer(context: context)
    }

    /// Notes an answer's end for the idle timeout, setting its timer again if it waited for one.
    private func answered(context: ChannelHandlerContext) {
        guard idle != nil else { return }
        idle!.answered(at: context.eventLoop.now)
        if idleTimer == nil { setIdleTimer(context: context) }
    }

    private func setIdleTimer(context: ChannelHandlerContext) {
        guard let deadline = idle?.deadline else { return }
        let loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
        idleTimer = context.eventLoop.assumeIsolated().scheduleTask(deadline: deadline) { self.idleTimerFired(context: loopBound.value) }
    }

    private func idleTimerFired(context: ChannelHandlerContext) {
        idleTimer = nil
        guard let idle else { return }
        switch idle.fired(at: context.eventLoop.now) {
        case .close:
            context.close(promise: nil)
        case .wait:
            setIdleTimer(context: context)
        case .waitForAnswer:
            break
        }
    }
}

/// The `Date` header's text (RFC 9110's IMF-fixdate), made once a second.
struct HTTPDate {
    private var second = -1
    private var text = ""

    mutating func now() -> String {
        var seconds = time(nil)
        guard seconds != second else { return text }
        second = seconds
        var parts = tm()
        gmtime_r(&seconds, &parts)
        text = Self.format(parts)
        return text
    }

    static func format(_ parts: tm) -> String {
        let days = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
        let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        func two(_ value: Int32) -> String { value < 10 ? "0\(value)" : "\(value)" }
        return "\(days[Int(parts.tm_wday)]), \(two(parts.tm_mday)) \(months[Int(parts.tm_mon)]) \(parts.tm_year + 1900) \(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec)) GMT"
    }
}

/// Hummingbird's HTTP/1 channel with ``EventLoopRoute``s ahead of its router and of its conversion
/// to swift-http-types: the same decoder limits, idle timeout and graceful close, with NIO's
/// pipelining assistance so that requests answered in the pipeline and by the router are answered
/// in order.
struct RoutingHTTP1Channel: HTTPChannelHandler {
    typealias Value = NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>

    let responder: HTTPChannelHandler.Responder
    let configuration: HTTP1Channel.Configuration
    let routes: [any EventLoopRoute]
    let maxBodySize: Int
    let serverName: String
    let timers: RequestTimers

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        channel.eventLoop.makeCompletedFuture {
            try configure(channel.pipeline.syncOperations, logger: logger)
            return try NIOAsyncChannel(wrappingChannelSynchronously: channel, configuration: .init(isOutboundHalfClosureEnabled: true))
        }
    }

    /// Adds the HTTP/1 handlers, the route handler, and Hummingbird's conversion and connection
    /// state to `pipeline`: everything up to the channel that feeds the router.
    func configure(_ pipeline: ChannelPipeline.SynchronousOperations, logger: Logger) throws {
        var limits = NIOHTTPDecoderLimitConfiguration()
        limits.maxHeaderFieldSize = configuration.httpDecoder.maxHeaderFieldSize
        limits.maxHeaderListSize = configuration.httpDecoder.maxHeaderListSize
        limits.maxHeaderFieldCount = configuration.httpDecoder.maxHeaderFieldCount
        try pipeline.configureHTTPServerPipeline(
            withPipeliningAssistance: true,
            withErrorHandling: false,
            withOutboundHeaderValidation: false,
            withEncoderConfiguration: .init(),
            withDecoderLimitConfiguration: limits
        )
        try pipeline.addHandler(EventLoopRouteHandler(routes: routes, maxBodySize: maxBodySize, serverName: serverName, timers: timers, idleTimeout: configuration.idleTimeout))
        try pipeline.addHandler(HTTP1ToHTTPServerCodec(secure: false))
        // The idle timeout is the route handler's, which sees every request; this one would see
        // only those passed on, and so close a connection busy with the others.
        try pipeline.addHandler(HTTPConnectionStateHandler(idleTimeout: nil, logger: logger))
    }

    func handle(value asyncChannel: Value, logger: Logger) async {
        await handleHTTP(asyncChannel: asyncChannel, logger: logger)
    }
}
