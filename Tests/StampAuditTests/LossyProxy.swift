import NIOCore
import NIOPosix
import Synchronization

/// A TCP proxy on loopback in front of one server that loses the answer of every `dropEvery`-th
/// connection: it forwards the request, lets the server answer, and closes the client's
/// connection on the answer's first bytes, so the client cannot know whether its write was stored.
final class LossyProxy: Sendable {
    private final class Counters: Sendable {
        let accepted = Atomic<Int>(0)
        let dropped = Atomic<Int>(0)
    }

    private let counters = Counters()
    private let channel: any Channel

    var port: Int { channel.localAddress!.port! }
    /// Answers lost so far.
    var dropped: Int { counters.dropped.load(ordering: .relaxed) }

    init(upstreamPort: Int, dropEvery: Int) async throws {
        let counters = self.counters
        channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.autoRead, value: false)
            .childChannelInitializer { inbound in
                let number = counters.accepted.wrappingAdd(1, ordering: .relaxed).newValue
                let lose = number % dropEvery == 0
                return ClientBootstrap(group: inbound.eventLoop)
                    .connect(host: "127.0.0.1", port: upstreamPort)
                    .flatMap { outbound in
                        outbound.pipeline.addHandler(Forward(peer: inbound, loseAnswer: lose ? counters : nil)).flatMap {
                            inbound.pipeline.addHandler(Forward(peer: outbound, loseAnswer: nil))
                        }.flatMap {
                            inbound.setOption(.autoRead, value: true)
                        }
                    }
                    .flatMapError { _ in inbound.close() }
            }
            .bind(host: "127.0.0.1", port: 0)
            .get()
    }

    func close() async throws {
        try await channel.close()
    }

    /// Forwards what one side reads to the other, or (for a lost answer) closes both sides instead.
    private final class Forward: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer
        let peer: any Channel
        let loseAnswer: Counters?

        init(peer: any Channel, loseAnswer: Counters?) {
            self.peer = peer
            self.loseAnswer = loseAnswer
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            if let loseAnswer {
                loseAnswer.dropped.add(1, ordering: .relaxed)
                peer.close(promise: nil)
                context.close(promise: nil)
                return
            }
            peer.writeAndFlush(Self.unwrapInboundIn(data), promise: nil)
        }

        func channelInactive(context: ChannelHandlerContext) {
            peer.close(promise: nil)
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            context.close(promise: nil)
        }
    }
}
