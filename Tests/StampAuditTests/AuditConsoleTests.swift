import Foundation
import Hummingbird
import HummingbirdTesting
import NIOCore
import StampAPI
import StampAudit
import StampAuditServer
import StampAuditService
import StampAuditStore
import StampCore
import StampShardMap
import StampTesting
import StampWebConsole
import Synchronization
import Testing

/// The audit viewer at `/ui` and the JSON it reads: the page and its assets, the token rules, the
/// latest value of each field, the shards' chains, and bad input; in process.
@Suite("Audit console")
struct AuditConsoleTests {
    typealias API = AuditAPITests
    static let admin = PersonalDataTests.admin
    static let writerOnly: HTTPFields = [.authorization: "Bearer \(AuditFixture.writerToken)"]

    static func decode<T: Decodable>(_ type: T.Type, _ response: TestResponse, sourceLocation: SourceLocation = #_sourceLocation) throws -> T {
        #expect(response.status == .ok, "\(String(buffer: response.body))", sourceLocation: sourceLocation)
        return try JSONDecoder().decode(type, from: Data(buffer: response.body))
    }

    static func expectConsoleHeaders(_ response: TestResponse, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(response.headers[.contentSecurityPolicy] == WebConsole.contentSecurityPolicy, sourceLocation: sourceLocation)
        #expect(response.headers[.xContentTypeOptions] == "nosniff", sourceLocation: sourceLocation)
        #expect(response.headers[HTTPFields.Element.Name("Referrer-Policy")!] == "no-referrer", sourceLocation: sourceLocation)
    }

    @Test("the viewer's page needs no token, holds no data, carries the console's headers, and keeps everything out of its address")
    func thePageAndItsAssets() async throws {
        try await withAuditFixture(.sqlite, shardCount: 1) { fixture in
            try await fixture.application().test(.router) { client in
                try await API.write(client, user: "quentin-marker", key: "q1", body: API.body(after: "marker-value@example.com"))
                let html = try await client.execute(uri: "/ui", method: .get) { response in
                    #expect(response.status == .ok)
                    #expect(response.headers[.contentType] == "text/html; charset=utf-8")
                    Self.expectConsoleHeaders(response)
                    return String(buffer: response.body)
                }
                for part in [
                    "<title>Audit log · Stamp</title>", #"<label for="console-token">Reader or admin token</label>"#, #"id="lookup-form""#,
                    #"id="history-table""#, #"id="latest-table""#, #"id="shards-table""#, #"id="erase-confirm""#, #"<script src="/ui/assets/audit.js"></script>"#,
                ] {
                    #expect(html.contains(part), "the page has \(part)")
                }
                #expect(!html.contains("quentin-marker") && !html.contains("marker-value"), "the page holds no data")
                // No field has a name and every form posts, so a form submitted without the script
                // sends nothing: no user ID or token can land in the page's address.
                let fields = ["<input", "<select", "<textarea"].flatMap { tag in html.components(separatedBy: tag).dropFirst().map { $0.prefix(while: { $0 != ">" }) } }
                #expect(fields.count == 4)
                #expect(fields.allSatisfy { !$0.contains("name=") }, "\(fields)")
                let forms = html.components(separatedBy: "<form").dropFirst()
                #expect(forms.count == 4)
                for form in forms {
                    #expect(form.prefix(while: { $0 != ">" }).contains(#"method="post""#), "<form\(form.prefix(while: { $0 != ">" }))>")
                }
                // Nothing from another origin: every script and stylesheet is the server's own.
                #expect(!html.contains("http://") && !html.contains("https://") && !html.contains("//cdn"))

                for (asset, type) in [("audit.js", "text/javascript; charset=utf-8"), ("audit.css", "text/css; charset=utf-8"), ("console.js", "text/javascript; charset=utf-8"), ("console.css", "text/css; charset=utf-8"), ("favicon.svg", "image/svg+xml")] {
                    try await client.execute(uri: "/ui/assets/\(asset)", method: .get) { response in
                        #expect(response.status == .ok)
                        #expect(response.headers[.contentType] == type)
                        Self.expectConsoleHeaders(response)
                    }
                }
                let script = try await client.execute(uri: "/ui/assets/audit.js", method: .get) { String(buffer: $0.body) }
                #expect(!script.contains("innerHTML") && !script.contains("location"), "the script builds text nodes and never touches the address")
                try await client.execute(uri: "/ui/assets/nothing.js", method: .get) { try API.expectProblem($0, .notFound, "not-found") }
                try await client.execute(uri: "/ui", method: .post) { response in
                    try API.expectProblem(response, .methodNotAllowed, "method-not-allowed")
                    #expect(response.headers[.allow] == "GET")
                }
            }
        }
    }

    @Test("the OpenAPI document describes the viewer's page, its assets and the JSON it reads")
    func theDocumentNamesTheNewEndpoints() async throws {
        let document = try #require(AuditOpenAPIDocument.text)
        for path in ["/v1/users/{userId}/fields:", "/v1/caller:", "/v1/shards:", "/v1/shards/{shardId}/verification:", "/ui:", "/ui/assets/{name}:"] {
            #expect(document.contains("\n  \(path)\n"), "the document has \(path)")
        }
        // The assets the page below fetches, every one of them.
        #expect(document.contains("enum: [console.css, console.js, favicon.svg, audit.css, audit.js]"))
    }

    @Test("GET /v1/caller names the token's role and identity; without a valid token it is 401")
    func theCallerIsNamed() async throws {
        try await withAuditFixture(.sqlite, shardCount: 1) { fixture in
            let tokens = try AuditTokens(writer: AuditFixture.writerToken, reader: AuditFixture.readerToken, admin: AuditFixture.adminToken)
            try await fixture.application().test(.router) { client in
                for (headers, role) in [(Self.writerOnly, AuditTokens.Role.writer), (API.reader, .reader), (Self.admin, .admin)] {
                    let caller = try await client.execute(uri: "/v1/caller", method: .get, headers: headers) { try Self.decode(AuditCaller.self, $0) }
                    #expect(caller == AuditCaller(role: role.rawValue, identity: tokens.identity(of: role)))
                }
                try await client.execute(uri: "/v1/caller", method: .get) { try API.expectProblem($0, .unauthorized, "unauthorized") }
                try await client.execute(uri: "/v1/caller", method: .get, headers: [.authorization: "Bearer not-a-token-of-this-server"]) {
                    try API.expectProblem($0, .unauthorized, "unauthorized")
                }
            }
        }
    }

    @Test("GET /v1/users/{id}/fields answers the latest event of each field, also of a field changed only before the newest 500 events", arguments: AuditStoreBackend.testable)
    func theLatestOfEachField(backend: AuditStoreBackend) async throws {
        try await withAuditFixture(backend, shardCount: 2) { fixture in
            func event(_ field: String, _ after: String) -> AuditEventInput {
                AuditEventInput(field: field, before: nil, after: after, actor: "support:1")
            }
            _ = try await fixture.service.record(user: "carol", idempotencyKey: "p1", event: event("phone", "+1 555 0100"))
            _ = try await fixture.service.record(user: "carol", idempotencyKey: "p2", event: event("phone", "+1 555 0199"))
            for n in 1...AuditLimits.maxPageSize {
                _ = try await fixture.service.record(user: "carol", idempotencyKey: "e\(n)", event: event("email", "c\(n)@example.com"))
            }
            _ = try await fixture.service.record(user: "dave", idempotencyKey: "d1", event: event("address", "elsewhere"))
            try await fixture.application().test(.router) { client in
                let latest = try await client.execute(uri: "/v1/users/carol/fields", method: .get, headers: API.reader) { try Self.decode(AuditLatestFields.self, $0) }
                #expect(latest.events.map(\.field) == ["email", "phone"], "by field name, one each, only carol's")
                #expect(latest.events.map(\.values?.after) == ["c\(AuditLimits.maxPageSize)@example.com", "+1 555 0199"])

                // Readers' values are recorded in the access log with the events returned; the admin sees no values, unrecorded.
                let log = try await client.execute(uri: "/v1/users/carol/access-log", method: .get, headers: Self.admin) { try Self.decode(AuditAccessLog.self, $0) }
                #expect(log.entries.count == 1)
                #expect(log.entries.first?.request == "GET /v1/users/carol/fields")
                #expect(log.entries.first?.reader.hasPrefix("reader sha256:") == true)
                #expect(Set(log.entries.first?.events ?? []) == Set(latest.events.map(\.id)))
                let withoutValues = try await client.execute(uri: "/v1/users/carol/fields", method: .get, headers: Self.admin) { try Self.decode(AuditLatestFields.self, $0) }
                #expect(withoutValues.events.map(\.id) == latest.events.map(\.id) && withoutValues.events.allSatisfy { $0.values == nil })
                #expect(try await client.execute(uri: "/v1/users/carol/access-log", method: .get, headers: Self.admin) { try Self.decode(AuditAccessLog.self, $0) }.entries.count == 1)

                let nobody = try await client.execute(uri: "/v1/users/nobody/fields", method: .get, headers: API.reader) { try Self.decode(AuditLatestFields.self, $0) }
                #expect(nobody.events.isEmpty)
                try await client.execute(uri: "/v1/users/carol/fields", method: .get) { try API.expectProblem($0, .unauthorized, "unauthorized") }
                for bad in ["bad%20user", "a%2Fb", String(repeating: "u", count: 129)] {
                    try await client.execute(uri: "/v1/users/\(bad)/fields", method: .get, headers: API.reader) { try API.expectProblem($0, .badRequest, "invalid-user") }
                }
                try await client.execute(uri: "/v1/users/carol/fields", method: .post, headers: API.reader) { response in
                    try API.expectProblem(response, .methodNotAllowed, "method-not-allowed")
                    #expect(response.headers[.allow] == "GET")
                }
            }
        }
    }

    @Test("after an erasure through the API the viewer reads, the latest values and the history show the values as erased")
    func anErasedUserReadsAsErased() async throws {
        try await withAuditFixture(.sqlite, shardCount: 1) { fixture in
            try await fixture.application().test(.router) { client in
                try await API.write(client, user: "erin", key: "e1", body: API.body(field: "email", before: nil, after: "erin@example.com"))
                try await API.write(client, user: "erin", key: "e2", body: API.body(field: "phone", before: nil, after: "+1 555 0111"))
                // Only the admin erases; the reader, as the viewer would send it, is refused.
                try await client.execute(uri: "/v1/users/erin/personal-data", method: .delete, headers: API.reader) { try API.expectProblem($0, .forbidden, "forbidden") }
                #expect(try await client.execute(uri: "/v1/users/erin/fields", method: .get, headers: API.reader) { try Self.decode(AuditLatestFields.self, $0) }.events.allSatisfy { !$0.erased })
                let erasure = try await PersonalDataTests.erase(client, user: "erin")
                let latest = try await client.execute(uri: "/v1/users/erin/fields", method: .get, headers: API.reader) { try Self.decode(AuditLatestFields.self, $0) }
                #expect(latest.events.map(\.field) == ["email", "personal-data", "phone"])
                #expect(latest.events.map(\.erased) == [true, false, true])
                #expect(latest.events[1].id == erasure.id)
                let history = try await PersonalDataTests.page(client, user: "erin")
                #expect(history.map(\.erased) == [false, true, true], "newest first: the erasure, then the erased changes")
            }
        }
    }

    @Test("GET /v1/shards shows each shard's chain and newest checkpoint, and finds a forged checkpoint and a chain that no longer reaches its checkpoint", arguments: AuditStoreBackend.testable)
    func theShardsAtAGlance(backend: AuditStoreBackend) async throws {
        try await withAuditFixture(backend, shardCount: 2, checkpoints: CheckpointPolicy(signer: AuditChainTests.signer)) { fixture in
            try await fixture.application().test(.router) { client in
                func shards(_ headers: HTTPFields = API.reader) async throws -> [AuditShardState] {
                    let list = try await client.execute(uri: "/v1/shards", method: .get, headers: headers) { try Self.decode(AuditShardList.self, $0) }
                    #expect(list.shardMapVersion == fixture.map.version)
                    return list.shards
                }
                let user = "frank"
                let shard = fixture.map.placement(ofUser: user).write
                let other = 1 - shard
                #expect(try await shards().map(\.shard) == [0, 1])
                #expect(try await shards().allSatisfy { $0.rows == 0 && $0.checkpoint == nil && $0.problem == nil && $0.error == nil })

                for n in 1...3 {
                    try await API.write(client, user: user, key: "f\(n)")
                }
                let signed = try #require(try await fixture.service.checkpoint(shard: shard))
                try await API.write(client, user: user, key: "f4")
                // Any token reads it: it holds no personal data.
                for headers in [Self.writerOnly, API.reader, Self.admin] {
                    let state = try #require(try await shards(headers).first { $0.shard == shard })
                    #expect(state.rows == 4 && state.problem == nil && state.error == nil)
                    #expect(state.checkpoint == AuditShardState.Checkpoint(
                        rows: 3, lastId: signed.lastID, signedAt: RFC3339.format(unixMilliseconds: signed.signedAtMilliseconds), signatureValid: true, reached: true
                    ))
                }
                try await client.execute(uri: "/v1/shards", method: .get) { try API.expectProblem($0, .unauthorized, "unauthorized") }

                // A checkpoint signed by another key, kept in the other shard, is found out.
                let forger = try CheckpointSigner(base64Key: CheckpointSigner.generateKey())
                let forged = forger.checkpoint(shard: other, head: try await #require(fixture.shards.shard(other)).store.chainHead(), signedAtMilliseconds: 5_000)
                try await #require(fixture.shards.shard(other)).store.recordCheckpoint(forged)
                let forgedState = try #require(try await shards().first { $0.shard == other })
                #expect(forgedState.checkpoint?.signatureValid == false)
                #expect(forgedState.problem?.contains("signature") == true)

                // The row the checkpoint ends at, changed by the database's owner, no longer carries the signed head.
                let zeroes = backend == .sqlite ? "zeroblob(32)" : "decode(repeat('00', 32), 'hex')"
                try await fixture.execute(onShard: shard, AuditChainTests.untrigger(backend) + ["UPDATE stamp_audit_events SET chain_hash = \(zeroes) WHERE chain_position = 3"])
                let tampered = try #require(try await shards().first { $0.shard == shard })
                #expect(tampered.checkpoint?.reached == false)
                #expect(tampered.problem?.contains("position 3") == true, "\(tampered.problem ?? "no problem")")
            }
        }
    }

    @Test("POST /v1/shards/{id}/verification recomputes the whole chain, for the reader and admin tokens, and names where it breaks", arguments: AuditStoreBackend.testable)
    func aShardIsVerifiedOnRequest(backend: AuditStoreBackend) async throws {
        try await withAuditFixture(backend, shardCount: 2, checkpoints: CheckpointPolicy(signer: AuditChainTests.signer)) { fixture in
            try await fixture.application().test(.router) { client in
                let user = "gina"
                let shard = fixture.map.placement(ofUser: user).write
                for n in 1...5 {
                    try await API.write(client, user: user, key: "g\(n)")
                }
                _ = try await fixture.service.checkpoint(shard: shard)
                for headers in [API.reader, Self.admin] {
                    let result = try await client.execute(uri: "/v1/shards/\(shard)/verification", method: .post, headers: headers) { try Self.decode(AuditShardVerification.self, $0) }
                    #expect(result.verified && result.problem == nil)
                    #expect(result.shard == shard && result.rows == 5 && result.checkpoints == 1)
                }
                try await client.execute(uri: "/v1/shards/\(shard)/verification", method: .post, headers: Self.writerOnly) { try API.expectProblem($0, .forbidden, "forbidden") }
                try await client.execute(uri: "/v1/shards/\(shard)/verification", method: .post) { try API.expectProblem($0, .unauthorized, "unauthorized") }
                for unknown in ["7", "x", "-1"] {
                    try await client.execute(uri: "/v1/shards/\(unknown)/verification", method: .post, headers: API.reader) { try API.expectProblem($0, .notFound, "unknown-shard") }
                }
                try await client.execute(uri: "/v1/shards/\(shard)/verification", method: .get, headers: API.reader) { response in
                    try API.expectProblem(response, .methodNotAllowed, "method-not-allowed")
                    #expect(response.headers[.allow] == "POST")
                }

                try await fixture.execute(onShard: shard, AuditChainTests.untrigger(backend) + ["UPDATE stamp_audit_events SET actor = 'someone else' WHERE chain_position = 2"])
                let broken = try await client.execute(uri: "/v1/shards/\(shard)/verification", method: .post, headers: API.reader) { try Self.decode(AuditShardVerification.self, $0) }
                #expect(!broken.verified)
                #expect(broken.problem?.kind == "edited" && broken.problem?.position == 2, "\(String(describing: broken.problem))")
            }
        }
    }

    @Test("one verification runs on a server at a time: another meanwhile is answered 503 with Retry-After, and runs once the first is done")
    func verificationsRunOneAtATime() async throws {
        try await withAuditFixture(.sqlite, shardCount: 1) { fixture in
            let logger = fixture.records.logger()
            let held = HeldWalkStore(SQLiteAuditStore(path: fixture.folder.appendingPathComponent("held-0.sqlite").path, logger: logger))
            let shards = ShardSet(layout: .default, commitsPerShard: { _ in 1 }, logger: logger) { _ in held }
            let source = try ShardMapSource(path: fixture.mapPath, layout: .default, clock: ManualClock(), logger: logger)
            let service = AuditService(layout: .default, shardMap: source, shards: shards, ids: try LocalIDSource(), sealer: try ValueSealer(base64Key: AuditFixture.dataKey), logger: logger)
            var server = AuditServerConfiguration().server
            server.port = 0
            let application = buildAuditApplication(service: service, tokens: try AuditTokens(writer: AuditFixture.writerToken, reader: AuditFixture.readerToken, admin: AuditFixture.adminToken), server: server, logger: logger)
            try await withThrowingTaskGroup { group in
                group.addTask { try await shards.run() }
                defer { group.cancelAll() }
                try await shards.prepare(fixture.map)
                try await application.test(.router) { client in
                    try await API.write(client, user: "hana", key: "h1")
                    let first = Task {
                        try await client.execute(uri: "/v1/shards/0/verification", method: .post, headers: API.reader) { try Self.decode(AuditShardVerification.self, $0) }
                    }
                    await held.waitUntilAWalkIsHeld()
                    for headers in [API.reader, Self.admin] {
                        try await client.execute(uri: "/v1/shards/0/verification", method: .post, headers: headers) { response in
                            try API.expectProblem(response, .serviceUnavailable, "unavailable")
                            #expect(response.headers[.retryAfter] == "2")
                        }
                    }
                    held.release()
                    let result = try await first.value
                    #expect(result.verified && result.rows == 1)
                    let again = try await client.execute(uri: "/v1/shards/0/verification", method: .post, headers: API.reader) { try Self.decode(AuditShardVerification.self, $0) }
                    #expect(again.verified && again.rows == 1, "the server verifies again once the first is done")
                }
            }
        }
    }
}

/// An SQLite store whose first walk of the chain waits, once it has begun, until ``release()``: a
/// verification that takes its time.
final class HeldWalkStore: ForwardingAuditStore {
    let base: any AuditStore
    private let state = Mutex<(held: Bool, released: Bool)>((false, false))
    private let (holds, holding) = AsyncStream.makeStream(of: Void.self)
    private let (releases, releasing) = AsyncStream.makeStream(of: Void.self)

    init(_ base: any AuditStore) {
        self.base = base
    }

    /// Returns once a walk is held.
    func waitUntilAWalkIsHeld() async {
        for await _ in holds { return }
    }

    /// Lets the held walk go on, and every later one.
    func release() {
        state.withLock { $0.released = true }
        releasing.finish()
    }

    func chainedRows(after position: Int64, limit: Int) async throws(AuditStoreError) -> [ChainedRow] {
        let hold = state.withLock { state in
            defer { state.held = true }
            return !state.held && !state.released
        }
        if hold {
            holding.yield()
            for await _ in releases {}
        }
        return try await base.chainedRows(after: position, limit: limit)
    }
}
