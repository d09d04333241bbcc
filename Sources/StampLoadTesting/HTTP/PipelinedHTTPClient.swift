import NIOCore
import NIOHTTP1
import NIOPosix

/// A lean HTTP/1.1 client for driving load at one server: a fixed set of keep-alive connections,
/// requests pipelined on them and matched to their answers in order, all on one event loop.
///
/// Each request goes to an idle connection, taken in turn, or, when every connection is busy, to
/// the one with the fewest answers outstanding; so requests queue on a connection only while all
/// are busy. Requests written in one turn of the event loop are flushed together. A request not
/// answered within its timeout fails (looked at every ``expiryInterval``) and its connection is
/// closed, because the answers behind it would come late; a closed connection fails the requests
/// outstanding on it and is opened again after a short delay.
///
/// There is no task, continuation or promise per request: ``send(_:timeout:bodyLimit:answer:)``
/// and its answer both run on ``eventLoop``, which every method but ``connect(host:port:connections:reopenDelay:eventLoop:)``
/// and ``close()`` must be called on.
public final class PipelinedHTTPClient: @unchecked Sendable {
    /// A request as it is sent.
    public struct Request: Sendable {
        public var method: HTTPMethod
        /// The path and query, such as `/v1/users/alice/events?limit=50`.
        public var target: String
        /// The headers as sent; the initializer adds `Host` and, with a body, `Content-Length`.
        public var headers: HTTPHeaders
        public var body: ByteBuffer?

        public init(method: HTTPMethod, target: String, host: String, headers: HTTPHeaders = [:], body: ByteBuffer? = nil) {
            self.method = method
            self.target = target
            self.headers = headers
            self.headers.add(name: "Host", value: host)
            if let body { self.headers.add(name: "Content-Length", value: String(body.readableBytes)) }
            self.body = body
        }
    }

    /// An answer: its status, headers and body (empty when the request kept no body).
    public struct Answer: Sendable {
        public let status: HTTPResponseStatus
        public let headers: HTTPHeaders
        public let body: ByteBuffer
    }

    /// How often requests past their deadline are looked for.
    public static let expiryInterval = TimeAmount.milliseconds(100)
    /// How long a closed connection waits, by default, before it is opened again.
    public static let defaultReopenDelay = TimeAmount.milliseconds(100)

    public let eventLoop: any EventLoop
    public let host: String
    public let port: Int
    /// `host:port`, the `Host` header of this client's requests.
    public let authority: String
    /// How long a closed connection waits before it is opened again.
    public let reopenDelay: TimeAmount

    private enum Slot {
        case opening
        case open(any Channel, PipelinedConnection)
        case waiting
    }

    private var slots: [Slot]
    /// Where the search for an idle connection starts.
    private var turn = 0
    private var flushScheduled = false
    private var isClosed = false
    private var expiry: RepeatedTask?
    /// Promises kept once as many connections as each asks for are open.
    private var openWaiters: [(count: Int, promise: EventLoopPromise<Void>)] = []

    private init(host: String, port: Int, connections: Int, reopenDelay: TimeAmount, eventLoop: any EventLoop) {
        precondition(connections > 0, "a client needs a connection")
        self.eventLoop = eventLoop
        self.host = host
        self.port = port
        self.reopenDelay = reopenDelay
        authority = "\(host):\(port)"
        slots = Array(repeating: .waiting, count: connections)
    }

    /// Opens `connections` connections to `host:port` on `eventLoop`; fails, with nothing left
    /// open, when any cannot be opened.
    public static func connect(
        host: String,
        port: Int,
        connections: Int,
        reopenDelay: TimeAmount = defaultReopenDelay,
        eventLoop: any EventLoop
    ) async throws -> PipelinedHTTPClient {
        let client = PipelinedHTTPClient(host: host, port: port, connections: connections, reopenDelay: reopenDelay, eventLoop: eventLoop)
        do {
            try await eventLoop.flatSubmit { client.openAll() }.get()
        } catch {
            try? await client.close().get()
            throw error
        }
        return client
    }

    /// Sends `request`; `answer` hears, on the event loop, its answer or why there is none. An
    /// answer's body is kept up to `bodyLimit` bytes (a larger one fails the request and closes
    /// its connection); with a limit of 0 the body is read and dropped.
    public func send(_ request: Request, timeout: TimeAmount, bodyLimit: Int, answer: @escaping (Result<Answer, PipelinedHTTPError>) -> Void) {
        eventLoop.assertInEventLoop()
        guard !isClosed else {
            answer(.failure(PipelinedHTTPError(.clientClosed, "the client is closed")))
            return
        }
        guard let connection = pick() else {
            answer(.failure(PipelinedHTTPError(.notConnected, "no connection to \(authority) is open")))
            return
        }
        connection.send(request, deadline: .now() + timeout, bodyLimit: bodyLimit, answer: answer)
        if !flushScheduled {
            flushScheduled = true
            eventLoop.execute { self.flushAll() }
        }
    }

    /// Connections open now.
    public var openConnections: Int {
        eventLoop.assertInEventLoop()
        return slots.count { slot in
            if case .open(_, let connection) = slot { return connection.isOpen }
            return false
        }
    }

    /// Succeeds once `count` connections are open at the same time; from any thread.
    func waitUntilOpen(_ count: Int) -> EventLoopFuture<Void> {
        eventLoop.flatSubmit {
            let promise = self.eventLoop.makePromise(of: Void.self)
            self.openWaiters.append((count, promise))
            self.answerOpenWaiters()
            return promise.futureResult
        }
    }

    private func answerOpenWaiters() {
        guard !openWaiters.isEmpty else { return }
        let open = openConnections
        let ready = openWaiters.filter { $0.count <= open }
        openWaiters.removeAll { $0.count <= open }
        ready.forEach { $0.promise.succeed() }
    }

    /// Fails each request whose deadline has passed at `now`, closing its connection.
    func expireOverdue(now: NIODeadline) {
        eventLoop.assertInEventLoop()
        for case .open(_, let connection) in slots {
            connection.expire(now: now)
        }
    }

    /// Closes every connection, failing what is outstanding, and opens none again; from any thread.
    public func close() -> EventLoopFuture<Void> {
        eventLoop.flatSubmit { self.closeAll() }
    }

    /// An idle open connection, the first from ``turn``; else the open one with the fewest outstanding.
    private func pick() -> PipelinedConnection? {
        var best: (index: Int, connection: PipelinedConnection)?
        for offset in 0..<slots.count {
            let index = (turn + offset) % slots.count
            guard case .open(_, let connection) = slots[index], connection.isOpen else { continue }
            if connection.outstandingCount == 0 {
                best = (index, connection)
                break
            }
            if best.map({ connection.outstandingCount < $0.connection.outstandingCount }) ?? true {
                best = (index, connection)
            }
        }
        guard let best else { return nil }
        turn = (best.index + 1) % slots.count
        return best.connection
    }

    private func flushAll() {
        flushScheduled = false
        for case .open(_, let connection) in slots where connection.needsFlush {
            connection.flush()
        }
    }

    private func openAll() -> EventLoopFuture<Void> {
        expiry = eventLoop.scheduleRepeatedTask(initialDelay: Self.expiryInterval, delay: Self.expiryInterval) { _ in
            self.expireOverdue(now: .now())
        }
        return EventLoopFuture.andAllSucceed(slots.indices.map { open(slot: $0) }, on: eventLoop)
    }

    private func open(slot index: Int) -> EventLoopFuture<Void> {
        slots[index] = .opening
        return ClientBootstrap(group: eventLoop)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    try channel.pipeline.syncOperations.addHandler(PipelinedConnection())
                }
            }
            .connect(host: host, port: port)
            .flatMapThrowing { channel in
                guard !self.isClosed else {
                    channel.close(promise: nil)
                    return
                }
                let connection = try channel.pipeline.syncOperations.handler(type: PipelinedConnection.self)
                self.slots[index] = .open(channel, connection)
                connection.closed = { self.reopen(slot: index) }
                if connection.isOpen {
                    self.answerOpenWaiters()
                } else {
                    self.reopen(slot: index)
                }
            }
            .flatMapErrorThrowing { error in
                self.reopen(slot: index)
                throw error
            }
    }

    private func reopen(slot index: Int) {
        slots[index] = .waiting
        guard !isClosed else { return }
        eventLoop.scheduleTask(in: reopenDelay) {
            if !self.isClosed, case .waiting = self.slots[index] { _ = self.open(slot: index) }
        }
    }

    private func closeAll() -> EventLoopFuture<Void> {
        isClosed = true
        expiry?.cancel()
        for waiter in openWaiters { waiter.promise.fail(PipelinedHTTPError(.clientClosed, "the client was closed")) }
        openWaiters = []
        var closing: [EventLoopFuture<Void>] = []
        for case .open(let channel, let connection) in slots {
            connection.close(because: PipelinedHTTPError(.clientClosed, "the client was closed"))
            closing.append(channel.closeFuture)
        }
        return EventLoopFuture.andAllComplete(closing, on: eventLoop)
    }
}
