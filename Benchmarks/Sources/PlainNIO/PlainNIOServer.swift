import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization

/// A plain SwiftNIO HTTP/1.1 server that answers `GET /v1/ids` with a counter inside its channel
/// handler: the baseline `scripts/bench-serve` compares a generator node with when no router, no
/// middleware and no task stand between the event loop and the answer.
///
/// Arguments, as `BareHummingbird` takes them: the port (default 7491; 0 binds a free one), then
/// a file to write the port bound to once it listens. It runs on `MultiThreadedEventLoopGroup.singleton`
/// (one event loop per core), as Hummingbird does, with the pipeline `configureHTTPServerPipeline()`
/// sets up (keep-alive and pipelined requests answered in order).
@main
enum PlainNIOServer {
    static func main() async throws {
        let arguments = CommandLine.arguments.dropFirst()
        let port = arguments.first.flatMap(Int.init) ?? 7491
        let portFile = arguments.dropFirst().first
        let counter = Counter()
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(CounterHandler(counter: counter))
                }
            }
            .bind(host: "127.0.0.1", port: port)
            .get()
        if let portFile, let bound = channel.localAddress?.port {
            try Data("\(bound)\n".utf8).write(to: URL(fileURLWithPath: portFile), options: .atomic)
        }
        try await channel.closeFuture.get()
    }
}

/// The count every connection's handler takes the next value of.
final class Counter: Sendable {
    private let value = Atomic<Int64>(0)

    /// The next value, from 1.
    func next() -> Int64 {
        value.add(1, ordering: .relaxed).newValue
    }
}

/// Answers `GET /v1/ids` with `{"ids":["<counter>"],"node":0}` and every other request with 404,
/// on the event loop, one answer per request.
final class CounterHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let counter: Counter
    /// The head of the request being read, until its end.
    private var head: HTTPRequestHead?

    init(counter: Counter) {
        self.counter = counter
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
        case .body:
            break
        case .end:
            guard let head else { return }
            self.head = nil
            answer(head, context: context)
        }
    }

    private func answer(_ request: HTTPRequestHead, context: ChannelHandlerContext) {
        let path = request.uri.prefix { $0 != "?" }
        var body = context.channel.allocator.buffer(capacity: 40)
        var headers = HTTPHeaders()
        let status: HTTPResponseStatus
        if request.method == .GET, path == "/v1/ids" {
            status = .ok
            body.writeString(#"{"ids":["\#(counter.next())"],"node":0}"#)
            headers.add(name: "Content-Type", value: "application/json")
            headers.add(name: "Cache-Control", value: "no-store")
        } else {
            status = .notFound
        }
        headers.add(name: "Content-Length", value: String(body.readableBytes))
        let keepAlive = request.isKeepAlive
        if !keepAlive { headers.add(name: "Connection", value: "close") }
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: request.version, status: status, headers: headers))), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
        let written = context.writeAndFlush(wrapOutboundOut(.end(nil)))
        if !keepAlive {
            let context = NIOLoopBound(context, eventLoop: context.eventLoop)
            written.whenComplete { _ in context.value.close(promise: nil) }
        }
    }
}
