import Hummingbird
import HummingbirdTesting
import StampAudit
import StampAuditServer
import StampAuditService
import StampCore
import Synchronization
import StampTesting
import Testing

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

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

    /// IDs from a node whose wall clock runs 500 ms behind the others', except when asked for one
    /// above a floor: then from a node on time. Records every floor it was asked above.
    final class LaggingIDSource: AuditIDSource {
        let behind: IDGenerator
        let onTime: IDGenerator
        private let floors = Mutex<[StampID?]>([])

        init(now: Int64) throws {
            behind = try IDGenerator(node: 1, wallClock: ManualWallClock(unixMilliseconds: now - 500))
            onTime = try IDGenerator(node: 2, wallClock: ManualWallClock(unixMilliseconds: now))
        }

        var askedAbove: [StampID?] { floors.withLock { $0 } }

        func nextID(shard: Int, above floor: StampID?) async throws -> StampID {
            floors.withLock { $0.append(floor) }
            return try (floor == nil ? behind : onTime).next(shard: shard, count: 1, after: floor)[0]
        }

        var isReachable: Bool { true }
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

    /// The shard checks a user's order inside the commit: a write whose first ID sorts below the
    /// user's newest row (another server's generator runs behind) is not stored under it, but
    /// goes again, in the same call, with an ID above that row.
    @Test(arguments: AuditStoreBackend.testable)
    func aWriteBelowTheUsersNewestRowGoesAgainAboveIt(backend: AuditStoreBackend) async throws {
        try await withAuditFixture(backend) { fixture in
            let first = try await fixture.service.record(user: "carol", idempotencyKey: "k1", event: Self.event).row
            // The clocks of the two nodes are set from the first row's time: however long its write
            // took, one node is behind it and the other on time.
            let lagging = try LaggingIDSource(now: first.id.fields(in: .default).unixMilliseconds)
            let behindServer = AuditService(layout: .default, shardMap: fixture.service.shardMap, shards: fixture.shards, ids: lagging, sealer: try ValueSealer(base64Key: AuditFixture.dataKey), logger: fixture.records.logger(), metricsFactory: fixture.metrics)
            let second = try await behindServer.record(user: "carol", idempotencyKey: "k2", event: Self.event)
            #expect(second.replayed == false)
            #expect(second.row.id > first.id)
            #expect(second.row.id.fields(in: .default).node == 2, "the second ID came from the node on time")
            #expect(lagging.askedAbove == [nil, first.id], "asked once blind, then above the newest row")
            #expect(try fixture.metrics.expectCounter("stamp_audit_order_retries_total").totalValue == 1)
            let history = try await fixture.service.history(user: "carol", field: nil, before: nil, limit: 10)
            #expect(history.map(\.id) == [second.row.id, first.id])
            #expect(try await fixture.allIDs().count == 2, "the refused ID left no row")
            // Another user's write through the lagging server needs no second try.
            _ = try await behindServer.record(user: "dave", idempotencyKey: "k1", event: Self.event)
            #expect(lagging.askedAbove.count == 3)
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
