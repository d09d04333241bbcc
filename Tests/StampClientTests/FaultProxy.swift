import NIOCore
import NIOPosix
import Synchronization

/// A TCP proxy on loopback in front of one node, whose faults a test switches at run time.
///
/// The mode applies to connections accepted after it is set: `pass` forwards both ways,
/// `delay` holds each chunk from the node back for a while, `reset` answers with a TCP reset,
/// and `hang` accepts and reads but never answers.
final class FaultProxy: Sendable {
    enum Mode: Sendable, Equatable {
        case pass
        case delay(TimeAmount)
        case reset
        case hang
    }

    /// The mode and the count of accepted connections, shared with the accepting channel.
    private final class Settings: Sendable {
        let mode = Mutex(Mode.pass)
        let accepted = Atomic<Int>(0)
        let upstreamPort: Atomic<Int>

        init(upstreamPort: Int) {
            self.upstreamPort = Atomic(upstreamPort)
        }
    }

    private let settings: Settings
    private let channel: any Channel

    /// The proxy's base URL.
    var url: String { "http://127.0.0.1:\(channel.localAddress!.port!)" }

    /// Connections accepted so far.
    var connections: Int { settings.accepted.load(ordering: .relaxed) }

    func set(_ mode: Mode) {
        settings.mode.withLock { $0 = mode }
    }

    /// Points the proxy at another port, for nodes started after their proxy.
    func set(upstreamPort: Int) {
        settings.upstreamPort.store(upstreamPort, ordering: .relaxed)
    }

    /// Listens on a free loopback port, forwarding to `upstreamPort`.
    init(upstreamPort: Int = 0) async throws {
        let settings = Settings(upstreamPort: upstreamPort)
        self.settings = settings
        channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { inbound in
                settings.accepted.add(1, ordering: .relaxed)
                switch settings.mode.withLock({ $0 }) {
                case .reset:
                    // A zero linger time makes close send a TCP reset instead of a normal close.
                    guard let provider = inbound as? any SocketOptionProvider else { return inbound.close() }
                    return provider.setSoLinger(linger(l_onoff: 1, l_linger: 0)).flatMap { inbound.close() }
                case .hang:
                    return inbound.pipeline.addHandler(Discard())
                case .pass:
                    return Self.connect(inbound, upstreamPort: settings.upstreamPort.load(ordering: .relaxed), delay: nil)
                case .delay(let amount):
                    return Self.connect(inbound, upstreamPort: settings.upstreamPort.load(ordering: .relaxed), delay: amount)
                }
            }
            .bind(host: "127.0.0.1", port: 0)
            .get()
    }

    func close() async throws {
        try await channel.close()
    }

    private static func connect(_ inbound: any Channel, upstreamPort: Int, delay: TimeAmount?) -> EventLoopFuture<Void> {
        inbound.setOption(.autoRead, value: false).flatMap {
            ClientBootstrap(group: inbound.eventLoop)
                .connect(host: "127.0.0.1", port: upstreamPort)
        }.flatMap { outbound in
            let toNode = Glue(peer: outbound, delay: nil)
            let fromNode = Glue(peer: inbound, delay: delay)
            return outbound.pipeline.addHandler(fromNode).flatMap {
                inbound.pipeline.addHandler(toNode)
            }.flatMap {
                inbound.setOption(.autoRead, value: true)
            }
        }.flatMapError { _ in
            inbound.close()
        }
    }

    /// Forwards what one side reads to the other side, optionally after a delay, and closes the
    /// other side when this one closes.
    private final class Glue: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer
        let peer: any Channel
        let delay: TimeAmount?

        init(peer: any Channel, delay: TimeAmount?) {
            self.peer = peer
            self.delay = delay
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let buffer = Self.unwrapInboundIn(data)
            let peer = self.peer
            if let delay {
                context.eventLoop.scheduleTask(in: delay) { peer.writeAndFlush(buffer, promise: nil) }
            } else {
                peer.writeAndFlush(buffer, promise: nil)
            }
        }

        func channelInactive(context: ChannelHandlerContext) {
            let peer = self.peer
            if let delay {
                context.eventLoop.scheduleTask(in: delay) { peer.close(promise: nil) }
            } else {
                peer.close(promise: nil)
            }
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            context.close(promise: nil)
        }
    }

    /// Reads and drops everything, never answering.
    private final class Discard: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {}
    }
}
