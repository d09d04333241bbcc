import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import Synchronization

/// A TCP load balancer on loopback that hands each accepted connection to the next backend in turn.
///
/// A backend whose connect fails is skipped for that connection and the next one is tried; a
/// client is closed when every backend fails. Bytes are copied both ways with backpressure (a side
/// is read only while the other side is writable), a half-close on one side is passed on to the
/// other, and an error on either side closes both. The proxy listens from ``bind(configuration:group:logger:)``
/// until its ``run()`` ends, on graceful shutdown or cancellation, when it closes the listener and
/// every connection.
public final class RoundRobinProxy: Service, Sendable {
    /// Where the proxy listens and what it forwards to.
    public struct Configuration: Sendable {
        /// One backend's loopback or network address.
        public struct Backend: Sendable, Equatable {
            public var host: String
            public var port: Int

            public init(host: String = "127.0.0.1", port: Int) {
                self.host = host
                self.port = port
            }
        }

        /// The address to listen on; loopback by default.
        public var host: String
        /// The port to listen on; 0 takes a free one, reported by ``RoundRobinProxy/port``.
        public var port: Int
        /// The backends, in round-robin order.
        public var backends: [Backend]
        /// How long a connect to one backend may take before the next is tried.
        public var connectTimeout: TimeAmount

        public init(host: String = "127.0.0.1", port: Int = 0, backends: [Backend], connectTimeout: TimeAmount = .seconds(1)) {
            self.host = host
            self.port = port
            self.backends = backends
            self.connectTimeout = connectTimeout
        }
    }

    /// The port the proxy listens on.
    public let port: Int

    private let listener: any Channel
    private let connections: Connections
    private let logger: Logger

    private init(listener: any Channel, connections: Connections, logger: Logger) {
        self.listener = listener
        self.port = listener.localAddress?.port ?? 0
        self.connections = connections
        self.logger = logger
    }

    /// Starts listening; connections are forwarded from now on, until ``run()`` ends.
    public static func bind(
        configuration: Configuration,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        logger: Logger
    ) async throws -> RoundRobinProxy {
        precondition(!configuration.backends.isEmpty, "a load balancer needs at least one backend")
        let connections = Connections()
        let listener = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .serverChannelOption(.backlog, value: 1024)
            .childChannelOption(.autoRead, value: false)
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { inbound in
                guard connections.register(inbound) else { return inbound.close() }
                let first = connections.nextTurn()
                return connect(inbound, configuration: configuration, first: first, attempt: 0, connections: connections, logger: logger)
            }
            .bind(host: configuration.host, port: configuration.port)
            .get()
        let proxy = RoundRobinProxy(listener: listener, connections: connections, logger: logger)
        logger.debug("load balancer listening", metadata: ["stamp.balancer.port": "\(proxy.port)", "stamp.balancer.backends": "\(configuration.backends.count)"])
        return proxy
    }

    /// Forwards connections until graceful shutdown or cancellation, then closes the listener and every connection.
    public func run() async throws {
        try? await gracefulShutdown()
        await close()
    }

    /// Closes the listener and every connection; ``run()`` does this when it ends.
    public func close() async {
        try? await listener.close()
        for channel in connections.closeAll() {
            try? await channel.close()
        }
    }

    /// Connects `inbound` to backend `first + attempt` (modulo the count), trying the next on failure.
    private static func connect(
        _ inbound: any Channel,
        configuration: Configuration,
        first: Int,
        attempt: Int,
        connections: Connections,
        logger: Logger
    ) -> EventLoopFuture<Void> {
        guard attempt < configuration.backends.count else {
            logger.warning("no backend accepted a connection", metadata: ["stamp.balancer.backends": "\(configuration.backends.count)"])
            return inbound.close()
        }
        let backend = configuration.backends[(first + attempt) % configuration.backends.count]
        return ClientBootstrap(group: inbound.eventLoop)
            .connectTimeout(configuration.connectTimeout)
            .channelOption(.autoRead, value: false)
            .channelOption(.allowRemoteHalfClosure, value: true)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .connect(host: backend.host, port: backend.port)
            .flatMap { outbound in
                // Shutdown may have begun while the connect was under way.
                guard connections.register(outbound) else {
                    return outbound.close().flatMap { inbound.close() }
                }
                // The client's channel becomes active only after this initializer: if it closes before
                // that, no handler hears of it, so its end closes the backend's channel here.
                inbound.closeFuture.whenComplete { _ in outbound.close(promise: nil) }
                do {
                    let (toBackend, toClient) = Glue.pair()
                    try inbound.pipeline.syncOperations.addHandler(toBackend)
                    try outbound.pipeline.syncOperations.addHandler(toClient)
                } catch {
                    return outbound.close().flatMap { inbound.close() }
                }
                // Reading starts now that the glue is in place; from here on the glue holds reads back
                // while the other side cannot take more.
                return inbound.setOption(.autoRead, value: true).flatMap {
                    outbound.setOption(.autoRead, value: true)
                }
            }
            .flatMapError { error in
                logger.debug("backend connect failed", metadata: ["stamp.balancer.backend": "\(backend.host):\(backend.port)", "stamp.balancer.error": "\(error)"])
                return connect(inbound, configuration: configuration, first: first, attempt: attempt + 1, connections: connections, logger: logger)
            }
    }

    /// The round-robin turn, and the open channels on both sides so that shutdown can close them.
    private final class Connections: Sendable {
        private struct State {
            var channels: [ObjectIdentifier: any Channel] = [:]
            var closed = false
        }

        private let state = Mutex(State())
        private let turn = Atomic<Int>(0)

        /// The index of the backend the next accepted connection tries first.
        func nextTurn() -> Int {
            turn.wrappingAdd(1, ordering: .relaxed).oldValue & Int.max
        }

        /// Tracks `channel` until it closes; `false` once shutdown has begun.
        func register(_ channel: any Channel) -> Bool {
            let key = ObjectIdentifier(channel)
            let accepted = state.withLock { state in
                guard !state.closed else { return false }
                state.channels[key] = channel
                return true
            }
            guard accepted else { return false }
            channel.closeFuture.whenComplete { _ in
                _ = self.state.withLock { $0.channels.removeValue(forKey: key) }
            }
            return true
        }

        /// Refuses further channels and returns those still open.
        func closeAll() -> [any Channel] {
            state.withLock { state in
                state.closed = true
                return Array(state.channels.values)
            }
        }
    }
}

/// One of a matched pair of handlers, one per channel, that copies what its channel reads to the
/// other channel (the standard NIO "glue" handler).
///
/// Its channel is read only while the partner's is writable; end of input is passed on as a
/// half-close of the partner's output; close or error closes both. Both channels share one event loop.
private final class Glue: ChannelDuplexHandler {
    typealias InboundIn = NIOAny
    typealias OutboundIn = NIOAny
    typealias OutboundOut = NIOAny

    private var partner: Glue?
    private var context: ChannelHandlerContext?
    private var pendingRead = false

    static func pair() -> (Glue, Glue) {
        let first = Glue()
        let second = Glue()
        first.partner = second
        second.partner = first
        return (first, second)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        partner = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        partner?.context?.write(data, promise: nil)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        partner?.context?.flush()
    }

    func channelInactive(context: ChannelHandlerContext) {
        partner?.context?.close(promise: nil)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case .inputClosed = event as? ChannelEvent {
            partner?.context?.close(mode: .output, promise: nil)
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
        partner?.context?.close(promise: nil)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable, let partner, partner.pendingRead {
            partner.pendingRead = false
            partner.context?.read()
        }
    }

    func read(context: ChannelHandlerContext) {
        if let partner, partner.context?.channel.isWritable == true {
            context.read()
        } else {
            pendingRead = true
        }
    }
}
