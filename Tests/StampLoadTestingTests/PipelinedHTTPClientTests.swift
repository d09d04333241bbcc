import NIOCore
import NIOEmbedded
import NIOHTTP1
import NIOPosix
import StampTesting
import Synchronization
import Testing
@testable import StampLoadTesting

/// The connection handler on an embedded channel: requests written in order, answers matched to
/// them in order, deadlines and closes failing what is outstanding.
@Suite("Pipelined connection")
struct PipelinedConnectionTests {
    /// What each request's answer was: the answer's body, or the failure's code.
    final class Answers: @unchecked Sendable {
        var results: [String] = []

        func record(_ tag: String) -> (Result<PipelinedHTTPClient.Answer, PipelinedHTTPError>) -> Void {
            { result in
                switch result {
                case .success(let answer): self.results.append("\(tag): \(answer.status.code) \(String(buffer: answer.body))")
                case .failure(let error): self.results.append("\(tag): \(error.code.rawValue)")
                }
            }
        }
    }

    static func request(_ path: String, body: String? = nil) -> PipelinedHTTPClient.Request {
        PipelinedHTTPClient.Request(method: body == nil ? .GET : .POST, target: path, host: "127.0.0.1:1", body: body.map { ByteBuffer(string: $0) })
    }

    static func answer(_ channel: EmbeddedChannel, status: HTTPResponseStatus = .ok, body: String?, headers: HTTPHeaders = [:]) throws {
        try channel.writeInbound(HTTPClientResponsePart.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers)))
        if let body { try channel.writeInbound(HTTPClientResponsePart.body(ByteBuffer(string: body))) }
        try channel.writeInbound(HTTPClientResponsePart.end(nil))
    }

    static func connection() throws -> (EmbeddedChannel, PipelinedConnection) {
        let connection = PipelinedConnection()
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(connection)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        return (channel, connection)
    }

    @Test func pipelinedRequestsAreWrittenInOrderAndTheirAnswersMatchedInOrder() throws {
        let (channel, connection) = try Self.connection()
        let answers = Answers()
        let deadline = NIODeadline.now() + .seconds(2)
        connection.send(Self.request("/a", body: #"{"n":1}"#), deadline: deadline, bodyLimit: 1024, answer: answers.record("a"))
        connection.send(Self.request("/b"), deadline: deadline, bodyLimit: 1024, answer: answers.record("b"))
        #expect(connection.outstandingCount == 2)
        #expect(connection.needsFlush)
        connection.flush()

        var written: [String] = []
        while let part = try channel.readOutbound(as: HTTPClientRequestPart.self) {
            switch part {
            case .head(let head): written.append("\(head.method) \(head.uri) host=\(head.headers["Host"].first ?? "") length=\(head.headers["Content-Length"].first ?? "-")")
            case .body(.byteBuffer(let body)): written.append("body \(String(buffer: body))")
            case .body: written.append("body")
            case .end: written.append("end")
            }
        }
        #expect(written == ["POST /a host=127.0.0.1:1 length=7", #"body {"n":1}"#, "end", "GET /b host=127.0.0.1:1 length=-", "end"])

        try Self.answer(channel, status: .created, body: "first")
        try Self.answer(channel, body: "second")
        #expect(answers.results == ["a: 201 first", "b: 200 second"])
        #expect(connection.outstandingCount == 0)
        #expect(connection.isOpen, "keep-alive: the connection stays open for the next request")
    }

    @Test func aBodyLimitOfZeroDropsTheBodyAndALargerBodyFailsTheRequest() throws {
        let (channel, connection) = try Self.connection()
        let answers = Answers()
        let deadline = NIODeadline.now() + .seconds(2)
        connection.send(Self.request("/dropped"), deadline: deadline, bodyLimit: 0, answer: answers.record("dropped"))
        connection.send(Self.request("/large"), deadline: deadline, bodyLimit: 4, answer: answers.record("large"))
        connection.send(Self.request("/behind"), deadline: deadline, bodyLimit: 1024, answer: answers.record("behind"))
        try Self.answer(channel, body: "a body nobody keeps")
        try Self.answer(channel, body: "too large")
        #expect(answers.results == ["dropped: 200 ", "large: answer-too-large", "behind: answer-too-large"])
        #expect(!connection.isOpen)
    }

    @Test func aRequestPastItsDeadlineFailsAndClosesTheConnectionWithEveryRequestBehindIt() throws {
        let (channel, connection) = try Self.connection()
        let answers = Answers()
        let closed = Mutex(false)
        connection.closed = { closed.withLock { $0 = true } }
        let start = NIODeadline.now()
        connection.send(Self.request("/slow"), deadline: start + .seconds(2), bodyLimit: 1024, answer: answers.record("slow"))
        connection.send(Self.request("/behind"), deadline: start + .seconds(3), bodyLimit: 1024, answer: answers.record("behind"))
        connection.expire(now: start + .milliseconds(1999))
        #expect(answers.results.isEmpty, "nothing is due before the deadline")
        connection.expire(now: start + .seconds(2))
        #expect(Set(answers.results) == ["slow: timed-out", "behind: connection-closed"])
        #expect(closed.withLock { $0 }, "the client hears that the connection closed, to open it again")
        #expect(!channel.isActive)
        connection.send(Self.request("/late"), deadline: start + .seconds(5), bodyLimit: 1024, answer: answers.record("late"))
        #expect(answers.results.last == "late: not-connected")
    }

    @Test func theServerClosingFailsWhatIsOutstanding() throws {
        let (channel, connection) = try Self.connection()
        let answers = Answers()
        let deadline = NIODeadline.now() + .seconds(2)
        connection.send(Self.request("/answered"), deadline: deadline, bodyLimit: 1024, answer: answers.record("answered"))
        connection.send(Self.request("/lost"), deadline: deadline, bodyLimit: 1024, answer: answers.record("lost"))
        try Self.answer(channel, body: "ok")
        channel.pipeline.fireChannelInactive()
        #expect(answers.results == ["answered: 200 ok", "lost: connection-closed"])
    }

    @Test func anAnswerThatSaysConnectionCloseClosesAfterIt() throws {
        let (channel, connection) = try Self.connection()
        let answers = Answers()
        let deadline = NIODeadline.now() + .seconds(2)
        connection.send(Self.request("/last"), deadline: deadline, bodyLimit: 1024, answer: answers.record("last"))
        connection.send(Self.request("/behind"), deadline: deadline, bodyLimit: 1024, answer: answers.record("behind"))
        try Self.answer(channel, body: "bye", headers: ["Connection": "close"])
        #expect(answers.results == ["last: 200 bye", "behind: connection-closed"])
        #expect(!channel.isActive)
    }

    @Test func anAnswerWithNoRequestOutstandingClosesTheConnection() throws {
        let (channel, connection) = try Self.connection()
        try Self.answer(channel, body: "unasked")
        #expect(!connection.isOpen)
        #expect(!channel.isActive)
    }
}

/// The client against a real HTTP/1.1 server on loopback: keep-alive, pipelining, the choice of
/// connection, and what a closed or silent connection does.
@Suite("Pipelined HTTP client")
struct PipelinedHTTPClientTests {
    /// Sends `paths` in one turn of the client's event loop, then runs `afterwards` on it, and
    /// returns each answer's text (or failure's code) in the order of `paths`.
    static func send(_ client: PipelinedHTTPClient, _ paths: [String], afterwards: @escaping @Sendable () -> Void = {}) async -> [String] {
        await withCheckedContinuation { continuation in
            client.eventLoop.execute {
                var results = [String?](repeating: nil, count: paths.count)
                var remaining = paths.count
                for (index, path) in paths.enumerated() {
                    client.send(PipelinedHTTPClient.Request(method: .GET, target: path, host: client.authority), timeout: .seconds(10), bodyLimit: 1024) { result in
                        switch result {
                        case .success(let answer): results[index] = "\(answer.status.code) \(String(buffer: answer.body))"
                        case .failure(let error): results[index] = error.code.rawValue
                        }
                        remaining -= 1
                        if remaining == 0 { continuation.resume(returning: results.map { $0! }) }
                    }
                }
                client.eventLoop.execute(afterwards)
            }
        }
    }

    static func connect(port: Int, connections: Int, reopenDelay: TimeAmount = .zero) async throws -> PipelinedHTTPClient {
        try await PipelinedHTTPClient.connect(host: "127.0.0.1", port: port, connections: connections, reopenDelay: reopenDelay, eventLoop: MultiThreadedEventLoopGroup.singleton.next())
    }

    @Test func requestsReuseTheirKeepAliveConnections() async throws {
        let server = try await TestHTTPServer.start()
        let client = try await Self.connect(port: server.port, connections: 2)
        #expect(try await client.eventLoop.submit { client.openConnections }.get() == 2)
        for round in 0..<5 {
            #expect(await Self.send(client, ["/echo/\(round)"]) == ["200 \(round)"])
        }
        #expect(server.accepted == 2, "5 requests one after another over the 2 connections opened at the start")
        try? await client.close().get()
        try await server.close()
    }

    @Test func requestsBeyondTheConnectionsArePipelinedAndAnsweredInOrder() async throws {
        let server = try await TestHTTPServer.start()
        let client = try await Self.connect(port: server.port, connections: 2)
        let paths = (0..<20).map { "/echo/\($0)" }
        #expect(await Self.send(client, paths) == (0..<20).map { "200 \($0)" })
        #expect(server.accepted == 2)
        #expect(server.requestsPerConnection.sorted() == [10, 10], "each request went to the connection with the fewest outstanding")
        try? await client.close().get()
        try await server.close()
    }

    @Test func aConnectionTheServerClosesFailsWhatIsBehindAndIsOpenedAgain() async throws {
        let server = try await TestHTTPServer.start()
        let client = try await Self.connect(port: server.port, connections: 1)
        #expect(await Self.send(client, ["/close", "/echo/behind"]) == ["200 closing", "connection-closed"])
        try await client.waitUntilOpen(1).get()
        #expect(await Self.send(client, ["/echo/again"]) == ["200 again"])
        #expect(server.accepted == 2)
        try? await client.close().get()
        try await server.close()
    }

    @Test func whileNoConnectionIsOpenARequestFailsAtOnce() async throws {
        let server = try await TestHTTPServer.start()
        let client = try await Self.connect(port: server.port, connections: 1, reopenDelay: .hours(1))
        #expect(await Self.send(client, ["/close"]) == ["200 closing"])
        #expect(await Self.send(client, ["/echo/1"]) == ["not-connected"])
        try? await client.close().get()
        try await server.close()
    }

    @Test func aSilentServerTimesTheRequestOutAndItsConnectionIsReplaced() async throws {
        let server = try await TestHTTPServer.start()
        let proxy = try await FaultProxy(upstreamPort: server.port)
        proxy.set(.hang)
        let client = try await Self.connect(port: proxy.port, connections: 1)
        await proxy.waitForConnections(1)
        proxy.set(.pass)
        // Both requests are outstanding on the silent connection when the sweep looks past the first's deadline.
        let answers = await Self.send(client, ["/echo/1", "/echo/2"]) {
            client.expireOverdue(now: .now() + .seconds(10))
        }
        #expect(answers == ["timed-out", "connection-closed"])
        try await client.waitUntilOpen(1).get()
        #expect(await Self.send(client, ["/echo/3"]) == ["200 3"], "the new connection passes")
        try? await client.close().get()
        try await proxy.close()
        try await server.close()
    }

    @Test func noServerFailsTheConnectAndAClosedClientFailsItsRequests() async throws {
        let server = try await TestHTTPServer.start()
        let port = server.port
        try await server.close()
        await #expect(throws: (any Error).self) {
            _ = try await Self.connect(port: port, connections: 1)
        }
        let other = try await TestHTTPServer.start()
        let client = try await Self.connect(port: other.port, connections: 1)
        try? await client.close().get()
        #expect(await Self.send(client, ["/echo/1"]) == ["client-closed"])
        try await other.close()
    }
}

/// A small HTTP/1.1 server on loopback for the client's tests: `GET /echo/TEXT` answers TEXT;
/// `GET /close` answers `closing` with `Connection: close` and closes. It counts the connections
/// it accepted and the requests each carried.
final class TestHTTPServer: Sendable {
    private let listener: any Channel
    private let counts: Counts
    let port: Int

    /// The requests of each connection, by the order it was accepted in.
    final class Counts: Sendable {
        let perConnection = Mutex<[Int]>([])

        /// Counts a new connection and returns its number.
        func accept() -> Int {
            perConnection.withLock { counts in
                counts.append(0)
                return counts.count - 1
            }
        }

        func request(on connection: Int) {
            perConnection.withLock { $0[connection] += 1 }
        }
    }

    private init(listener: any Channel, counts: Counts) {
        self.listener = listener
        self.counts = counts
        port = listener.localAddress?.port ?? 0
    }

    static func start() async throws -> TestHTTPServer {
        let counts = Counts()
        let listener = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                let connection = counts.accept()
                return channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(Responder(counts: counts, connection: connection))
                }
            }
            .bind(host: "127.0.0.1", port: 0)
            .get()
        return TestHTTPServer(listener: listener, counts: counts)
    }

    /// Connections accepted so far.
    var accepted: Int { counts.perConnection.withLock { $0.count } }

    /// The requests of each connection accepted.
    var requestsPerConnection: [Int] { counts.perConnection.withLock { $0 } }

    func close() async throws {
        try await listener.close()
    }

    private final class Responder: ChannelInboundHandler {
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart

        let counts: Counts
        let connection: Int
        var path = ""

        init(counts: Counts, connection: Int) {
            self.counts = counts
            self.connection = connection
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head(let head):
                path = head.uri
                counts.request(on: connection)
            case .body:
                break
            case .end:
                let closing = path == "/close"
                let text = closing ? "closing" : String(path.dropFirst("/echo/".count))
                var headers: HTTPHeaders = ["Content-Length": String(text.utf8.count)]
                if closing { headers.add(name: "Connection", value: "close") }
                context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers))), promise: nil)
                context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: text)))), promise: nil)
                if closing {
                    let channel = context.channel
                    context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in channel.close(promise: nil) }
                } else {
                    context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
                }
            }
        }
    }
}
