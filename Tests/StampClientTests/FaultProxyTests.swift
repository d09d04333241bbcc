import NIOCore
import NIOPosix
import StampTesting
import Synchronization
import Testing

/// The test proxy: forwarding, round-robin over upstreams, and each fault mode, switched while it runs.
@Suite("Fault proxy")
struct FaultProxyTests {
    @Test func connectionsAreSharedInTurn() async throws {
        let upstreams = try await (0..<3).asyncMap { _ in try await EchoServer() }
        let proxy = try await FaultProxy(upstreamPorts: upstreams.map(\.port))
        for index in 0..<30 {
            let answer = try await roundTrip(port: proxy.port, payload: Array("hello \(index)".utf8))
            #expect(answer == Array("hello \(index)".utf8))
        }
        try await proxy.close()
        #expect(upstreams.map(\.connections) == [10, 10, 10])
        for upstream in upstreams { try await upstream.close() }
    }

    @Test func aLargePayloadRoundTripsIntact() async throws {
        let upstream = try await EchoServer()
        let proxy = try await FaultProxy(upstreamPort: upstream.port)
        var generator = SystemRandomNumberGenerator()
        let payload = (0..<1_048_576).map { _ in UInt8.random(in: 0...255, using: &generator) }
        let answer = try await roundTrip(port: proxy.port, payload: payload)
        #expect(answer.count == payload.count)
        #expect(answer == payload)
        try await proxy.close()
        try await upstream.close()
    }

    @Test func aClientIsClosedWhenItsUpstreamIsDead() async throws {
        let dead = try await EchoServer()
        try await dead.close()
        let proxy = try await FaultProxy(upstreamPort: dead.port)
        do {
            let answer = try await roundTrip(port: proxy.port, payload: Array("ping".utf8))
            #expect(answer.isEmpty)
        } catch let error as IOError where error.errnoCode == ECONNRESET {
            // Closed with a reset: the proxy closed the connection while the ping was still unread.
        }
        try await proxy.close()
    }

    @Test func closeClosesTheListener() async throws {
        let upstream = try await EchoServer()
        let proxy = try await FaultProxy(upstreamPort: upstream.port)
        try await proxy.close()
        await #expect(throws: (any Error).self) {
            try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton).connect(host: "127.0.0.1", port: proxy.port).get()
        }
        try await upstream.close()
    }

    @Test func resetAnswersWithATCPReset() async throws {
        let upstream = try await EchoServer()
        let proxy = try await FaultProxy(upstreamPort: upstream.port)
        proxy.set(.reset)
        // The reset may reach the client while its connect completes, or on its first read.
        let error = await #expect(throws: (any Error).self) {
            _ = try await roundTrip(port: proxy.port, payload: [])
        }
        #expect(error.map(isReset) == true, "\(String(describing: error))")
        #expect(upstream.connections == 0, "a reset connection never reaches the upstream")
        try await proxy.close()
        try await upstream.close()
    }

    /// A hanging connection reads and never answers, while one accepted after the switch back to
    /// `pass` is answered; closing the proxy ends the hanging one with nothing received.
    @Test func hangAcceptsAndNeverAnswers() async throws {
        let upstream = try await EchoServer()
        let proxy = try await FaultProxy(upstreamPort: upstream.port)
        proxy.set(.hang)
        try await withThrowingTaskGroup(of: [UInt8].self) { group in
            group.addTask { try await roundTrip(port: proxy.port, payload: Array("ping".utf8)) }
            await proxy.waitForConnections(1)
            proxy.set(.pass)
            let answer = try await roundTrip(port: proxy.port, payload: Array("pong".utf8))
            #expect(answer == Array("pong".utf8))
            #expect(upstream.connections == 1, "only the connection after the switch reached the upstream")
            try await proxy.close()
            let hung = try await group.next()
            #expect(hung == [], "the hanging connection got no answer")
        }
        try await upstream.close()
    }

    @Test func delayHoldsTheAnswerBack() async throws {
        let upstream = try await EchoServer()
        let proxy = try await FaultProxy(upstreamPort: upstream.port)
        proxy.set(.delay(.milliseconds(200)))
        let started = ContinuousClock.now
        let answer = try await roundTrip(port: proxy.port, payload: Array("slow".utf8))
        #expect(started.duration(to: .now) >= .milliseconds(200))
        #expect(answer == Array("slow".utf8), "a delayed answer arrives whole")
        try await proxy.close()
        try await upstream.close()
    }

    /// In `dropResponse(every: 2)` the first connection is answered, and the second reaches the
    /// upstream (which answers) but is closed before any of the answer reaches the client.
    @Test func dropResponseForwardsTheRequestAndLosesTheAnswer() async throws {
        let upstream = try await EchoServer()
        let proxy = try await FaultProxy(upstreamPort: upstream.port)
        proxy.set(.dropResponse(every: 2))
        let first = try await roundTrip(port: proxy.port, payload: Array("kept".utf8))
        #expect(first == Array("kept".utf8))
        do {
            let second = try await roundTrip(port: proxy.port, payload: Array("lost".utf8))
            #expect(second.isEmpty)
        } catch let error as IOError where error.errnoCode == ECONNRESET {
            // Closed with a reset: the client's half-close was still unread when the proxy closed.
        }
        #expect(upstream.connections == 2)
        #expect(proxy.droppedResponses == 1, "the upstream answered the second request, and the answer was dropped")
        try await proxy.close()
        try await upstream.close()
    }
}

/// Whether `error` is a TCP reset, seen on a read or when a connect completed.
private func isReset(_ error: any Error) -> Bool {
    if let error = error as? IOError { return error.errnoCode == ECONNRESET }
    if let error = error as? NIOConnectionError { return !error.connectionErrors.isEmpty && error.connectionErrors.allSatisfy { isReset($0.error) } }
    return false
}

/// Sends `payload`, half-closes, and returns every byte read until the other side closes.
private func roundTrip(port: Int, payload: [UInt8]) async throws -> [UInt8] {
    let client = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
        .connect(host: "127.0.0.1", port: port) { channel in
            channel.eventLoop.makeCompletedFuture {
                try NIOAsyncChannel<ByteBuffer, ByteBuffer>(
                    wrappingChannelSynchronously: channel,
                    configuration: .init(isOutboundHalfClosureEnabled: true)
                )
            }
        }
    return try await client.executeThenClose { inbound, outbound in
        try await withThrowingTaskGroup(of: [UInt8].self) { group in
            group.addTask {
                // Several writes, so that the proxy forwards more than one chunk. A proxy that
                // closes the connection fails the writes; the bytes read back tell the outcome.
                var offset = 0
                do {
                    while offset < payload.count {
                        let end = min(payload.count, offset + 65_536)
                        try await outbound.write(ByteBuffer(bytes: payload[offset..<end]))
                        offset = end
                    }
                } catch {}
                outbound.finish()
                return []
            }
            group.addTask {
                var received: [UInt8] = []
                do {
                    for try await buffer in inbound { received += buffer.readableBytesView }
                } catch let error as ChannelError where error == .inputClosed || error == .ioOnClosedChannel {
                    // The proxy closed the connection: what came before it is the answer.
                }
                return received
            }
            var received: [UInt8] = []
            for try await part in group { received += part }
            return received
        }
    }
}

/// A TCP server on loopback that echoes what it reads, closes its output when its input ends,
/// and counts connections.
private final class EchoServer: Sendable {
    private let channel: any Channel
    private let accepted = Counter()
    let port: Int

    var connections: Int { accepted.value }

    init() async throws {
        let accepted = self.accepted
        channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .childChannelInitializer { channel in
                accepted.increment()
                return channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(Echo())
                }
            }
            .bind(host: "127.0.0.1", port: 0)
            .get()
        port = channel.localAddress!.port!
    }

    func close() async throws {
        try await channel.close()
    }

    private final class Counter: Sendable {
        private let count = Atomic<Int>(0)
        var value: Int { count.load(ordering: .relaxed) }
        func increment() { count.add(1, ordering: .relaxed) }
    }

    private final class Echo: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            context.write(data, promise: nil)
        }

        func channelReadComplete(context: ChannelHandlerContext) {
            context.flush()
        }

        func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
            if case .inputClosed = event as? ChannelEvent {
                context.close(mode: .output, promise: nil)
            }
        }
    }
}

extension Sequence where Element: Sendable {
    fileprivate func asyncMap<T>(_ transform: (Element) async throws -> T) async rethrows -> [T] {
        var result: [T] = []
        for element in self { result.append(try await transform(element)) }
        return result
    }
}
