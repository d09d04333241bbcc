import Foundation
import Hummingbird
import HummingbirdTesting
import Logging
import PostgresNIO
import StampAudit
import StampAuditServer
import StampAuditService
import StampAuditStore
import StampCore
import StampDatabase
import StampDatabaseTesting
import StampShardMap
import StampTesting
import Synchronization
import Testing

/// The audit service's invariants where servers disagree, inputs are hostile and shards misbehave:
/// no write under a stale shard map, no request failing another, nobody held by a hung shard.
@Suite("Audit hardening")
struct AuditHardeningTests {
    typealias API = AuditAPITests

    static let event = AuditEventInput(field: "email", before: "a@old.example", after: "a@new.example", actor: "support:42")

    /// Two servers on the same databases, one still on version 1 of the map (its own map file),
    /// the other on version 2, which moves every slot to a new shard. A write stored through the
    /// new one and retried through the old one is one row; a write through the old one, whose
    /// generator runs 500 ms behind, sorts above it.
    @Test(arguments: AuditStoreBackend.testable)
    func aServerOnAnOlderShardMapCannotWriteUnderIt(backend: AuditStoreBackend) async throws {
        try await withAuditFixture(backend, shardCount: 1) { fixture in
            let (newer, newerConfiguration) = try await Self.mapMovingEverySlot(fixture)
            let logger = fixture.records.logger()
            let newServer = try AuditService(configuration: newerConfiguration, ids: try LocalIDSource(node: 1), clock: ManualClock(), logger: logger)
            let laggingOldServer = try AuditService(configuration: fixture.configuration, ids: try LocalIDSource(node: 2, behind: .milliseconds(500), onTimeNode: 3), clock: ManualClock(), logger: logger)
            try await withThrowingTaskGroup { group in
                for server in [newServer, laggingOldServer] {
                    group.addTask { try await server.shards.run() }
                }
                defer { group.cancelAll() }
                // The lagging server runs version 1 before the other applies version 2.
                try await laggingOldServer.shards.prepare(fixture.map)
                try await newServer.shards.prepare(newer)
                #expect(laggingOldServer.shardMap.current.version == 1)

                let first = try await newServer.record(user: "erin", idempotencyKey: "k1", event: Self.event)
                #expect(first.row.id.fields(in: .default).shard == 1)
                #expect(fixture.service.shardMap.current.version == 1, "the old server still runs version 1")
                let retried = try await fixture.service.record(user: "erin", idempotencyKey: "k1", event: Self.event)
                #expect(retried.replayed, "the retry through the old server found the first write")
                #expect(retried.row.id == first.row.id)
                #expect(fixture.service.shardMap.current.version == 2, "the old server moved to the version its shard holds")

                let later = try await laggingOldServer.record(user: "erin", idempotencyKey: "k2", event: Self.event)
                #expect(later.row.id > first.row.id, "the later write sorts above the first")
                #expect(laggingOldServer.shardMap.current.version == 2)
                let history = try await newServer.history(user: "erin", field: nil, before: nil, limit: 10)
                #expect(history.map(\.id) == [later.row.id, first.row.id])
                #expect(try await #require(fixture.shards.shard(0)).store.ids(after: nil, limit: 10).isEmpty, "nothing went to the old shard")
            }
        }
    }

    /// After a map change moves a user to a new shard, their latest value of a field they changed
    /// since is the new shard's, and of a field they have not changed since, the old shard's.
    @Test(arguments: AuditStoreBackend.testable)
    func theLatestOfEachFieldSpansAMove(backend: AuditStoreBackend) async throws {
        try await withAuditFixture(backend, shardCount: 1) { fixture in
            let oldEmail = try await fixture.service.record(user: "erin", idempotencyKey: "k1", event: Self.event)
            let name = try await fixture.service.record(user: "erin", idempotencyKey: "k2", event: AuditEventInput(field: "name", before: nil, after: "Erin", actor: "support:42"))
            let (newer, newerConfiguration) = try await Self.mapMovingEverySlot(fixture)
            let newServer = try AuditService(configuration: newerConfiguration, ids: try LocalIDSource(node: 1), clock: ManualClock(), logger: fixture.records.logger())
            try await withThrowingTaskGroup { group in
                group.addTask { try await newServer.shards.run() }
                defer { group.cancelAll() }
                try await newServer.shards.prepare(newer)
                let newEmail = try await newServer.record(user: "erin", idempotencyKey: "k3", event: Self.event)
                #expect(newEmail.row.id.fields(in: .default).shard == 1)
                #expect(newServer.shardMap.current.placement(ofUser: "erin").read == [1, 0])

                let latest = try await newServer.latestOfEachField(user: "erin")
                #expect(latest.map(\.id) == [newEmail.row.id, name.row.id], "email from the new shard, name from the old one")
                #expect(!latest.contains { $0.id == oldEmail.row.id })
            }
        }
    }

    /// Version 2 of the fixture's map, which moves every slot to a new shard 1 (shard 0 their
    /// previous one), written to a file of its own, and the configuration of a server reading it.
    static func mapMovingEverySlot(_ fixture: AuditFixture) async throws -> (ShardMap, AuditServiceConfiguration) {
        var newer = fixture.map
        newer.version = 2
        newer.shards.append(ShardMap.Shard(id: 1, database: try await fixture.makeDatabase(1)))
        newer.assignments = [ShardMap.Assignment(slots: 0...(newer.slotCount - 1), shard: 1, previous: [0])]
        var configuration = fixture.configuration
        configuration.shardMapPath = fixture.folder.appendingPathComponent("shard-map-v2.json").path
        try newer.write(to: configuration.shardMapPath)
        return (newer, configuration)
    }

    /// A map that moves an open shard to another database is refused, loudly: the shard's rows
    /// and IDs belong to the database they were written in.
    @Test func aMapThatMovesAShardToAnotherDatabaseIsRefused() async throws {
        try await withAuditFixture(.sqlite) { fixture in
            var moved = fixture.map
            moved.version = 2
            moved.shards[0].database = .sqlite(path: "elsewhere.sqlite")
            try moved.write(to: fixture.mapPath)
            #expect(await fixture.service.shardMap.refreshIfChanged().version == 1)
            #expect(try fixture.metrics.expectCounter("stamp_audit_shard_map_refusals_total").totalValue == 1)
            #expect(fixture.records.entries.contains { $0.contains("shard map not applied") && $0.contains("moves shard 0 to another database") })
            #expect(!FileManager.default.fileExists(atPath: fixture.folder.appendingPathComponent("elsewhere.sqlite").path))
        }
    }

    /// Twenty writes at once, one with a NUL in its actor: that one is refused as bad input, the
    /// nineteen others are stored (on PostgreSQL a NUL in text would fail their whole group).
    @Test(arguments: AuditStoreBackend.testable, HTTPPath.allCases)
    func aNulByteFailsOnlyItsOwnWrite(backend: AuditStoreBackend, path: HTTPPath) async throws {
        try await withAuditFixture(backend, shardCount: 1) { fixture in
            try await fixture.application().test(path.setup) { client in
                let requests = ConcurrentRequests(client: client, path: path)
                let answers = try await withThrowingTaskGroup(of: (Int, ConcurrentRequests.Answer).self) { group in
                    for write in 0..<20 {
                        group.addTask {
                            let actor = write == 7 ? "a\\u0000b" : "support:\(write)"
                            let body = ByteBuffer(string: #"{"field": "email", "before": null, "after": "x\#(write)@example.com", "actor": "\#(actor)"}"#)
                            return (write, try await requests.post("/v1/users/user-\(write)/events", headers: API.writeHeaders(key: "k\(write)"), body: body))
                        }
                    }
                    return try await group.reduce(into: [:]) { $0[$1.0] = $1.1 }
                }
                try await requests.shutdown()
                #expect(answers.filter { $0.value.status == .created }.count == 19)
                let refused = try #require(answers[7])
                #expect(refused.status == .badRequest)
                #expect(refused.headers[.contentType] == "application/problem+json")
                #expect(String(buffer: refused.body).contains("urn:stamp:problem:invalid-event"))
            }
            #expect(try await fixture.allIDs().count == 19)
        }
    }

    /// Text members refuse every control character but tab, line feed and carriage return.
    @Test func controlCharactersAreRefusedWhereTextIsDocumented() throws {
        var event = Self.event
        event.actor = "line\none\ttab\r"
        try AuditLimits.validate(event)
        for (member, text) in [("actor", "a\u{0}b"), ("reason", "bell\u{7}"), ("before", "esc\u{1b}"), ("after", "del\u{7f}")] {
            var bad = Self.event
            switch member {
            case "actor": bad.actor = text
            case "reason": bad.reason = text
            case "before": bad.before = text
            default: bad.after = text
            }
            let error = #expect(throws: AuditInputError.self) { try AuditLimits.validate(bad) }
            #expect(error?.code == .invalidEvent)
            #expect(error?.message.hasPrefix(member) == true, "\(error?.message ?? "")")
            #expect(error?.message.contains(text) == false)
        }
    }

    /// A row the database refuses (here a trigger of the test) fails alone: the others written at
    /// the same time, in the same group commit, are stored.
    @Test(arguments: AuditStoreBackend.testable)
    func aRowTheDatabaseRefusesFailsAlone(backend: AuditStoreBackend) async throws {
        try await withAuditFixture(backend, shardCount: 1) { fixture in
            try await fixture.execute(onShard: 0, AuditStoreDatabase.statementsRefusingRows(ofActor: "poison", sqlite: backend == .sqlite))
            let service = fixture.service
            let outcomes = await withTaskGroup(of: (Int, AuditServiceError?).self) { group in
                for write in 0..<20 {
                    group.addTask {
                        var event = Self.event
                        event.actor = write == 11 ? "poison" : "support:\(write)"
                        do {
                            _ = try await service.record(user: "user-\(write)", idempotencyKey: "k\(write)", event: event)
                            return (write, nil)
                        } catch let error as AuditServiceError {
                            return (write, error)
                        } catch {
                            Issue.record("\(error)")
                            return (write, nil)
                        }
                    }
                }
                return await group.reduce(into: []) { $0.append($1) }
            }
            #expect(outcomes.count == 20)
            #expect(outcomes.filter { $0.1 == nil }.map(\.0).sorted() == (0..<20).filter { $0 != 11 }, "\(outcomes.compactMap { $0.1.map { "\($0) \(String(describing: $0.cause))" } }.prefix(3))")
            #expect(outcomes.first { $0.0 == 11 }?.1?.code == .databaseRefused)
            #expect(try await fixture.allIDs().count == 19)
        }
    }

    /// Readiness answers within its bound when a shard's database hangs, naming the shard.
    @Test func readinessAnswersWhenAShardHangs() async throws {
        try await withAuditFixture(.sqlite) { fixture in
            let clock = ManualClock()
            let logger = fixture.records.logger()
            let shards = ShardSet(layout: .default, commitsPerShard: { _ in 1 }, logger: logger) { shard in
                HangingPingStore(SQLiteAuditStore(path: fixture.folder.appendingPathComponent("hung-\(shard.id).sqlite").path, logger: logger))
            }
            let source = try ShardMapSource(path: fixture.mapPath, layout: .default, clock: clock, logger: logger)
            let service = AuditService(layout: .default, shardMap: source, shards: shards, ids: try LocalIDSource(), sealer: try ValueSealer(base64Key: AuditFixture.dataKey), readinessTimeout: .seconds(1), logger: logger)
            try await withThrowingTaskGroup { group in
                group.addTask { try await shards.run() }
                defer { group.cancelAll() }
                try await shards.prepare(fixture.map)
                let answer = Task { await service.unreadiness() }
                await clock.waitForSleepers(count: fixture.map.shards.count)
                clock.advance(by: .seconds(1))
                #expect(await answer.value == "shard 0 does not answer within 1.0 seconds")
            }
        }
    }
}

/// A store whose pings never answer: a database that hangs.
final class HangingPingStore: ForwardingAuditStore {
    let base: any AuditStore

    init(_ base: any AuditStore) {
        self.base = base
    }

    /// Waits until cancelled, on a clock nobody moves.
    func ping() async throws(AuditStoreError) {
        try? await ManualClock().sleep(for: .seconds(1))
    }
}
