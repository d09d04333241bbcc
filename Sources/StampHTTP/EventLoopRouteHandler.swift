import Foundation
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import NIOHTTP1
import NIOHTTPTypes
import NIOHTTPTypesHTTP1

/// Answers the requests of ``EventLoopRoute``s in the channel pipeline and passes every other
/// request on to Hummingbird untouched.
///
/// It sits behind NIO's pipelining assistance, which hands it one request at a time and holds
/// the next until the answer to this one is written, so answers keep the order of requests on a
/// keep-alive connection whichever side (route or router) writes them.
final class EventLoopRouteHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundOut = HTTPResponsePart

    /// A request a route matched, while its body arrives.
    private struct Pending {
        let route: any EventLoopRoute
        let head: HTTPRequest
        let started: ContinuousClock.Instant
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
    private var state = State.idle
    private var pending: Pending?
    private var date = HTTPDate()

    init(routes: [any EventLoopRoute], maxBodySize: Int, serverName: String, timers: RequestTimers) {
        self.routes = routes
        self.maxBodySize = maxBodySize
        self.serverName = serverName
        self.timers = timers
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = unwrapInboundIn(data)
        switch state {
        case .idle:
            guard case .head(let head) = part, let route = route(for: head) else {
                if case .head = part { state = .passing }
                context.fireChannelRead(data)
                return
            }
            let declared = head.headerFields[.contentLength].flatMap { Int($0) } ?? 0
            pending = Pending(route: route, head: head, started: .now, body: nil, tooLarge: declared > maxBodySize)
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
            case .end:
                answer(context: context)
            }
        case .answering:
            // The pipelining assistance holds the next request until this answer is written.
            context.close(promise: nil)
        }
    }

    private func route(for head: HTTPRequest) -> (any EventLoopRoute)? {
        let path = head.pathWithoutQuery
        return routes.first { $0.matches(method: head.method, path: path) }
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

    private func answer(context: ChannelHandlerContext) {
        guard let request = pending else { return }
        pending = nil
        if request.tooLarge {
            let problem = Problem(.bodyTooLarge, status: .contentTooLarge, detail: "request bodies are limited to \(maxBodySize) bytes")
            write(problem.directResponse, for: request, context: context)
            return
        }
        switch request.route.answer(request.head, body: request.body ?? ByteBuffer(), eventLoop: context.eventLoop) {
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
            context.fireChannelRead(wrapInboundOut(.head(request.head)))
            if let body = request.body { context.fireChannelRead(wrapInboundOut(.body(body))) }
            state = .idle
            context.fireChannelRead(wrapInboundOut(.end(nil)))
        }
    }

    private func write(_ response: DirectResponse, for request: Pending, context: ChannelHandlerContext) {
        timers.timer(route: request.route.label, status: response.status.code).record(duration: request.started.duration(to: .now))
        state = .idle
        guard context.channel.isActive else { return }
        let close = request.head.headerFields[.connection]?.lowercased() == "close"
        var headers = response.headers
        headers[.contentLength] = String(response.body.readableBytes)
        headers[.date] = date.now()
        headers[.server] = serverName
        if close { headers[.connection] = "close" }
        context.write(wrapOutboundOut(.head(HTTPResponse(status: response.status, headerFields: headers))), promise: nil)
        if response.body.readableBytes > 0 {
            context.write(wrapOutboundOut(.body(response.body)), promise: nil)
        }
        if close {
            context.writeAndFlush(wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { _ in context.close(promise: nil) }
        } else {
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
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

/// Hummingbird's HTTP/1 channel with ``EventLoopRoute``s ahead of its router: the same decoder
/// limits, idle timeout and graceful close, with NIO's pipelining assistance so that requests
/// answered in the pipeline and by the router are answered in order.
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
            var limits = NIOHTTPDecoderLimitConfiguration()
            limits.maxHeaderFieldSize = configuration.httpDecoder.maxHeaderFieldSize
            limits.maxHeaderListSize = configuration.httpDecoder.maxHeaderListSize
            limits.maxHeaderFieldCount = configuration.httpDecoder.maxHeaderFieldCount
            let pipeline = channel.pipeline.syncOperations
            try pipeline.configureHTTPServerPipeline(
                withPipeliningAssistance: true,
                withErrorHandling: false,
                withOutboundHeaderValidation: false,
                withEncoderConfiguration: .init(),
                withDecoderLimitConfiguration: limits
            )
            try pipeline.addHandler(HTTP1ToHTTPServerCodec(secure: false))
            try pipeline.addHandler(HTTPConnectionStateHandler(idleTimeout: configuration.idleTimeout.map { .nanoseconds($0.nanoseconds) }, logger: logger))
            try pipeline.addHandler(EventLoopRouteHandler(routes: routes, maxBodySize: maxBodySize, serverName: serverName, timers: timers))
            return try NIOAsyncChannel(wrappingChannelSynchronously: channel, configuration: .init(isOutboundHalfClosureEnabled: true))
        }
    }

    func handle(value asyncChannel: Value, logger: Logger) async {
        await handleHTTP(asyncChannel: asyncChannel, logger: logger)
    }
}
