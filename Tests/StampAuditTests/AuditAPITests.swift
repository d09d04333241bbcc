import AsyncHTTPClient
import Foundation
import Hummingbird
import HummingbirdTesting
import NIOCore
import StampAudit
import StampAuditServer
import StampAuditService
import StampCore
import StampShardMap
import StampTesting
import Testing

/// The audit API end to end in process, on SQLite and on PostgreSQL.
@Suite("Audit API")
struct AuditAPITests {
    static let writer: HTTPFields = [.authorization: "Bearer \(AuditFixture.writerToken)", .contentType: "application/json"]
    static let reader: HTTPFields = [.authorization: "Bearer \(AuditFixture.readerToken)"]

    struct EventBody: Decodable {
        let id: String
        let userId: String
        let field: String
        let actor: String
        let reason: String
        let shard: Int
        let recordedAt: String
        let before: String??
        let after: String??
    }

    struct PageBody: Decodable {
        let events: [EventBody]
        let next: String?
    }

    struct ProblemBody: Decodable {
        let type: String
        let status: Int
        let detail: String
    }

    static func writeHeaders(key: String) -> HTTPFields {
        var headers = writer
        headers[AuditHeaders.idempotencyKey] = key
        return headers
    }

    static func body(field: String = "email", before: String? = "old@example.com", after: String? = "new@example.com", actor: String = "support:42", reason: String = "ticket 7") -> ByteBuffer {
        func value(_ text: String?) -> String { text.map { "\"\($0)\"" } ?? "null" }
        return ByteBuffer(string: #"{"field":"\#(field)","before":\#(value(before)),"after":\#(value(after)),"actor":"\#(actor)","reason":"\#(reason)"}"#)
    }

    @discardableResult
    static func write(_ client: some TestClientProtocol, user: String, key: String, body: ByteBuffer = body(), status: HTTPResponse.Status = .created) async throws -> EventBody? {
        try await client.execute(uri: "/v1/users/\(user)/events", method: .post, headers: writeHeaders(key: key), body: body) { response in
            #expect(response.status == status, "\(String(buffer: response.body))")
            guard response.status == .created else { return nil }
            return try JSONDecoder().decode(EventBody.self, from: Data(buffer: response.body))
        }
    }

    static func expectProblem(_ response: TestResponse, _ status: HTTPResponse.Status, _ type: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
        #expect(response.status == status, sourceLocation: sourceLocation)
        #expect(response.headers[.contentType] == "application/problem+json", sourceLocation: sourceLocation)
        let problem = try JSONDecoder().decode(ProblemBody.self, from: Data(buffer: response.body))
        #expect(problem.type == "urn:stamp:problem:\(type)", "\(problem.detail)", sourceLocation: sourceLocation)
        #expect(problem.status == Int(status.code), sourceLocation: sourceLocation)
    }

    @Test(arguments: AuditStoreBackend.testable, HTTPPath.allCases)
    func writeThenReadEveryWay(backend: AuditStoreBackend, path: HTTPPath) async throws {
        try await withAuditFixture(backend) { fixture in
            try await fixture.application().test(path.setup) { client in
                let written = try #require(try await Self.write(client, user: "alice", key: "k1"))
                #expect(written.userId == "alice" && written.field == "email" && written.actor == "support:42" && written.reason == "ticket 7")
                #expect(written.before == nil && written.after == nil, "a writer never gets values back")
                let id = try StampID(decimal: written.id)
                #expect(written.shard == fixture.map.placement(ofUser: "alice").write)
                #expect(id.fields(in: .default).shard == written.shard)

                // One event, from the shard its ID names: values for readers only.
                try await client.execute(uri: "/v1/events/\(id)", method: .get, headers: Self.reader) { response in
                    #expect(response.status == .ok)
                    let event = try JSONDecoder().decode(EventBody.self, from: Data(buffer: response.body))
                    #expect(event.id == written.id && event.before == .some("old@example.com") && event.after == .some("new@example.com"))
                }
                try await client.execute(uri: "/v1/events/\(id.text)", method: .get, headers: [.authorization: "Bearer \(AuditFixture.writerToken)"]) { response in
                    #expect(response.status == .ok)
                    let event = try JSONDecoder().decode(EventBody.self, from: Data(buffer: response.body))
                    #expect(event.id == written.id && event.before == nil && event.after == nil)
                }

                // History: newest first, paged by cursor, filtered by field; nulls kept.
                var ids = [written.id]
                for (index, field) in ["phone", "email", "phone", "address"].enumerated() {
                    let event = try #require(try await Self.write(client, user: "alice", key: "k\(index + 2)", body: Self.body(field: field, before: nil, after: "v\(index)")))
                    ids.append(event.id)
                }
                #expect(ids.map { try! StampID(decimal: $0) } == ids.map { try! StampID(decimal: $0) }.sorted(), "a user's IDs rise with each write")
                var seen: [String] = []
                var cursor: String?
                repeat {
                    let uri = "/v1/users/alice/events?limit=2" + (cursor.map { "&before=\($0)" } ?? "")
                    cursor = try await client.execute(uri: uri, method: .get, headers: Self.reader) { response in
                        #expect(response.status == .ok)
                        let page = try JSONDecoder().decode(PageBody.self, from: Data(buffer: response.body))
                        #expect(page.events.count <= 2)
                        seen += page.events.map(\.id)
                        return page.next
                    }
                } while cursor != nil
                #expect(seen == ids.reversed())
                try await client.execute(uri: "/v1/users/alice/events?field=phone", method: .get, headers: Self.reader) { response in
                    let page = try JSONDecoder().decode(PageBody.self, from: Data(buffer: response.body))
                    #expect(page.events.map(\.id) == [ids[3], ids[1]])
                    #expect(page.events.first?.after == .some("v2"))
                    let document = try #require(try JSONSerialization.jsonObject(with: Data(buffer: response.body)) as? [String: Any])
                    let newest = try #require((document["events"] as? [[String: Any]])?.first)
                    #expect(newest["before"] is NSNull && newest["after"] as? String == "v2", "a missing value is null for readers")
                    #expect(page.next == nil)
                }
                try await client.execute(uri: "/v1/users/alice/events/latest?field=email", method: .get, headers: Self.reader) { response in
                    let event = try JSONDecoder().decode(EventBody.self, from: Data(buffer: response.body))
                    #expect(event.id == ids[2] && event.after == .some("v1"))
                }
                try await client.execute(uri: "/v1/users/alice/events/latest?field=nickname", method: .get, headers: Self.reader) { response in
                    try Self.expectProblem(response, .notFound, "not-found")
                }
                try await client.execute(uri: "/v1/users/bob/events", method: .get, headers: Self.reader) { response in
                    let page = try JSONDecoder().decode(PageBody.self, from: Data(buffer: response.body))
                    #expect(page.events.isEmpty && page.next == nil)
                }
            }
            #expect(try await fixture.allIDs().count == 5)
        }
    }

    @Test(arguments: AuditStoreBackend.testable, HTTPPath.allCases)
    func retriesWithTheSameKeyStoreNothingNew(backend: AuditStoreBackend, path: HTTPPath) async throws {
        try await withAuditFixture(backend) { fixture in
            try await fixture.application().test(path.setup) { client in
                let first = try #require(try await Self.write(client, user: "carol", key: "same"))
                try await client.execute(uri: "/v1/users/carol/events", method: .post, headers: Self.writeHeaders(key: "same"), body: Self.body()) { response in
                    #expect(response.status == .created)
                    #expect(response.headers[AuditHeaders.replayed] == "true")
                    let again = try JSONDecoder().decode(EventBody.self, from: Data(buffer: response.body))
                    #expect(again.id == first.id)
                }
                try await client.execute(uri: "/v1/users/carol/events", method: .post, headers: Self.writeHeaders(key: "same"), body: Self.body(after: "other@example.com")) { response in
                    try Self.expectProblem(response, .unprocessableContent, "idempotency-key-reused")
                }
                // Keys are per user: another user's write under the same key is its own.
                let other = try #require(try await Self.write(client, user: "dave", key: "same"))
                #expect(other.id != first.id)
            }
            #expect(try await fixture.allIDs().count == 2)
        }
    }

    @Test(arguments: AuditStoreBackend.testable, HTTPPath.allCases)
    func theSameKeySentFiftyTimesAtOnceStoresOneRow(backend: AuditStoreBackend, path: HTTPPath) async throws {
        try await withAuditFixture(backend) { fixture in
            try await fixture.application().test(path.setup) { client in
                let requests = ConcurrentRequests(client: client, path: path)
                let ids = try await withThrowingTaskGroup(of: (String, Bool).self) { group in
                    for _ in 0..<50 {
                        group.addTask {
                            let response = try await requests.post("/v1/users/erin/events", headers: Self.writeHeaders(key: "burst"), body: Self.body())
                            #expect(response.status == .created)
                            let event = try JSONDecoder().decode(EventBody.self, from: Data(buffer: response.body))
                            return (event.id, response.headers[AuditHeaders.replayed] == "true")
                        }
                    }
                    var results: [(String, Bool)] = []
                    for try await result in group { results.append(result) }
                    return results
                }
                try await requests.shutdown()
                #expect(ids.count == 50)
                #expect(Set(ids.map(\.0)).count == 1, "every answer names the one stored event")
                #expect(ids.filter { !$0.1 }.count == 1, "exactly one answer stored it")
            }
            #expect(try await fixture.allIDs().count == 1)
        }
    }

    @Test(arguments: AuditStoreBackend.testable, HTTPPath.allCases)
    func badInputGetsAClearProblemAndWritesNothing(backend: AuditStoreBackend, path: HTTPPath) async throws {
        try await withAuditFixture(backend) { fixture in
            try await fixture.application().test(path.setup) { client in
                let post = { (uri: String, headers: HTTPFields, body: ByteBuffer, status: HTTPResponse.Status, type: String) in
                    try await client.execute(uri: uri, method: .post, headers: headers, body: body) { response in
                        try Self.expectProblem(response, status, type)
                    }
                }
                var noKey = Self.writer
                noKey[AuditHeaders.idempotencyKey] = nil
                try await post("/v1/users/u1/events", noKey, Self.body(), .badRequest, "invalid-idempotency-key")
                try await post("/v1/users/u1/events", Self.writeHeaders(key: "has space"), Self.body(), .badRequest, "invalid-idempotency-key")
                try await post("/v1/users/u1/events", Self.writeHeaders(key: String(repeating: "k", count: 256)), Self.body(), .badRequest, "invalid-idempotency-key")
                try await post("/v1/users/bad%20user/events", Self.writeHeaders(key: "k"), Self.body(), .badRequest, "invalid-user")
                try await post("/v1/users/\(String(repeating: "u", count: 129))/events", Self.writeHeaders(key: "k"), Self.body(), .badRequest, "invalid-user")
                try await post("/v1/users/u1/events", Self.writeHeaders(key: "k"), Self.body(before: String(repeating: "x", count: 1025)), .badRequest, "value-too-large")
                try await post("/v1/users/u1/events", Self.writeHeaders(key: "k"), Self.body(field: "Email"), .badRequest, "invalid-field")
                try await post("/v1/users/u1/events", Self.writeHeaders(key: "k"), Self.body(before: nil, after: nil), .badRequest, "invalid-event")
                try await post("/v1/users/u1/events", Self.writeHeaders(key: "k"), Self.body(actor: ""), .badRequest, "invalid-event")
                try await post("/v1/users/u1/events", Self.writeHeaders(key: "k"), ByteBuffer(string: #"{"field":"email","after":7,"actor":"a"}"#), .badRequest, "invalid-event")
                try await post("/v1/users/u1/events", Self.writeHeaders(key: "k"), ByteBuffer(string: "not json"), .badRequest, "invalid-event")
                try await post("/v1/users/u1/events", Self.writeHeaders(key: "k"), ByteBuffer(string: #"{"after":"x","actor":"a"}"#), .badRequest, "invalid-event")
                try await post("/v1/users/u1/events", Self.writeHeaders(key: "k"), ByteBuffer(string: String(repeating: " ", count: 64 * 1024 + 1)), .contentTooLarge, "body-too-large")
                var plain = Self.writeHeaders(key: "k")
                plain[.contentType] = "text/plain"
                try await post("/v1/users/u1/events", plain, Self.body(), .unsupportedMediaType, "unsupported-media-type")
                var anonymous = Self.writeHeaders(key: "k")
                anonymous[.authorization] = nil
                try await client.execute(uri: "/v1/users/u1/events", method: .post, headers: anonymous, body: Self.body()) { response in
                    try Self.expectProblem(response, .unauthorized, "unauthorized")
                    #expect(response.headers[.wwwAuthenticate]?.hasPrefix("Bearer") == true)
                }
                var wrong = Self.writeHeaders(key: "k")
                wrong[.authorization] = "Bearer not-a-token-at-all"
                try await post("/v1/users/u1/events", wrong, Self.body(), .unauthorized, "unauthorized")
                var readerWrites = Self.writeHeaders(key: "k")
                readerWrites[.authorization] = "Bearer \(AuditFixture.readerToken)"
                try await post("/v1/users/u1/events", readerWrites, Self.body(), .forbidden, "forbidden")

                let get = { (uri: String, status: HTTPResponse.Status, type: String) in
                    try await client.execute(uri: uri, method: .get, headers: Self.reader) { response in
                        try Self.expectProblem(response, status, type)
                    }
                }
                try await get("/v1/users/u1/events?before=12ab", .badRequest, "invalid-cursor")
                try await get("/v1/users/u1/events?before=-1", .badRequest, "invalid-cursor")
                try await get("/v1/users/u1/events?limit=0", .badRequest, "invalid-parameter")
                try await get("/v1/users/u1/events?limit=501", .badRequest, "invalid-parameter")
                try await get("/v1/users/u1/events?field=NO", .badRequest, "invalid-field")
                try await get("/v1/users/u1/events/latest", .badRequest, "invalid-field")
                try await get("/v1/events/banana", .badRequest, "invalid-id")
                // An ID naming shard 9, which the map does not list.
                let foreign = StampID(time: 1000, sequence: 0, shard: 9, node: 0, layout: .default)
                try await get("/v1/events/\(foreign)", .notFound, "unknown-shard")
                let unknown = StampID(time: 1000, sequence: 0, shard: 0, node: 0, layout: .default)
                try await get("/v1/events/\(unknown)", .notFound, "not-found")
                try await client.execute(uri: "/v1/users/u1/events", method: .get) { response in
                    try Self.expectProblem(response, .unauthorized, "unauthorized")
                }
                try await client.execute(uri: "/v1/events/1", method: .delete, headers: Self.reader) { response in
                    try Self.expectProblem(response, .methodNotAllowed, "method-not-allowed")
                    #expect(response.headers[.allow] == "GET")
                }
                try await client.execute(uri: "/v1/users/u1/events", method: .put, headers: Self.writer) { response in
                    try Self.expectProblem(response, .methodNotAllowed, "method-not-allowed")
                    #expect(response.headers[.allow] == "GET, POST")
                }
                try await client.execute(uri: "/v1/nothing", method: .get, headers: Self.reader) { response in
                    try Self.expectProblem(response, .notFound, "not-found")
                }
            }
            #expect(try await fixture.allIDs().isEmpty, "no bad request stored a row")
        }
    }

    @Test func healthReadinessAndTheOpenAPIDocument() async throws {
        try await withAuditFixture(.sqlite) { fixture in
            try await fixture.application().test(.router) { client in
                try await client.execute(uri: "/health/live", method: .get) { #expect($0.status == .ok) }
                try await client.execute(uri: "/health/ready", method: .get) { response in
                    #expect(response.status == .ok)
                    #expect(String(buffer: response.body).contains(#""shardMapVersion":1"#))
                }
                try await client.execute(uri: "/openapi.yaml", method: .get) { response in
                    #expect(response.status == .ok)
                    #expect(String(buffer: response.body).contains("/v1/users/{userId}/events:"))
                }
            }
        }
    }

    /// The server `stamp audit serve` runs, built from its configuration with no shard map yet: it
    /// creates the default map, opens its shard, and serves on the port it writes to its port file.
    @Test func theServerBuiltFromItsConfigurationStartsOnDefaults() async throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("stamp-audit-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        var configuration = AuditServerConfiguration(generators: ["http://127.0.0.1:1"], tokens: try AuditTokens(writer: AuditFixture.writerToken, reader: AuditFixture.readerToken))
        configuration.server.port = 0
        configuration.server.portFile = folder.appendingPathComponent("port").path
        configuration.service.shardMapPath = folder.appendingPathComponent("map/shard-map.json").path
        configuration.service.sealer = try ValueSealer(base64Key: AuditFixture.dataKey)
        let log = RecordingLogHandler.Records()
        let application = try buildAuditApplication(configuration: configuration, logger: log.logger())
        #expect(FileManager.default.fileExists(atPath: configuration.service.shardMapPath), "the default map was created")
        try await withThrowingTaskGroup { group in
            group.addTask {
                defer { log.finish() }
                try await application.run()
            }
            defer { group.cancelAll() }
            #expect(await log.waitFor("listening"))
            #expect(await log.waitFor("shard opened"), "\(log.messages)")
            let portFile = try #require(configuration.server.portFile)
            let port = try #require(Int(try String(contentsOfFile: portFile, encoding: .utf8).trimmingCharacters(in: .newlines)))
            let http = HTTPClient(eventLoopGroupProvider: .singleton)
            for (path, status) in [("/health/live", 200), ("/openapi.yaml", 200), ("/v1/events/1", 401)] {
                let response = try await http.execute(HTTPClientRequest(url: "http://127.0.0.1:\(port)\(path)"), timeout: .seconds(10))
                #expect(Int(response.status.code) == status, "\(path)")
                _ = try await response.body.collect(upTo: 1 << 16)
            }
            try await http.shutdown()
        }
        #expect(FileManager.default.fileExists(atPath: folder.appendingPathComponent("map/audit-shard-0.sqlite").path))
    }

    /// Without tokens or a data key the builder refuses, naming what is missing.
    @Test func theBuilderRefusesAConfigurationWithoutSecrets() throws {
        let refused = #expect(throws: AuditServiceError.self) { try buildAuditApplication(configuration: AuditServerConfiguration(), logger: RecordingLogHandler.Records().logger()) }
        #expect(refused?.code == .invalidConfiguration)
    }
}
