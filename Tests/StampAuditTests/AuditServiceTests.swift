import Hummingbird
import HummingbirdTesting
import StampAudit
import StampAuditServer
import StampAuditService
import StampCore
import Testing

/// The audit service without HTTP: its operations throw its own errors, with stable codes, and
/// the API answers each with the status and problem type it documents.
@Suite("Audit service")
struct AuditServiceTests {
    /// An ID source whose generators are all unreachable.
    struct UnreachableIDSource: AuditIDSource {
        struct Unreachable: Error {}

        func nextID(shard: Int, above floor: StampID?) async throws -> StampID {
            throw Unreachable()
        }

        var isReachable: Bool { false }
    }

    static let event = AuditEventInput(field: "email", before: "a@old.example", after: "a@new.example", actor: "support:42")

    @Test func aReusedKeyAndAnUnknownShardAreTheServicesErrors() async throws {
        try await withAuditFixture(.sqlite) { fixture in
            let service = fixture.service
            let first = try await service.record(user: "alice", idempotencyKey: "k1", event: Self.event)
            #expect(first.replayed == false)
            #expect(try await service.record(user: "alice", idempotencyKey: "k1", event: Self.event).replayed)
            var other = Self.event
            other.after = "a@other.example"
            let reused = await #expect(throws: AuditServiceError.self) { try await service.record(user: "alice", idempotencyKey: "k1", event: other) }
            #expect(reused?.code == .idempotencyKeyReused)
            let foreign = StampID(time: 1, sequence: 0, shard: 30, node: 0, layout: .default)
            let unknown = await #expect(throws: AuditServiceError.self) { try await service.event(id: foreign) }
            #expect(unknown?.code == .unknownShard)
        }
    }

    /// Without an ID nothing is written: the service says so, and the API answers 503 with
    /// `Retry-After`, so that the client retries with the same key.
    @Test func noIDIsUnavailable() async throws {
        try await withAuditFixture(.sqlite) { fixture in
            let service = AuditService(layout: .default, shardMap: fixture.service.shardMap, shards: fixture.shards, ids: UnreachableIDSource(), sealer: try ValueSealer(base64Key: AuditFixture.dataKey), logger: fixture.records.logger())
            let refused = await #expect(throws: AuditServiceError.self) { try await service.record(user: "bob", idempotencyKey: "k1", event: Self.event) }
            #expect(refused?.code == .noID)
            #expect(refused?.cause is UnreachableIDSource.Unreachable)
            let application = buildAuditApplication(service: service, tokens: try AuditTokens(writer: AuditFixture.writerToken, reader: AuditFixture.readerToken), logger: fixture.records.logger())
            try await application.test(.router) { client in
                try await client.execute(uri: "/v1/users/bob/events", method: .post, headers: AuditAPITests.writeHeaders(key: "k1"), body: AuditAPITests.body()) { response in
                    try AuditAPITests.expectProblem(response, .serviceUnavailable, "unavailable")
                    #expect(response.headers[.retryAfter] == "1")
                }
            }
            #expect(try await fixture.allIDs().isEmpty)
        }
    }
}
