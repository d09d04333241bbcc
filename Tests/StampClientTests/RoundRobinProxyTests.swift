import Logging
import NIOCore
import NIOPosix
import StampLoadBalancer
import Synchronization
import Testing

@Suite("Round-robin load balancer")
struct RoundRobinProxyTests {
    @Test func connectionsAreSharedInTurn() async throws {
        let backends = try await (0..<3).asyncMap { _ in try await EchoServer() }
        try await withProxy(backends: backends.map(\.port)) { proxy in
            for index in 0..<30 {
                let answer = try await roundTrip(port: proxy.port, payload: Array("hello \(index)".utf8))
                #expect(answer == Array("hello \(index)".utf8))
            }
        }
        #expect(backends.map(\.connections) == [10, 10, 10])
        for backend in backends { try await backend.close() }
    }

    @Test func aDeadBackendIsSkipped() async throws {
        let first = try await EchoServer()
        let second = try await EchoServer()
        let dead = try await EchoServer()
        try await dead.close()
        try await withProxy(backends: [first.port, dead.port, second.port]) { proxy in
            for _ in 0..<4 {
                let answer = try await roundTrip(port: proxy.port, payload: Array("ping".utf8))
                #expect(answer == Array("ping".utf8))
            }
        }
        // Turns 0 and 3 start at the first backend; turn 1 falls from the dead one to the second, as does turn 2.
        #expect(first.connections == 2)
        #expect(second.connections == 2)
        try await first.close()
        try await second.close()
    }

    @Test func aClientIsClosedWhenEveryBackendIsDead() async throws {
        let dead = try await EchoServer()
        try await dead.close()
        try await withProxy(backends: [dead.port]) { proxy in
            do {
                let answer = try await roundTrip(port: proxy.port, payload: Array("ping".utf8))
                #expect(answer.isEmpty)
            } catch let error as IOError where error.errnoCode == ECONNRESET {
                // Closed with a reset: the proxy closed the connection while the ping was still unread.
            }
        }
    }

    @Test func aLargePayloadRoundTripsIntact() async throws {
        let backend = try await EchoServer()
        var generator = SystemRandomNumberGenerator()
        let payload = (0..<1_048_576).map { _ in UInt8.random(in: 0...255, using: &generator) }
        try await withProxy(backends: [backend.port]) { proxy in
            let answer = try await roundTrip(port: proxy.port, payload: payload)
            #expect(answer.count == payload.count)
            #expect(answer == payload)
        }
        try await backend.close()
    }

    @Test func shutdownClosesTheListener() async throws {
        let backend = try await EchoServer()
        let port = try await withProxy(backends: [backend.port]) { proxy in proxy.port }
        await #expect(throws: (any Error).self) {
            try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton).connect(host: "127.0.0.1", port: port).get()
        }
        try await backend.close()
    }

    /// Runs a proxy in front of `backends` for the length of `body`, then cancels it.
    private func withProxy<Result: Sendable>(backends: [Int], _ body: (RoundRobinProxy) async throws -> Result) async throws -> Result {
        let proxy = try await RoundRobinProxy.bind(
            configuration: .init(backends: backends.map { .init(port: $0) }),
            logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })
        )
        return try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await proxy.run() }
            defer { group.cancelAll() }
            return try await body(proxy)
        }
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
