import Crypto
import Foundation
import Hummingbird
import HummingbirdTesting
import NIOCore
import StampAPI
import StampAudit
import StampAuditServer
import StampAuditService
import StampCore
import StampShardMap
import StampTesting
import Testing

/// Erasure by key destruction, audited reads and exports, end to end in process, on SQLite and on PostgreSQL.
@Suite("Audit personal data")
struct PersonalDataTests {
    typealias API = AuditAPITests
    static let admin: HTTPFields = [.authorization: "Bearer \(AuditFixture.adminToken)"]

    static func page(_ client: some TestClientProtocol, user: String, headers: HTTPFields = API.reader) async throws -> [AuditEvent] {
        try await client.execute(uri: "/v1/users/\(user)/events?limit=500", method: .get, headers: headers) { response in
            #expect(response.status == .ok, "\(String(buffer: response.body))")
            return try JSONDecoder().decode(AuditEventPage.self, from: Data(buffer: response.body)).events
        }
    }

    static func erase(_ client: some TestClientProtocol, user: String) async throws -> AuditEvent {
        try await client.execute(uri: "/v1/users/\(user)/personal-data", method: .delete, headers: admin) { response in
            #expect(response.status == .ok, "\(String(buffer: response.body))")
            return try JSONDecoder().decode(AuditEvent.self, from: Data(buffer: response.body))
        }
    }

    /// Every row of every shard, as stored, by ID.
    static func storedRows(_ fixture: AuditFixture) async throws -> [StampID: AuditRow] {
        var rows: [StampID: AuditRow] = [:]
        for id in try await fixture.allIDs() {
            let shard = id.fields(in: .default).shard
            rows[id] = try await #require(fixture.shards.shard(shard)).store.row(id: id)
        }
        return rows
    }

    @Test(arguments: AuditStoreBackend.testable)
    func anErasureDestroysTheKeysAndKeepsEveryRow(backend: AuditStoreBackend) async throws {
        try await withAuditFixture(backend) { fixture in
            try await fixture.application().test(.router) { client in
                for n in 1...3 {
                    try await API.write(client, user: "alice", key: "a\(n)", body: API.body(before: "old\(n)@example.com", after: "new\(n)@example.com"))
                }
                try await API.write(client, user: "bob", key: "b1")
                #expect(try await Self.page(client, user: "alice").map(\.values) == (1...3).reversed().map { AuditEvent.Values(before: "old\($0)@example.com", after: "new\($0)@example.com") })
                let before = try await Self.storedRows(fixture)

                // Only the admin token erases.
                for headers in [API.writer, API.reader] {
                    try await client.execute(uri: "/v1/users/alice/personal-data", method: .delete, headers: headers) { try API.expectProblem($0, .forbidden, "forbidden") }
                }
                try await client.execute(uri: "/v1/users/alice/personal-data", method: .delete) { try API.expectProblem($0, .unauthorized, "unauthorized") }
                let erasure = try await Self.erase(client, user: "alice")
                #expect(erasure.userId == "alice" && erasure.field == "personal-data" && erasure.values == nil)
                #expect(erasure.actor.hasPrefix("admin sha256:"))

                let history = try await Self.page(client, user: "alice")
                #expect(history.count == 4)
                #expect(history.first?.id == erasure.id, "the erasure is the user's newest event")
                #expect(history.first?.values == AuditEvent.Values(before: nil, after: nil) && history.first?.erased == false)
                for event in history.dropFirst() {
                    #expect(event.erased && event.values == nil, "the values are gone")
                    #expect(event.field == "email" && event.actor == "support:42" && event.reason == "ticket 7", "everything else stays")
                }
                // The document says so in place of the values.
                let text = try await client.execute(uri: "/v1/events/\(history[1].id)", method: .get, headers: API.reader) { String(buffer: $0.body) }
                #expect(text.contains(#""erased":true"#) && !text.contains("before") && !text.contains("after"))
                #expect(try await Self.page(client, user: "bob").first?.values == AuditEvent.Values(before: "old@example.com", after: "new@example.com"), "other users keep theirs")

                // No row changed or went away; one row was added, the erasure's.
                let after = try await Self.storedRows(fixture)
                #expect(after.count == before.count + 1)
                for (id, row) in before {
                    #expect(after[id] == row, "row \(id) is as it was")
                }

                // Erasing again is fine, and a later write is readable under a new key.
                let again = try await Self.erase(client, user: "alice")
                #expect(again.id > erasure.id)
                try await API.write(client, user: "alice", key: "a4", body: API.body(before: nil, after: "later@example.com"))
                let latest = try await Self.page(client, user: "alice")
                #expect(latest.first?.values == AuditEvent.Values(before: nil, after: "later@example.com"))
                #expect(latest.filter(\.erased).count == 3)
                let keys = try await #require(fixture.shards.shard(fixture.map.placement(ofUser: "alice").write)).store.userKeys(user: "alice")
                #expect(keys.map(\.generation) == [0, 1, 2] && keys.map { $0.wrapped != nil } == [false, false, true])
            }
        }
    }

    /// A user whose slots moved has rows, and a data key, in the former shard as well as the new
    /// one: the erasure destroys both, and the export reads both.
    @Test(arguments: AuditStoreBackend.testable)
    func aUserWhoseSlotsMovedIsErasedAndExportedInEveryShard(backend: AuditStoreBackend) async throws {
        try await withAuditFixture(backend, shardCount: 1) { fixture in
            try await fixture.application().test(.router) { client in
                try await API.write(client, user: "erin", key: "e1", body: API.body(before: nil, after: "one"))
                var map = fixture.map
                map.version = 2
                map.shards.append(ShardMap.Shard(id: 1, database: try await fixture.makeDatabase(1)))
                map.assignments = [ShardMap.Assignment(slots: 0...(map.slotCount - 1), shard: 1, previous: [0])]
                try map.write(to: fixture.mapPath)
                #expect(await fixture.service.shardMap.refreshIfChanged().version == 2)
                try await API.write(client, user: "erin", key: "e2", body: API.body(before: "one", after: "two"))
                let events = try await Self.page(client, user: "erin")
                #expect(Set(events.map(\.shard)) == [0, 1], "the history spans both shards")
                for shard in [0, 1] {
                    let keys = try await #require(fixture.shards.shard(shard)).store.userKeys(user: "erin")
                    #expect(keys.map(\.generation) == [1], "shard \(shard) holds the user's key")
                }

                let lines = try await client.execute(uri: "/v1/users/erin/export", method: .get, headers: API.reader) { response in
                    #expect(response.status == .ok)
                    #expect(response.headers[.contentType] == "application/x-ndjson")
                    return String(buffer: response.body).split(separator: "\n", omittingEmptySubsequences: false)
                }
                #expect(lines.last == "", "every line ends with a line feed")
                let exported = try lines.dropLast().map { try JSONDecoder().decode(AuditEvent.self, from: Data($0.utf8)) }
                #expect(exported == events.reversed(), "oldest first, values opened")
                #expect(exported.map(\.values?.after) == ["one", "two"])
                for headers in [API.writer, Self.admin] {
                    try await client.execute(uri: "/v1/users/erin/export", method: .get, headers: headers) { try API.expectProblem($0, .forbidden, "forbidden") }
                }

                _ = try await Self.erase(client, user: "erin")
                for shard in [0, 1] {
                    let keys = try await #require(fixture.shards.shard(shard)).store.userKeys(user: "erin")
                    #expect(keys.allSatisfy { $0.wrapped == nil } && keys.map(\.generation) == [0, 1], "shard \(shard): destroyed")
                }
                let erased = try await client.execute(uri: "/v1/users/erin/export", method: .get, headers: API.reader) { response in
                    try String(buffer: response.body).split(separator: "\n").map { try JSONDecoder().decode(AuditEvent.self, from: Data($0.utf8)) }
                }
                #expect(erased.map(\.erased) == [true, true, false], "both shards' values are erased; the erasure event has none")
            }
        }
    }

    /// Rows stored before per-user keys, sealed with the master key itself, still open; after an
    /// erasure their user's read as erased too.
    @Test(arguments: AuditStoreBackend.testable)
    func rowsOfTheFirstFormatStayReadable(backend: AuditStoreBackend) async throws {
        try await withAuditFixture(backend) { fixture in
            let sealer = try ValueSealer(base64Key: AuditFixture.dataKey)
            let shard = fixture.map.placement(ofUser: "olga").write
            let id = try IDGenerator(node: 9).next(shard: shard, count: 1, after: nil)[0]
            let event = AuditEventInput(field: "email", before: "first@example.com", after: nil, actor: "import")
            let row = AuditRow(
                id: id, user: "olga", field: "email", actor: "import", reason: "", before: sealer.seal("first@example.com", id: id, slot: .before), after: nil,
                idempotencyKey: "legacy", requestDigest: sealer.digest(of: event, user: "olga")
            )
            #expect(try await #require(fixture.shards.shard(shard)).store.insert([row], mapVersion: fixture.map.version) == [.stored])
            try await fixture.application().test(.router) { client in
                try await API.write(client, user: "olga", key: "new", body: API.body(before: "first@example.com", after: "second@example.com"))
                #expect(try await Self.page(client, user: "olga").map(\.values) == [
                    AuditEvent.Values(before: "first@example.com", after: "second@example.com"), AuditEvent.Values(before: "first@example.com", after: nil),
                ])
                _ = try await Self.erase(client, user: "olga")
                #expect(try await Self.page(client, user: "olga").map(\.erased) == [false, true, true])
            }
        }
    }

    /// A master key rotation re-wraps the data keys without touching a row: a server with only the
    /// new key reads every value, rows of the first format included.
    @Test(arguments: AuditStoreBackend.testable)
    func aRotationRewrapsKeysAndLeavesRowsAlone(backend: AuditStoreBackend) async throws {
        try await withAuditFixture(backend) { fixture in
            let old = try ValueSealer(base64Key: AuditFixture.dataKey)
            let newKey = ValueSealer.generateKey()
            let new = try ValueSealer(base64Key: newKey)
            let legacyShard = fixture.map.placement(ofUser: "olga").write
            let legacyID = try IDGenerator(node: 9).next(shard: legacyShard, count: 1, after: nil)[0]
            let legacy = AuditRow(
                id: legacyID, user: "olga", field: "email", actor: "import", reason: "", before: nil, after: old.seal("kept@example.com", id: legacyID, slot: .after),
                idempotencyKey: "legacy", requestDigest: [0]
            )
            _ = try await #require(fixture.shards.shard(legacyShard)).store.insert([legacy], mapVersion: fixture.map.version)
            for user in ["alice", "bob", "carol"] {
                _ = try await fixture.service.record(user: user, idempotencyKey: "k", event: AuditEventInput(field: "email", before: nil, after: "\(user)@example.com", actor: "support"))
            }
            let rows = try await Self.storedRows(fixture)

            var reports: [MasterKeyRotation.ShardReport] = []
            for shard in fixture.map.shards {
                reports.append(try await MasterKeyRotation.rotate(try #require(fixture.shards.shard(shard.id)).store, shard: shard.id, from: old, to: new))
            }
            #expect(reports.map(\.rewrapped).reduce(0, +) == 3, "each user's key")
            #expect(reports.map(\.keys).reduce(0, +) == 3 + fixture.map.shards.count, "and each shard's kept master key, wrapped by the new one as it was stored")
            let again = try await MasterKeyRotation.rotate(try #require(fixture.shards.shard(legacyShard)).store, shard: legacyShard, from: old, to: new)
            #expect(again.rewrapped == 0, "a second run finds every key re-wrapped")
            #expect(try await Self.storedRows(fixture) == rows, "no row changed")

            var configuration = fixture.configuration
            configuration.sealer = new
            let rotated = try AuditService(configuration: configuration, ids: try LocalIDSource(node: 1), clock: ManualClock(), logger: fixture.records.logger())
            try await withThrowingTaskGroup { group in
                group.addTask { try await rotated.shards.run() }
                defer { group.cancelAll() }
                try await rotated.shards.prepare(fixture.map)
                let access = AccessContext(reader: "test", request: "test")
                for user in ["alice", "bob", "carol"] {
                    let history = try await rotated.history(user: user, field: nil, before: nil, limit: 5)
                    #expect(try await rotated.values(of: history, user: user, for: access) == [.opened(before: nil, after: "\(user)@example.com")])
                }
                let olga = try await rotated.history(user: "olga", field: nil, before: nil, limit: 5)
                #expect(try await rotated.values(of: olga, user: "olga", for: access) == [.opened(before: nil, after: "kept@example.com")])
            }
        }
    }

    @Test(arguments: AuditStoreBackend.testable)
    func everyReadThatShowsValuesIsInTheAccessLog(backend: AuditStoreBackend) async throws {
        try await withAuditFixture(backend) { fixture in
            try await fixture.application().test(.router) { client in
                let first = try #require(try await API.write(client, user: "alice", key: "a1"))
                let second = try #require(try await API.write(client, user: "alice", key: "a2", body: API.body(field: "phone", before: nil, after: "555")))
                // Reads without values are not logged.
                _ = try await Self.page(client, user: "alice", headers: API.writer)
                _ = try await Self.page(client, user: "alice", headers: Self.admin)
                let startedAt = SystemWallClock().unixMilliseconds()
                _ = try await Self.page(client, user: "alice")
                try await client.execute(uri: "/v1/users/alice/events/latest?field=email", method: .get, headers: API.reader) { #expect($0.status == .ok) }
                try await client.execute(uri: "/v1/events/\(second.id)", method: .get, headers: API.reader) { #expect($0.status == .ok) }
                try await client.execute(uri: "/v1/users/alice/export", method: .get, headers: API.reader) { #expect($0.status == .ok) }
                _ = try await Self.page(client, user: "nobody")

                for headers in [API.writer, API.reader] {
                    try await client.execute(uri: "/v1/users/alice/access-log", method: .get, headers: headers) { try API.expectProblem($0, .forbidden, "forbidden") }
                }
                let log = try await client.execute(uri: "/v1/users/alice/access-log", method: .get, headers: Self.admin) { response in
                    #expect(response.status == .ok, "\(String(buffer: response.body))")
                    return try JSONDecoder().decode(AuditAccessLog.self, from: Data(buffer: response.body))
                }
                let ids = (first: try StampID(decimal: first.id), second: try StampID(decimal: second.id))
                #expect(log.entries.map(\.request) == [
                    "GET /v1/users/alice/export", "GET /v1/events/\(second.id)", "GET /v1/users/alice/events/latest?field=email", "GET /v1/users/alice/events?limit=500",
                ], "newest first, one per request that showed values")
                #expect(log.entries.map(\.events) == [[ids.first, ids.second], [ids.second], [ids.first], [ids.second, ids.first]])
                let readerIdentity = "reader sha256:" + SHA256.hash(data: Array(AuditFixture.readerToken.utf8)).prefix(6).map { String(format: "%02x", $0) }.joined()
                #expect(log.entries.allSatisfy { $0.reader == readerIdentity && $0.userId == "alice" })
                let times = try log.entries.map { try #require(RFC3339.parse($0.recordedAt)) }
                #expect(times.allSatisfy { $0 >= startedAt - 1 && $0 <= SystemWallClock().unixMilliseconds() })
                let newest = try await client.execute(uri: "/v1/users/alice/access-log?limit=1", method: .get, headers: Self.admin) { response in
                    try JSONDecoder().decode(AuditAccessLog.self, from: Data(buffer: response.body))
                }
                #expect(newest.entries.map(\.request) == ["GET /v1/users/alice/export"])
                try await client.execute(uri: "/v1/users/alice/access-log?limit=0", method: .get, headers: Self.admin) { try API.expectProblem($0, .badRequest, "invalid-parameter") }
                let nobody = try await client.execute(uri: "/v1/users/nobody/access-log", method: .get, headers: Self.admin) { response in
                    try JSONDecoder().decode(AuditAccessLog.self, from: Data(buffer: response.body))
                }
                #expect(nobody.entries.isEmpty, "a read that showed nothing is not logged")
            }
        }
    }
}
