import NIOCore
import NIOPosix
import Synchronization

/// A TCP proxy on loopback in front of one or more upstream servers, whose faults a test switches
/// while it runs.
///
/// Each accepted connection goes to the next upstream in turn and is handled in the mode set when
/// it was accepted: ``Mode/pass`` copies bytes both ways (with backpressure, passing a half-close
/// on); ``Mode/delay(_:)`` holds each chunk from the upstream back for a while; ``Mode/reset``
/// answers with a TCP reset; ``Mode/hang`` accepts and reads but never answers;
/// ``Mode/dropResponse(every:)`` forwards the request and closes the client's connection when the
/// answer begins, so the client cannot know whether its request took effect. A connection whose
/// upstream cannot be reached is closed. ``close()`` closes the listener and every connection.
public final class FaultProxy: Sendable {
    /// How connections accepted from now on are handled.
    public enum Mode: Sendable, Equatable {
        case pass
        case delay(TimeAmount)
        case reset
        case hang
        /// Every `every`-th connection accepted (counting all connections) loses its answer; the others pass.
        case dropResponse(every: Int)
    }

    /// The settings and counters shared with the accepting channel.
    private final class Settings: Sendable {
        let mode = Mutex(Mode.pass)
        let upstreamPorts: Mutex<[Int]>
        let accepted = Atomic<Int>(0)
        let dropped = DropCount()
        let connections = Connections()
        let acceptWaiters = Mutex<[(count: Int, continuation: CheckedContinuation<Void, Never>)]>([])

        init(upstreamPorts: [Int]) {
            self.upstreamPorts = Mutex(upstreamPorts)
        }

        /// Counts an accepted connection, answering the waiters it satisfies; returns its number, from 1.
        func accept() -> Int {
            let number = accepted.wrappingAdd(1, ordering: .relaxed).newValue
            let ready = acceptWaiters.withLock { waiters in
                defer { waiters.removeAll { $0.count <= number } }
                return waiters.filter { $0.count <= number }.map(\.continuation)
            }
            ready.forEach { $0.resume() }
            return number
        }
    }

    private let settings: Settings
    private let listener: any Channel

    /// The port the proxy listens on.
    public let port: Int

    /// The proxy's base URL, for HTTP upstreams.
    public var url: String { "http://127.0.0.1:\(port)" }

    /// Connections accepted so far.
    public var connections: Int { settings.accepted.load(ordering: .relaxed) }

    /// Answers dropped so far in ``Mode/dropResponse(every:)``.
    public var droppedResponses: Int { settings.dropped.value }

    /// Listens on a free loopback port, forwarding each connection to the next of `upstreamPorts`.
    public init(upstreamPorts: [Int]) async throws {
        let settings = Settings(upstreamPorts: upstreamPorts)
        self.settings = settings
        listener = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .serverChannelOption(.backlog, value: 256)
            .childChannelOption(.autoRead, value: false)
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .childChannelInitializer { inbound in
                guard settings.connections.register(inbound) else { return inbound.close() }
                let mode = settings.mode.withLock { $0 }
                let number = settings.accept()
                let upstream = settings.upstreamPorts.withLock { ports in ports.isEmpty ? nil : ports[(number - 1) % ports.count] }
                switch mode {
                case .reset:
                    // A zero linger time makes close send a TCP reset instead of a normal close.
                    guard let provider = inbound as? any SocketOptionProvider else { return inbound.close() }
                    return provider.setSoLinger(linger(l_onoff: 1, l_linger: 0)).flatMap { inbound.close() }
                case .hang:
                    return inbound.eventLoop.makeCompletedFuture {
                        try inbound.pipeline.syncOperations.addHandler(Discard())
                    }.flatMap {
                        inbound.setOption(.autoRead, value: true)
                    }
                case .pass:
                    return Self.connect(inbound, upstreamPort: upstream, delay: nil, dropResponse: nil, settings: settings)
                case .delay(let amount):
                    return Self.connect(inbound, upstreamPort: upstream, delay: amount, dropResponse: nil, settings: settings)
                case .dropResponse(let every):
                    return Self.connect(inbound, upstreamPort: upstream, delay: nil, dropResponse: number % max(every, 1) == 0 ? settings.dropped : nil, settings: settings)
                }
            }
            .bind(host: "127.0.0.1", port: 0)
            .get()
        port = listener.localAddress?.port ?? 0
    }

    /// Listens on a free loopback port in front of one upstream; 0 until ``set(upstreamPort:)`` names it.
    public convenience init(upstreamPort: Int = 0) async throws {
        try await self.init(upstreamPorts: [upstreamPort])
    }

    /// Returns once `count` connections have been accepted, so that a test knows in which mode a
    /// connection it opened is handled before it switches the mode.
    public func waitForConnections(_ count: Int) async {
        await withCheckedContinuation { continuation in
            let reached = settings.acceptWaiters.withLock { waiters in
                if connections >= count { return true }
                waiters.append((count, continuation))
                return false
            }
            if reached { continuation.resume() }
        }
    }

    /// Sets the mode of the connections accepted from now on.
    public func set(_ mode: Mode) {
        settings.mode.withLock { $0 = mode }
    }

    /// Points the proxy at one upstream, for servers started after their proxy.
    public func set(upstreamPort: Int) {
        settings.upstreamPorts.withLock { $0 = [upstreamPort] }
    }

    /// Closes the listener and every connection.
    public func close() async throws {
        try await listener.close()
        for channel in settings.connections.closeAll() {
            try? await channel.close()
        }
    }

    private static func connect(
        _ inbound: any Channel,
        upstreamPort: Int?,
        delay: TimeAmount?,
        dropResponse: DropCount?,
        settings: Settings
    ) -> EventLoopFuture<Void> {
        guard let upstreamPort else { return inbound.close() }
        return ClientBootstrap(group: inbound.eventLoop)
            .channelOption(.autoRead, value: false)
            .channelOption(.allowRemoteHalfClosure, value: true)
            .connect(host: "127.0.0.1", port: upstreamPort)
            .flatMap { outbound in
                guard settings.connections.register(outbound) else {
                    return outbound.close().flatMap { inbound.close() }
                }
                // The client's channel becomes active only after this initializer: if it closes before
                // that, no handler hears of it, so its end closes the upstream's channel here.
                inbound.closeFuture.whenComplete { _ in outbound.close(promise: nil) }
                do {
                    let (toUpstream, toClient) = Glue.pair(delayFromUpstream: delay, dropResponse: dropResponse)
                    try inbound.pipeline.syncOperations.addHandler(toUpstream)
                    try outbound.pipeline.syncOperations.addHandler(toClient)
                } catch {
                    return outbound.close().flatMap { inbound.close() }
                }
                return inbound.setOption(.autoRead, value: true).flatMap {
                    outbound.setOption(.autoRead, value: true)
                }
            }
            .flatMapError { _ in
                inbound.close()
            }
    }

    /// The open channels on both sides, so that ``FaultProxy/close()`` can close them.
    private final class Connections: Sendable {
        private struct State {
            var channels: [ObjectIdentifier: any Channel] = [:]
            var closed = false
        }

        private let state = Mutex(State())

        /// Tracks `channel` until it closes; `false` once the proxy is closing.
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

    /// Reads and drops everything, never answering.
    private final class Discard: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {}
    }
}

/// How many answers the proxy dropped.
private final class DropCount: Sendable {
    private let count = Atomic<Int>(0)
    var value: Int { count.load(ordering: .relaxed) }
    func increment() { count.add(1, ordering: .relaxed) }
}

/// One of a matched pair of handlers, one per channel, that copies what its channel reads to the
/// other channel (the standard NIO "glue" handler), with the proxy's faults on the upstream side.
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
    /// How long what this channel reads is held before it goes to the partner.
    private let delay: TimeAmount?
    /// Set when this channel's first bytes must close both channels instead, counted here.
    private let dropResponse: DropCount?

    private init(delay: TimeAmount?, dropResponse: DropCount?) {
        self.delay = delay
        self.dropResponse = dropResponse
    }

    /// The client side's handler and the upstream side's, which may delay or drop the answer.
    static func pair(delayFromUpstream: TimeAmount?, dropResponse: DropCount?) -> (toUpstream: Glue, toClient: Glue) {
        let toUpstream = Glue(delay: nil, dropResponse: nil)
        let toClient = Glue(delay: delayFromUpstream, dropResponse: dropResponse)
        toUpstream.partner = toClient
        toClient.partner = toUpstream
        return (toUpstream, toClient)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        partner = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if let dropResponse {
            dropResponse.increment()
            partner?.context?.close(promise: nil)
            context.close(promise: nil)
            return
        }
        toPartner(context) { $0.write(data, promise: nil) }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        toPartner(context) { $0.flush() }
    }

    func channelInactive(context: ChannelHandlerContext) {
        toPartner(context) { $0.close(promise: nil) }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case .inputClosed = event as? ChannelEvent {
            toPartner(context) { $0.close(mode: .output, promise: nil) }
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

    /// Runs `step` on the partner's context now, or after the delay (delayed steps keep their
    /// order); the partner is taken now, as this handler forgets it when its channel closes.
    private func toPartner(_ context: ChannelHandlerContext, _ step: @escaping (ChannelHandlerContext) -> Void) {
        guard let partner else { return }
        guard let delay else {
            if let partnerContext = partner.context { step(partnerContext) }
            return
        }
        context.eventLoop.assumeIsolated().scheduleTask(in: delay) {
            if let partnerContext = partner.context { step(partnerContext) }
        }
    }
}
