import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import StampAPI
import StampCore
@testable import StampGeneratorNode
import StampHTTP
import StampTesting
import Synchronization
import Testing

@Suite("Cluster console")
struct ClusterConsoleTests {
    static let token = "a token of sixteen or more"

    /// The other nodes' answers, and the `Authorization` headers they were asked with.
    final class FakePeers: Sendable {
        let asked = Mutex<[String: String?]>([:])
        let statuses: [String: NodeStatus]

        init(_ statuses: [String: NodeStatus]) {
            self.statuses = statuses
        }

        var source: PeerStatusSource {
            PeerStatusSource { address, authorization throws(PeerStatusError) in
                self.asked.withLock { $0[address] = authorization }
                guard let status = self.statuses[address] else { throw PeerStatusError("could not be reached") }
                return status
            }
        }
    }

    static func peerStatus(node: Int, ready: Bool = true) -> NodeStatus {
        NodeStatus(
            node: node, ready: ready, reason: ready ? nil : "no node ID held", leaseExpiresAt: "2026-01-01T00:00:10.000Z", reservedUntil: "2026-01-01T00:00:03.000Z",
            reservationHeadroomMilliseconds: 2500, clockLeadMilliseconds: 1, clockSkewMilliseconds: -3, idsPerSecond: 12.5, refusals: 4, windowSeconds: 60
        )
    }

    func withApplication(token: NodeToken? = nil, peers: FakePeers = FakePeers([:]), _ body: @Sendable (any TestClientProtocol, NodeFixture) async throws -> Void) async throws {
        let fixture = NodeFixture()
        try await fixture.start()
        let application = buildApplication(node: fixture.node, server: HTTPServerConfiguration(port: 0), wallClock: fixture.wallClock, token: token, peers: peers.source, logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }))
        try await application.test(.router) { client in
            try await body(client, fixture)
        }
    }

    static func expectConsoleHeaders(_ response: TestResponse, sourceLocation: SourceLocation = #_sourceLocation) {
        let policy = response.headers[HTTPField.Name("Content-Security-Policy")!] ?? ""
        #expect(policy.contains("default-src 'none'") && policy.contains("script-src 'self'") && policy.contains("frame-ancestors 'none'"), sourceLocation: sourceLocation)
        #expect(response.headers[HTTPField.Name("X-Content-Type-Options")!] == "nosniff", sourceLocation: sourceLocation)
        #expect(response.headers[HTTPField.Name("Referrer-Policy")!] == "no-referrer", sourceLocation: sourceLocation)
    }

    @Test func thePageNeedsNoTokenAndAsksForOneWhenTheNodeHasIt() async throws {
        for token in [nil, NodeToken(Self.token)] {
            try await withApplication(token: token) { client, _ in
                try await client.execute(uri: "/ui", method: .get) { response in
                    #expect(response.status == .ok)
                    #expect(response.headers[.contentType] == "text/html; charset=utf-8")
                    Self.expectConsoleHeaders(response)
                    let html = String(buffer: response.body)
                    for part in [#"<table id="nodes" class="cards">"#, #"<form id="decode-form">"#, #"<script src="/ui/assets/console.js"></script>"#, #"<script src="/ui/assets/cluster.js"></script>"#] {
                        #expect(html.contains(part), "missing \(part)")
                    }
                    #expect(html.contains("data-console-token") == (token != nil))
                    #expect(!html.contains("<script>"))
                }
                for asset in ["console.css", "console.js", "favicon.svg", "cluster.js"] {
                    try await client.execute(uri: "/ui/assets/\(asset)", method: .get) { response in
                        #expect(response.status == .ok)
                        Self.expectConsoleHeaders(response)
                    }
                }
                try await client.execute(uri: "/ui/assets/missing.js", method: .get) { response in
                    try HTTPAPITests.expectProblem(response, status: .notFound, type: "not-found")
                }
                try await client.execute(uri: "/ui", method: .post) { response in
                    try HTTPAPITests.expectProblem(response, status: .methodNotAllowed, type: "method-not-allowed")
                    #expect(response.headers[.allow] == "GET")
                }
            }
        }
    }

    @Test func theDataBehindThePageNeedsTheToken() async throws {
        try await withApplication(token: NodeToken(Self.token)) { client, _ in
            for uri in ["/v1/node", "/v1/cluster/nodes", "/ui/", "/ui/assets/", "/ui/assets/a/b"] {
                try await client.execute(uri: uri, method: .get) { response in
                    try HTTPAPITests.expectProblem(response, status: .unauthorized, type: "unauthorized")
                }
            }
            for uri in ["/v1/node", "/v1/cluster/nodes"] {
                try await client.execute(uri: uri, method: .get, headers: [.authorization: "Bearer \(Self.token)"]) { response in
                    #expect(response.status == .ok)
                }
            }
        }
    }

    @Test func theNodeReportsItsLeaseClocksAndRates() async throws {
        try await withApplication { client, fixture in
            let before = try await status(client)
            #expect(before.node == 0)
            #expect(before.ready)
            #expect(before.reason == nil)
            #expect(before.leaseExpiresAt != nil && before.reservedUntil != nil)
            #expect(before.reservationHeadroomMilliseconds > 0)
            #expect(before.idsPerSecond == 0 && before.refusals == 0)

            // 300 IDs over 30 s: 10 per second.
            for _ in 0..<30 {
                _ = try fixture.node.issue(shard: 1, count: 10, after: nil)
                fixture.advance(milliseconds: 1000)
                _ = await fixture.node.step()
            }
            let busy = try await status(client)
            #expect(busy.windowSeconds == 30)
            #expect(busy.idsPerSecond == 10)
            #expect(busy.refusals == 0)
            #expect(busy.ready)

            // Past the lease's issuing period without a renewal, the node refuses, and counts each refusal.
            fixture.clock.advance(by: .seconds(20))
            #expect(throws: IssueRefusal.self) { try fixture.node.issue(shard: 1, count: 1, after: nil) }
            #expect(throws: IssueRefusal.self) { try fixture.node.issue(shard: 1, count: 1, after: nil) }
            let refusing = try await status(client)
            #expect(!refusing.ready)
            #expect(refusing.reason != nil)
            #expect(refusing.refusals == 2)
        }
    }

    func status(_ client: any TestClientProtocol) async throws -> NodeStatus {
        try await client.execute(uri: "/v1/node", method: .get) { response in
            #expect(response.status == .ok)
            #expect(response.headers[.cacheControl] == "no-store")
            return try JSONDecoder().decode(NodeStatus.self, from: Data(buffer: response.body))
        }
    }

    @Test func theClusterListsEveryLiveNodeWithWhatItReports() async throws {
        let peers = FakePeers(["http://127.0.0.1:7401": Self.peerStatus(node: 1)])
        try await withApplication(token: NodeToken(Self.token), peers: peers) { client, fixture in
            let ttl = Duration.seconds(10)
            _ = try await fixture.store.claim(owner: "peer-a", address: "http://127.0.0.1:7401", ttl: ttl, nodeCount: 32)
            _ = try await fixture.store.claim(owner: "peer-b", address: nil, ttl: ttl, nodeCount: 32)
            _ = try await fixture.store.claim(owner: "peer-c", address: "http://127.0.0.1:7403", ttl: ttl, nodeCount: 32)
            let cluster = try await client.execute(uri: "/v1/cluster/nodes", method: .get, headers: [.authorization: "Bearer \(Self.token)"]) { response in
                #expect(response.status == .ok)
                return try JSONDecoder().decode(ClusterNodes.self, from: Data(buffer: response.body))
            }
            #expect(cluster.layout == IDLayout.default.description)
            #expect(cluster.node == 0)
            #expect(cluster.nodes.map(\.node) == [0, 1, 2, 3])
            // The answering node reports for itself, without asking itself over HTTP.
            #expect(cluster.nodes[0].status?.node == 0)
            #expect(cluster.nodes[0].status?.ready == true)
            #expect(cluster.nodes[0].error == nil)
            #expect(cluster.nodes[1].status == Self.peerStatus(node: 1))
            #expect(cluster.nodes[1].address == "http://127.0.0.1:7401")
            #expect(cluster.nodes[2].status == nil)
            #expect(cluster.nodes[2].error == "advertises no address")
            #expect(cluster.nodes[3].status == nil)
            #expect(cluster.nodes[3].error == "could not be reached")
            let leaseOf1 = try #require(fixture.store.lease(of: 1))
            #expect(cluster.nodes[1].expiresAt == RFC3339.format(unixMilliseconds: leaseOf1.expiresAtUnixMilliseconds))
            #expect(cluster.nodes[1].reservedUntil == RFC3339.format(unixMilliseconds: leaseOf1.reservedUntilUnixMilliseconds))
            // Peers are asked with the caller's token, and only peers with an address are asked.
            #expect(peers.asked.withLock { $0 } == ["http://127.0.0.1:7401": "Bearer \(Self.token)", "http://127.0.0.1:7403": "Bearer \(Self.token)"])
        }
    }

    /// The HTTP source asks a live node at `GET /v1/node` with the caller's header, and says why
    /// when it gets no status.
    @Test func theHTTPSourceAsksALiveNode() async throws {
        let fixture = NodeFixture()
        try await fixture.start()
        let application = buildApplication(node: fixture.node, server: HTTPServerConfiguration(port: 0), wallClock: fixture.wallClock, token: NodeToken(Self.token), logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }))
        let port = Mutex(0)
        try await application.test(.live) { client in
            port.withLock { $0 = client.port ?? 0 }
            let address = "http://127.0.0.1:\(try #require(client.port))"
            let source = PeerStatusSource.http()
            let status = try await source.fetch(address, "Bearer \(Self.token)")
            #expect(status.node == 0)
            #expect(status.ready)
            let withSlash = try await source.fetch(address + "/", "Bearer \(Self.token)")
            #expect(withSlash.node == 0)
            for (peer, authorization, reason) in [
                (address, "Bearer another token of sixteen", "answered 401 to GET /v1/node"),
                (address, nil, "answered 401 to GET /v1/node"),
                ("ftp://127.0.0.1:21", "Bearer \(Self.token)", "advertises no HTTP address"),
                ("not a URL", "Bearer \(Self.token)", "advertises no HTTP address"),
            ] {
                await #expect(throws: PeerStatusError(reason)) { try await source.fetch(peer, authorization) }
            }
        }
        // The server has stopped: nothing answers on its port (or, should another process have taken
        // it since, nothing that answers with a node status).
        let closed = port.withLock { $0 }
        await #expect(throws: PeerStatusError.self) { try await PeerStatusSource.http().fetch("http://127.0.0.1:\(closed)", nil) }
    }

    @Test func theClusterIsUnavailableWhenTheStoreIsNot() async throws {
        try await withApplication { client, fixture in
            fixture.store.failNext(1)
            try await client.execute(uri: "/v1/cluster/nodes", method: .get) { response in
                try HTTPAPITests.expectProblem(response, status: .serviceUnavailable, type: "unavailable")
                #expect(response.headers[.retryAfter] == "1")
            }
        }
    }

    /// The decoder's endpoint answers bad input with a problem, whatever the page sends it.
    @Test(arguments: ["garbage", "%3Cscript%3E", "-1", "9223372036854775808", String(repeating: "9", count: 40), "8ZZZZZZZZZZZZ", "%00"])
    func badIDsAreProblems(text: String) async throws {
        try await withApplication { client, _ in
            try await client.execute(uri: "/v1/ids/\(text)", method: .get) { response in
                try HTTPAPITests.expectProblem(response, status: .badRequest, type: "invalid-id")
            }
        }
    }

    @Test func anIDIsDecodedInBothForms() async throws {
        try await withApplication { client, fixture in
            let id = try fixture.node.issue(shard: 5, count: 1, after: nil)[0]
            for form in [id.description, id.text, id.text.lowercased()] {
                let decoded = try await client.execute(uri: "/v1/ids/\(form)", method: .get) { response in
                    #expect(response.status == .ok)
                    return try JSONDecoder().decode(DecodedID.self, from: Data(buffer: response.body))
                }
                #expect(decoded.id == id)
                #expect(decoded.shard == 5)
                #expect(decoded.node == 0)
            }
        }
    }
}

@Suite("Activity window")
struct ActivityWindowTests {
    typealias Window = ActivityWindow<ManualClock.Instant>

    @Test func ratesCoverTheLastMinuteOnce() {
        let clock = ManualClock()
        var window = Window()
        #expect(window.rates(at: clock.now, issued: 0, refused: 0) == .init(idsPerSecond: 0, refusals: 0, seconds: 0))
        // 100 IDs a second, and one refusal every 10 s, for 2 minutes.
        var issued: UInt64 = 0
        var refused: UInt64 = 0
        for second in 1...120 {
            window.record(at: clock.now, issued: issued, refused: refused)
            clock.advance(by: .seconds(1))
            issued += 100
            if second.isMultiple(of: 10) { refused += 1 }
        }
        let rates = window.rates(at: clock.now, issued: issued, refused: refused)
        #expect(rates.seconds == 60)
        #expect(rates.idsPerSecond == 100)
        #expect(rates.refusals == 6)
        #expect(window.samples.count <= 62)
    }

    @Test func samplesCloserThanTheResolutionAreDropped() {
        let clock = ManualClock()
        var window = Window()
        for _ in 0..<1000 {
            window.record(at: clock.now, issued: 0, refused: 0)
            clock.advance(by: .milliseconds(10))
        }
        #expect(window.samples.count == 10)
    }

    @Test func aYoungNodeCountsFromItsFirstSample() {
        let clock = ManualClock()
        var window = Window()
        window.record(at: clock.now, issued: 0, refused: 0)
        clock.advance(by: .seconds(4))
        #expect(window.rates(at: clock.now, issued: 10, refused: 1) == .init(idsPerSecond: 2.5, refusals: 1, seconds: 4))
    }
}
