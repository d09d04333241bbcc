import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import StampCore
@testable import StampGeneratorNode
import StampHTTP
import StampTesting
import Testing

@Suite("HTTP API")
struct HTTPAPITests {
    /// Runs `body` against the application of a node that holds a lease, twice: through the router
    /// alone (Hummingbird's router test mode), then over a live connection, where `GET /v1/ids` is
    /// answered in the channel pipeline.
    func withApplication(claimed: Bool = true, shards: ShardCheck? = nil, token: NodeToken? = nil, _ body: @Sendable (any TestClientProtocol, NodeFixture) async throws -> Void) async throws {
        for setup in [TestingSetup.router, .live] {
            let fixture = NodeFixture()
            if claimed { try await fixture.start() } else { try await fixture.node.prepare() }
            let application = buildApplication(node: fixture.node, server: HTTPServerConfiguration(port: 0), metrics: { "stamp_test_metric 1\n" }, wallClock: fixture.wallClock, shards: shards, token: token, logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }))
            try await application.test(setup) { client in
                try await body(client, fixture)
            }
        }
    }

    struct ProblemBody: Decodable {
        let type: String
        let title: String
        let status: Int
        let detail: String
    }

    static func expectProblem(_ response: TestResponse, status: HTTPResponse.Status, type: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
        #expect(response.status == status, sourceLocation: sourceLocation)
        #expect(response.headers[.contentType] == "application/problem+json", sourceLocation: sourceLocation)
        let problem = try JSONDecoder().decode(ProblemBody.self, from: Data(buffer: response.body))
        #expect(problem.type == "urn:stamp:problem:\(type)", sourceLocation: sourceLocation)
        #expect(problem.status == Int(status.code), sourceLocation: sourceLocation)
        #expect(!problem.detail.isEmpty, sourceLocation: sourceLocation)
    }

    struct IDsBody: Decodable {
        let ids: [String]
        let node: Int
    }

    @Test func jsonIDsAreDecimalStrings() async throws {
        try await withApplication { client, _ in
            try await client.execute(uri: "/v1/ids?shard=7&count=3", method: .get) { response in
                #expect(response.status == .ok)
                #expect(response.headers[.contentType] == "application/json")
                #expect(response.headers[.cacheControl] == "no-store")
                let body = try JSONDecoder().decode(IDsBody.self, from: Data(buffer: response.body))
                #expect(body.node == 0)
                let ids = try body.ids.map { try StampID(decimal: $0) }
                #expect(ids.count == 3)
                #expect(ids == ids.sorted())
                #expect(ids.allSatisfy { $0.fields(in: .default).shard == 7 && $0.fields(in: .default).node == 0 })
            }
            try await client.execute(uri: "/v1/ids", method: .get) { response in
                let body = try JSONDecoder().decode(IDsBody.self, from: Data(buffer: response.body))
                #expect(body.ids.count == 1)
            }
        }
    }

    /// With a token, every path but health and metrics needs it: `GET /v1/ids` on the event loop
    /// (the live run) as through the router.
    @Test func aTokenGuardsEverythingButHealthAndMetrics() async throws {
        let text = "a token of sixteen or more"
        try await withApplication(token: NodeToken(text)) { client, fixture in
            for uri in ["/v1/ids", "/v1/ids?count=3", "/v1/cluster", "/v1/ids/1", "/openapi.yaml", "/nowhere"] {
                for headers: HTTPFields in [[:], [.authorization: "Bearer another token of sixteen"], [.authorization: text]] {
                    try await client.execute(uri: uri, method: .get, headers: headers) { response in
                        try Self.expectProblem(response, status: .unauthorized, type: "unauthorized")
                        #expect(response.headers[.wwwAuthenticate] == #"Bearer realm="stamp""#)
                    }
                }
            }
            #expect(fixture.counter("stamp_ids_issued_total", [("shard", "0")]) == 0, "a refused request issues no ID")
            try await client.execute(uri: "/v1/ids?count=3", method: .get, headers: [.authorization: "Bearer \(text)"]) { #expect($0.status == .ok) }
            try await client.execute(uri: "/v1/cluster", method: .get, headers: [.authorization: "bearer \(text)"]) { #expect($0.status == .ok) }
            for uri in ["/health/live", "/health/ready", "/metrics"] {
                try await client.execute(uri: uri, method: .get) { #expect($0.status == .ok, "\(uri)") }
            }
        }
    }

    @Test func shardsTheShardMapDoesNotListAreRefused() async throws {
        try await withApplication(shards: ShardCheck(known: { $0 < 3 }, refreshed: { $0 < 3 })) { client, fixture in
            try await client.execute(uri: "/v1/ids?shard=2", method: .get) { #expect($0.status == .ok) }
            try await client.execute(uri: "/v1/ids?shard=3&count=5", method: .get) { response in
                try Self.expectProblem(response, status: .badRequest, type: "unknown-shard")
            }
            #expect(fixture.counter("stamp_ids_issued_total", [("shard", "3")]) == 0, "a refused request issues no ID")
        }
    }

    /// A shard the map in memory does not list yet is served once the map read again lists it.
    @Test func aShardInANewerMapIsServed() async throws {
        try await withApplication(shards: ShardCheck(known: { $0 < 3 }, refreshed: { $0 < 4 })) { client, fixture in
            try await client.execute(uri: "/v1/ids?shard=3&count=2", method: .get) { response in
                #expect(response.status == .ok)
                let body = try JSONDecoder().decode(IDsBody.self, from: Data(buffer: response.body))
                #expect(try body.ids.map { try StampID(decimal: $0).fields(in: .default).shard } == [3, 3])
            }
            #expect(fixture.counter("stamp_ids_issued_total", [("shard", "3")]) == 2)
        }
    }

    @Test func textAndBinaryRepresentations() async throws {
        try await withApplication { client, _ in
            let text = try await client.execute(uri: "/v1/ids?count=4", method: .get, headers: [.accept: "text/plain"]) { response in
                #expect(response.status == .ok)
                #expect(response.headers[.contentType] == "text/plain; charset=utf-8")
                return String(buffer: response.body)
            }
            let lines = text.split(separator: "\n")
            #expect(lines.count == 4 && text.hasSuffix("\n"))
            let textIDs = try lines.map { try StampID(decimal: $0) }

            let binary = try await client.execute(uri: "/v1/ids?count=4", method: .get, headers: [.accept: "application/octet-stream"]) { response in
                #expect(response.status == .ok)
                #expect(response.headers[.contentType] == "application/octet-stream")
                var body = response.body
                #expect(body.readableBytes == 32)
                return (0..<4).compactMap { _ in body.readInteger(endianness: .big, as: Int64.self) }.compactMap(StampID.init(rawValue:))
            }
            #expect(binary.count == 4)
            #expect(binary.first! > textIDs.last!)

            try await client.execute(uri: "/v1/ids", method: .get, headers: [.accept: "text/html;q=1, application/octet-stream;q=0.5"]) { response in
                #expect(response.headers[.contentType] == "application/octet-stream")
            }
            try await client.execute(uri: "/v1/ids", method: .get, headers: [.accept: "image/png"]) { response in
                try Self.expectProblem(response, status: .notAcceptable, type: "not-acceptable")
            }
        }
    }

    @Test(arguments: ["count=0", "count=-1", "count=10001", "count=1e3", "count=", "count=%201", "count=99999999999999999999", "shard=32", "shard=-1", "shard=abc", "shard=1.5", "after=-5", "after=abc", "after=9223372036854775808"])
    func boundsAreEnforced(query: String) async throws {
        try await withApplication { client, fixture in
            try await client.execute(uri: "/v1/ids?\(query)", method: .get) { response in
                try Self.expectProblem(response, status: .badRequest, type: "invalid-parameter")
            }
            #expect(fixture.node.readiness().isReady)
            #expect(fixture.counter("stamp_ids_issued_total", [("shard", "0")]) == 0)
        }
    }

    @Test func afterBeyondMaxLeadIsAConflict() async throws {
        try await withApplication { client, fixture in
            let now = NodeFixture.start - IDLayout.default.epochUnixMilliseconds
            let near = StampID(time: now + 200, sequence: 5, shard: 0, node: 9, layout: .default)
            try await client.execute(uri: "/v1/ids?after=\(near)", method: .get) { response in
                let body = try JSONDecoder().decode(IDsBody.self, from: Data(buffer: response.body))
                #expect(try StampID(decimal: body.ids[0]) > near)
            }
            let far = StampID(time: now + 5000, sequence: 0, shard: 0, node: 9, layout: .default)
            try await client.execute(uri: "/v1/ids?after=\(far)", method: .get) { response in
                try Self.expectProblem(response, status: .conflict, type: "after-too-far-ahead")
            }
            _ = fixture
        }
    }

    @Test func decodeEndpoint() async throws {
        try await withApplication { client, fixture in
            let id = StampID(time: 1000, sequence: 2, shard: 3, node: 4, layout: .default)
            for form in [id.description, id.text] {
                try await client.execute(uri: "/v1/ids/\(form)", method: .get) { response in
                    #expect(response.status == .ok)
                    let object = try JSONSerialization.jsonObject(with: Data(buffer: response.body)) as? [String: Any]
                    #expect(object?["id"] as? String == id.description)
                    #expect(object?["time"] as? String == "2025-01-01T00:00:01.000Z")
                    #expect(object?["sequence"] as? Int == 2)
                    #expect(object?["shard"] as? Int == 3)
                    #expect(object?["node"] as? Int == 4)
                    #expect(object?["timeInFuture"] as? Bool == false)
                }
            }
            let future = StampID(time: NodeFixture.start - IDLayout.default.epochUnixMilliseconds + 60_000, sequence: 0, shard: 0, node: 0, layout: .default)
            try await client.execute(uri: "/v1/ids/\(future)", method: .get) { response in
                let object = try JSONSerialization.jsonObject(with: Data(buffer: response.body)) as? [String: Any]
                #expect(object?["timeInFuture"] as? Bool == true)
            }
            for malformed in ["-1", "%2B1", "0x10", "9223372036854775808", "1234567890123456789012", "ILOU000000000", "abc"] {
                try await client.execute(uri: "/v1/ids/\(malformed)", method: .get) { response in
                    try Self.expectProblem(response, status: .badRequest, type: "invalid-id")
                }
            }
            _ = fixture
        }
    }

    @Test func clusterHealthMetricsAndDocument() async throws {
        try await withApplication { client, _ in
            try await client.execute(uri: "/v1/cluster", method: .get) { response in
                #expect(response.status == .ok)
                let object = try JSONSerialization.jsonObject(with: Data(buffer: response.body)) as? [String: Any]
                #expect(object?["layout"] as? String == IDLayout.default.description)
                #expect(object?["node"] as? Int == 0)
                #expect(object?["ready"] as? Bool == true)
                #expect((object?["nodes"] as? [[String: Any]])?.count == 1)
            }
            try await client.execute(uri: "/health/live", method: .get) { #expect($0.status == .ok) }
            try await client.execute(uri: "/health/ready", method: .get) { #expect($0.status == .ok) }
            try await client.execute(uri: "/metrics", method: .get) { response in
                #expect(response.status == .ok)
                #expect(String(buffer: response.body).contains("stamp_test_metric 1"))
            }
            try await client.execute(uri: "/openapi.yaml", method: .get) { response in
                #expect(response.status == .ok)
                #expect(String(buffer: response.body).hasPrefix("openapi: 3.1.0"))
            }
            try await client.execute(uri: "/nowhere", method: .get) { response in
                try Self.expectProblem(response, status: .notFound, type: "not-found")
            }
        }
    }

    @Test func oversizedBodiesAreRejected() async throws {
        try await withApplication { client, fixture in
            let body = ByteBuffer(repeating: UInt8(ascii: "x"), count: 64 * 1024)
            try await client.execute(uri: "/v1/ids", method: .get, headers: [.contentLength: String(body.readableBytes)], body: body) { response in
                try Self.expectProblem(response, status: .contentTooLarge, type: "body-too-large")
            }
            try await client.execute(uri: "/v1/ids", method: .get, headers: [.transferEncoding: "chunked"], body: body) { response in
                try Self.expectProblem(response, status: .contentTooLarge, type: "body-too-large")
            }
            #expect(fixture.counter("stamp_ids_issued_total", [("shard", "0")]) == 0)
        }
    }

    @Test func nodeWithoutLeaseAnswers503WithRetryAfter() async throws {
        try await withApplication(claimed: false) { client, _ in
            for uri in ["/v1/ids", "/health/ready"] {
                try await client.execute(uri: uri, method: .get) { response in
                    try Self.expectProblem(response, status: .serviceUnavailable, type: "unavailable")
                    #expect(response.headers[.retryAfter] == "1")
                }
            }
            try await client.execute(uri: "/health/live", method: .get) { #expect($0.status == .ok) }
        }
    }

    @Test func backwardClockStepAnswers503() async throws {
        try await withApplication { client, fixture in
            try await client.execute(uri: "/v1/ids", method: .get) { #expect($0.status == .ok) }
            fixture.wallClock.advance(milliseconds: -3000)
            try await client.execute(uri: "/v1/ids", method: .get) { response in
                try Self.expectProblem(response, status: .serviceUnavailable, type: "unavailable")
                #expect(response.headers[.retryAfter] == "2")
            }
            try await client.execute(uri: "/health/ready", method: .get) { #expect($0.status == .serviceUnavailable) }
            #expect(fixture.counter("stamp_refusals_total", [("reason", "lead-exceeded")]) == 1)
        }
    }
}
