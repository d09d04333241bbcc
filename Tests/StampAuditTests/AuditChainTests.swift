import Foundation
import Hummingbird
import HummingbirdTesting
import StampAudit
import StampAuditServer
import StampAuditService
import StampAuditStore
import StampCore
import StampTesting
import Testing

/// The hash chain over each shard's rows, its checkpoints, and verification against mutations
/// made directly in the database as its owner (who can set the append-only triggers aside).
@Suite("Audit chain")
struct AuditChainTests {
    static let signer = try! CheckpointSigner(base64Key: CheckpointSigner.generateKey())

    /// Stores `count` + 1 rows of several users in calls of `perCall`, with rows refused on the
    /// way, in the call (a repeated key, a row below its user's newest) and by the database (a key
    /// stored by an earlier call), so the chain must skip what was not stored.
    static func fill(_ store: any AuditStore, count: Int64, perCall: Int64 = 7) async throws {
        var next: Int64 = 1
        while next <= count {
            let last = min(next + perCall - 1, count)
            var rows = (next...last).map { AuditRow.storeTestRow(id: $0 * 10, user: "user-\($0 % 5)") }
            rows.append(AuditRow.storeTestRow(id: next * 10 + 1, user: "user-\(next % 5)", key: "key-\(next * 10)"))
            rows.append(AuditRow.storeTestRow(id: 3, user: "user-\(last % 5)", key: "low-\(last)"))
            rows.insert(AuditRow.storeTestRow(id: last * 10 + 5, user: "repeat", key: "repeat-key"), at: 1)
            let outcomes = try await store.insert(rows)
            #expect(outcomes.filter { $0 == .stored }.count == Int(last - next + 1) + (next == 1 ? 1 : 0))
            next = last + 1
        }
    }

    static func verify(_ store: any AuditStore, extra: [AuditCheckpoint] = [], key: [UInt8]? = signer.publicKey) async throws -> ShardVerification {
        try await ShardVerification.run(store: store, shard: 0, extraCheckpoints: extra, publicKey: key, pageSize: 4)
    }

    /// Signs the shard's head now and keeps the checkpoint in it.
    static func checkpoint(_ store: any AuditStore) async throws -> AuditCheckpoint {
        let checkpoint = signer.checkpoint(shard: 0, head: try await store.chainHead(), signedAtMilliseconds: 1_000)
        try await store.recordCheckpoint(checkpoint)
        return checkpoint
    }

    @Test("stored rows form one chain in commit order, which verifies with its head and checkpoints", arguments: AuditStoreBackend.testable)
    func aCleanShardVerifies(backend: AuditStoreBackend) async throws {
        try await withAuditStores(backend, count: 2) { database in
            try await Self.fill(database.stores[0], count: 10)
            let early = try await Self.checkpoint(database.stores[0])
            // Another server on the same shard extends the same chain.
            _ = try await database.stores[1].insert([AuditRow.storeTestRow(id: 5, user: "other")])
            let head = try await database.store.chainHead()
            #expect(head.rows == 12)
            #expect(head.lastID?.rawValue == 5, "the chain runs in commit order, not ID order")
            let late = try await Self.checkpoint(database.stores[1])
            #expect(try await database.store.checkpoints(below: nil, limit: 10) == [late, early])
            #expect(try await database.store.checkpoints(below: late.rows, limit: 10) == [early])
            let verification = try await Self.verify(database.store)
            #expect(verification.problem == nil, "\(String(describing: verification.problem))")
            #expect(verification.rows == 12)
            #expect(verification.checkpoints == 2)
            // A checkpoint of the same row count is kept once.
            try await database.store.recordCheckpoint(Self.signer.checkpoint(shard: 0, head: head, signedAtMilliseconds: 2_000))
            #expect(try await database.store.checkpoints(below: nil, limit: 10).count == 2)
        }
    }

    /// The statements that set the append-only triggers aside, as the database's owner can.
    static func untrigger(_ backend: AuditStoreBackend) -> [String] {
        switch backend {
        case .sqlite: ["DROP TRIGGER stamp_audit_events_refuse_update", "DROP TRIGGER stamp_audit_events_refuse_delete", "DROP TRIGGER stamp_audit_checkpoints_refuse_delete"]
        case .postgres: ["ALTER TABLE stamp_audit_events DISABLE TRIGGER USER", "ALTER TABLE stamp_audit_checkpoints DISABLE TRIGGER USER"]
        }
    }

    /// A mutation made in the database, and where verification must say the chain breaks.
    struct Mutation: Sendable, CustomTestStringConvertible {
        let name: String
        let statements: [String]
        let kind: ChainVerifier.Problem.Kind
        let position: Int64
        /// Run first on PostgreSQL only.
        var postgresFirst: [String] = []
        var testDescription: String { name }
    }

    static let mutations = [
        Mutation(name: "an edited row", statements: ["UPDATE stamp_audit_events SET actor = 'someone else' WHERE chain_position = 4"], kind: .edited, position: 4),
        Mutation(name: "an edited sealed value", statements: ["UPDATE stamp_audit_events SET after_value = NULL WHERE chain_position = 9"], kind: .edited, position: 9),
        Mutation(name: "a removed row", statements: ["DELETE FROM stamp_audit_events WHERE chain_position = 4"], kind: .removed, position: 4),
        Mutation(name: "a removed row, later rows renumbered", statements: [
            "DELETE FROM stamp_audit_events WHERE chain_position = 4",
            "UPDATE stamp_audit_events SET chain_position = -chain_position + 1 WHERE chain_position > 4",
            "UPDATE stamp_audit_events SET chain_position = -chain_position WHERE chain_position < 0",
        ], kind: .outOfPlace, position: 4),
        Mutation(name: "two rows reordered", statements: [
            "UPDATE stamp_audit_events SET chain_position = -1 WHERE chain_position = 4",
            "UPDATE stamp_audit_events SET chain_position = 4 WHERE chain_position = 5",
            "UPDATE stamp_audit_events SET chain_position = 5 WHERE chain_position = -1",
        ], kind: .outOfPlace, position: 4),
        Mutation(name: "an inserted row", statements: [
            "UPDATE stamp_audit_events SET chain_position = -chain_position - 1 WHERE chain_position >= 4",
            "UPDATE stamp_audit_events SET chain_position = -chain_position WHERE chain_position < 0",
            "INSERT INTO stamp_audit_events SELECT 999, user_id, field, actor, reason, before_value, after_value, 'forged', request_digest, 4, chain_hash FROM stamp_audit_events WHERE chain_position = 3",
        ], kind: .outOfPlace, position: 4),
        Mutation(name: "a row written without a chain", statements: [
            "INSERT INTO stamp_audit_events (id, user_id, field, actor, reason, idempotency_key, request_digest) VALUES (998, 'u', 'email', 'a', 'r', 'k', ''::bytea)",
        ], kind: .unchained, position: 12, postgresFirst: ["ALTER TABLE stamp_audit_events ALTER COLUMN chain_position DROP NOT NULL, ALTER COLUMN chain_hash DROP NOT NULL"]),
    ]

    @Test("every mutation made as the database's owner is found, at the first row it touches", arguments: AuditStoreBackend.testable, mutations)
    func mutationsAreFound(backend: AuditStoreBackend, mutation: Mutation) async throws {
        try await withAuditStores(backend) { database in
            try await Self.fill(database.store, count: 10)
            _ = try await Self.checkpoint(database.store)
            #expect(try await Self.verify(database.store).problem == nil)
            var statements = Self.untrigger(backend) + (backend == .postgres ? mutation.postgresFirst : []) + mutation.statements
            if backend == .sqlite {
                // SQLite's trigger that needs a chain on every insert goes too, and it has no bytea cast.
                statements.insert("DROP TRIGGER stamp_audit_events_need_chain", at: 0)
                statements = statements.map { $0.replacingOccurrences(of: "''::bytea", with: "x''") }
            }
            for statement in statements {
                try await database.execute(statement)
            }
            let problem = try #require(try await Self.verify(database.store).problem)
            #expect(problem.kind == mutation.kind, "\(problem)")
            #expect(problem.position == mutation.position, "\(problem)")
        }
    }

    @Test("rows cut off the end are caught by the checkpoints, also when the head row and the shard's checkpoints are cut too", arguments: AuditStoreBackend.testable)
    func aTruncatedTailIsCaught(backend: AuditStoreBackend) async throws {
        try await withAuditStores(backend) { database in
            try await Self.fill(database.store, count: 10)
            let kept = try await Self.checkpoint(database.store)
            for statement in Self.untrigger(backend) + ["DELETE FROM stamp_audit_events WHERE chain_position > 8"] {
                try await database.execute(statement)
            }
            var problem = try #require(try await Self.verify(database.store).problem)
            #expect(problem.kind == .truncated)
            // The head row moved back to the cut end: the shard's checkpoint still says 10 rows.
            let cut = try #require(try await database.store.chainedRows(after: 7, limit: 1).first)
            try await database.execute("UPDATE stamp_audit_chain SET rows = 8, head = \(Self.literal(cut.hash, backend)), last_id = \(cut.row.id.rawValue)")
            problem = try #require(try await Self.verify(database.store).problem)
            #expect(problem.kind == .truncated)
            #expect(problem.position == 11)
            // Its checkpoints removed as well: a checkpoint kept elsewhere still knows.
            try await database.execute("DELETE FROM stamp_audit_checkpoints")
            #expect(try await Self.verify(database.store).problem == nil, "without a checkpoint a cut tail cannot show")
            problem = try #require(try await Self.verify(database.store, extra: [kept]).problem)
            #expect(problem.kind == .truncated)
        }
    }

    @Test("a checkpoint not signed by the trusted key, or altered, fails", arguments: AuditStoreBackend.testable)
    func forgedCheckpointsFail(backend: AuditStoreBackend) async throws {
        try await withAuditStores(backend) { database in
            try await Self.fill(database.store, count: 3)
            let stranger = try CheckpointSigner(base64Key: CheckpointSigner.generateKey())
            try await database.store.recordCheckpoint(stranger.checkpoint(shard: 0, head: try await database.store.chainHead(), signedAtMilliseconds: 5))
            #expect(try await Self.verify(database.store).problem?.kind == .badSignature)
            #expect(try await Self.verify(database.store, key: nil).problem == nil, "without a trusted key it checks against the key it names")
            var altered = try await Self.checkpoint(database.store)
            altered.rows = 2
            #expect(try await Self.verify(database.store, extra: [altered], key: nil).problem?.kind == .badSignature)
        }
    }

    @Test("rows stored before the chain existed are chained by the migration that adds it", arguments: AuditStoreBackend.testable)
    func aMigratedShardIsChained(backend: AuditStoreBackend) async throws {
        try await withAuditStores(backend) { database in
            try await Self.fill(database.store, count: 6)
            // As the shard looked before: rows without chain, the chain's migration not applied.
            let statements: [String] = switch backend {
            case .sqlite: [
                "DROP TRIGGER stamp_audit_events_need_chain", "DROP TRIGGER stamp_audit_checkpoints_refuse_update", "DROP TRIGGER stamp_audit_checkpoints_refuse_delete",
                "DROP INDEX stamp_audit_events_chain_position", "DROP TRIGGER stamp_audit_events_refuse_update",
                "ALTER TABLE stamp_audit_events DROP COLUMN chain_position", "ALTER TABLE stamp_audit_events DROP COLUMN chain_hash",
                "CREATE TRIGGER stamp_audit_events_refuse_update BEFORE UPDATE ON stamp_audit_events BEGIN SELECT RAISE(ABORT, 'stamp_audit_events is append-only'); END",
                "DROP TABLE stamp_audit_chain", "DROP TABLE stamp_audit_checkpoints", "DELETE FROM stamp_audit_migrations WHERE name = '0004-chain-rows'",
            ]
            case .postgres: [
                "ALTER TABLE stamp_audit_events DROP COLUMN chain_position, DROP COLUMN chain_hash", "DROP TABLE stamp_audit_chain", "DROP TABLE stamp_audit_checkpoints",
                "DELETE FROM stamp_audit_migrations WHERE name = '0005-chain-rows'",
            ]
            }
            for statement in statements { try await database.execute(statement) }
            try await database.store.migrate()
            #expect(try await database.store.chainHead().rows == 7)
            _ = try await database.store.insert([AuditRow.storeTestRow(id: 1_000, user: "late")])
            let verification = try await Self.verify(database.store)
            #expect(verification.problem == nil, "\(String(describing: verification.problem))")
            #expect(verification.rows == 8)
        }
    }

    @Test("a clean shard of 100,000 rows verifies", arguments: AuditStoreBackend.testable)
    func aLargeShardVerifies(backend: AuditStoreBackend) async throws {
        try await withAuditStores(backend) { database in
            let count: Int64 = 100_000
            for start in stride(from: Int64(1), through: count, by: 1000) {
                let rows = (start..<start + 1000).map { AuditRow.storeTestRow(id: $0, user: "user-\($0 % 1000)") }
                _ = try await database.store.insert(rows)
            }
            _ = try await Self.checkpoint(database.store)
            let verification = try await ShardVerification.run(store: database.store, shard: 0, publicKey: Self.signer.publicKey)
            #expect(verification.problem == nil)
            #expect(verification.rows == count)
            let seconds = Double(verification.duration.components.seconds) + Double(verification.duration.components.attoseconds) / 1e18
            print("verified \(count) rows of a \(backend.testDescription) shard in \(String(format: "%.2f", seconds)) s: \(Int(Double(count) / seconds)) rows/s (debug build)")
        }
    }

    /// A hash as an SQL literal.
    static func literal(_ bytes: [UInt8], _ backend: AuditStoreBackend) -> String {
        switch backend {
        case .sqlite: "x'\(AuditCheckpoint.hex(bytes))'"
        case .postgres: "'\\x\(AuditCheckpoint.hex(bytes))'::bytea"
        }
    }
}

/// The chain's hash function and the verifier, without a database.
@Suite("Audit chain hashing")
struct AuditChainHashingTests {
    @Test("a row's hash covers each part of its content, its position and the hash before it")
    func everyPartCounts() {
        let row = AuditRow.storeTestRow(id: 7)
        let hash = AuditChain.hash(of: row, position: 1, previous: AuditChain.genesis)
        var changes: [AuditRow] = []
        for change in [
            { (r: inout AuditRow) in r.id = StampID(rawValue: 8)! }, { $0.user = "user-2" }, { $0.field = "phone" }, { $0.actor = "x" },
            { $0.reason = "y" }, { $0.before = nil }, { $0.after = [] }, { $0.idempotencyKey = "k" }, { $0.requestDigest = [] },
            // Moving bytes from one part to the next is a change too (parts are length-prefixed).
            { $0.user = "user-1e"; $0.field = "mail" },
        ] as [(inout AuditRow) -> Void] {
            var changed = row
            change(&changed)
            changes.append(changed)
        }
        for changed in changes {
            #expect(AuditChain.hash(of: changed, position: 1, previous: AuditChain.genesis) != hash)
        }
        #expect(AuditChain.hash(of: row, position: 2, previous: AuditChain.genesis) != hash)
        #expect(AuditChain.hash(of: row, position: 1, previous: hash) != hash)
        #expect(AuditChain.hash(of: row, position: 1, previous: AuditChain.genesis) == hash, "the hash is a function of its inputs")
    }

    @Test("a checkpoint's JSON form reads back, and its signature covers every field it states")
    func checkpointRoundTrip() throws {
        let signer = try CheckpointSigner(base64Key: CheckpointSigner.generateKey())
        let checkpoint = signer.checkpoint(shard: 2, head: ChainHead(rows: 9, hash: Array(repeating: 7, count: 32), lastID: StampID(rawValue: 12)), signedAtMilliseconds: 1_700_000_000_000)
        #expect(checkpoint.isSigned(by: signer.publicKey))
        let decoded = try JSONDecoder().decode(AuditCheckpoint.self, from: JSONEncoder().encode(checkpoint))
        #expect(decoded == checkpoint)
        for change in [
            { (c: inout AuditCheckpoint) in c.shard = 3 }, { $0.rows = 10 }, { $0.lastID = nil }, { $0.head[0] = 0 }, { $0.signedAtMilliseconds += 1 },
        ] as [(inout AuditCheckpoint) -> Void] {
            var changed = checkpoint
            change(&changed)
            #expect(!changed.isSigned(by: signer.publicKey))
        }
    }
}

/// Checkpoints as an audit server signs and serves them.
@Suite("Audit checkpoints")
struct AuditCheckpointServiceTests {
    static let event = AuditEventInput(field: "email", before: "a@old.example", after: "a@new.example", actor: "support:42")

    @Test("the service signs a checkpoint once enough rows were chained, or once the interval passed with rows chained", arguments: AuditStoreBackend.testable)
    func checkpointsFollowThePolicy(backend: AuditStoreBackend) async throws {
        let policy = CheckpointPolicy(signer: AuditChainTests.signer, everyRows: 3, interval: .seconds(10))
        try await withAuditFixture(backend, shardCount: 1, checkpoints: policy) { fixture in
            let clock = ManualClock()
            let store = try #require(fixture.shards.shard(0)).store
            try await withThrowingTaskGroup { group in
                group.addTask { try await CheckpointService(service: fixture.service, clock: clock).run() }
                defer { group.cancelAll() }
                /// Moves the clock one look (1 s) on and waits for the look to be done.
                func look() async {
                    await clock.waitForSleepers()
                    clock.advance(by: .seconds(1))
                    await clock.waitForSleepers()
                }
                await look()
                #expect(try await store.checkpoints(below: nil, limit: 10).isEmpty, "no row, no checkpoint")
                for key in ["k1", "k2"] { _ = try await fixture.service.record(user: "ann", idempotencyKey: key, event: Self.event) }
                await look()
                #expect(try await store.checkpoints(below: nil, limit: 10).isEmpty, "2 rows of 3, 2 s of 10")
                _ = try await fixture.service.record(user: "ann", idempotencyKey: "k3", event: Self.event)
                await look()
                #expect(try await store.checkpoints(below: nil, limit: 10).map(\.rows) == [3])
                _ = try await fixture.service.record(user: "ann", idempotencyKey: "k4", event: Self.event)
                for _ in 0..<9 { await look() }
                #expect(try await store.checkpoints(below: nil, limit: 10).map(\.rows) == [3], "9 s after the last")
                await look()
                let checkpoints = try await store.checkpoints(below: nil, limit: 10)
                #expect(checkpoints.map(\.rows) == [4, 3])
                #expect(checkpoints.allSatisfy { $0.isSigned(by: AuditChainTests.signer.publicKey) })
                #expect(fixture.records.messages.contains("checkpoint signed"))
            }
        }
    }

    @Test("GET /v1/shards/{id}/checkpoint answers the newest checkpoint to either token", arguments: HTTPPath.allCases)
    func theNewestCheckpointIsServed(path: HTTPPath) async throws {
        try await withAuditFixture(.sqlite, shardCount: 2, checkpoints: CheckpointPolicy(signer: AuditChainTests.signer)) { fixture in
            try await fixture.application().test(path.setup) { client in
                try await client.execute(uri: "/v1/shards/0/checkpoint", method: .get, headers: AuditAPITests.reader) { response in
                    try AuditAPITests.expectProblem(response, .notFound, "not-found")
                }
                _ = try await fixture.service.record(user: "ann", idempotencyKey: "k1", event: Self.event)
                let shard = fixture.map.placement(ofUser: "ann").write
                let signed = try #require(try await fixture.service.checkpoint(shard: shard))
                #expect(signed.rows == 1)
                for token in [AuditAPITests.reader, [.authorization: "Bearer \(AuditFixture.writerToken)"]] {
                    try await client.execute(uri: "/v1/shards/\(shard)/checkpoint", method: .get, headers: token) { response in
                        #expect(response.status == .ok)
                        let served = try JSONDecoder().decode(AuditCheckpoint.self, from: Data(buffer: response.body))
                        #expect(served == signed)
                        #expect(served.isSigned(by: AuditChainTests.signer.publicKey))
                    }
                }
                try await client.execute(uri: "/v1/shards/0/checkpoint", method: .get) { response in
                    try AuditAPITests.expectProblem(response, .unauthorized, "unauthorized")
                }
                for unknown in ["7", "x"] {
                    try await client.execute(uri: "/v1/shards/\(unknown)/checkpoint", method: .get, headers: AuditAPITests.reader) { response in
                        try AuditAPITests.expectProblem(response, .notFound, "unknown-shard")
                    }
                }
            }
        }
    }

    @Test("verifying a shard map checks each of its shards and names the one that fails", arguments: AuditStoreBackend.testable)
    func aShardMapIsVerifiedShardByShard(backend: AuditStoreBackend) async throws {
        try await withAuditFixture(backend, shardCount: 2, checkpoints: CheckpointPolicy(signer: AuditChainTests.signer)) { fixture in
            for user in ["ann", "bob", "cem", "dee", "eve"] {
                _ = try await fixture.service.record(user: user, idempotencyKey: "k", event: Self.event)
            }
            for shard in [0, 1] { try await fixture.service.checkpoint(shard: shard) }
            let logger = AuditStoreBackend.logger
            var outcomes = try await ShardMapVerification.run(shardMapPath: fixture.mapPath, layout: fixture.service.layout, checkpoints: [], publicKey: AuditChainTests.signer.publicKey, logger: logger)
            #expect(outcomes.map(\.shard) == [0, 1])
            for outcome in outcomes {
                #expect(try outcome.result.get().problem == nil)
            }
            let edits: [String] = switch backend {
            case .sqlite: ["DROP TRIGGER stamp_audit_events_refuse_update", "UPDATE stamp_audit_events SET reason = 'edited' WHERE chain_position = 1"]
            case .postgres: ["ALTER TABLE stamp_audit_events DISABLE TRIGGER USER", "UPDATE stamp_audit_events SET reason = 'edited' WHERE chain_position = 1"]
            }
            try await fixture.execute(onShard: 1, edits)
            outcomes = try await ShardMapVerification.run(shardMapPath: fixture.mapPath, layout: fixture.service.layout, checkpoints: [], publicKey: AuditChainTests.signer.publicKey, logger: logger)
            #expect(try outcomes[0].result.get().problem == nil)
            #expect(try outcomes[1].result.get().problem?.kind == .edited)
        }
    }

    @Test("a user's export ends with a signed checkpoint covering their rows, which verify reads and which catches a cut tail", arguments: AuditStoreBackend.testable)
    func anExportCarriesTheCoveringCheckpoint(backend: AuditStoreBackend) async throws {
        try await withAuditFixture(backend, shardCount: 1, checkpoints: CheckpointPolicy(signer: AuditChainTests.signer)) { fixture in
            try await fixture.application().test(.router) { client in
                func export() async throws -> (events: Int, checkpoints: [AuditCheckpoint]) {
                    let text = try await client.execute(uri: "/v1/users/ann/export", method: .get, headers: AuditAPITests.reader) { response in
                        #expect(response.status == .ok)
                        return String(buffer: response.body)
                    }
                    let lines = text.split(separator: "\n")
                    #expect(lines.last?.hasPrefix(#"{"checkpoint":"#) == true, "the checkpoint comes after the events")
                    return (lines.count - 1, try AuditCheckpoint.checkpoints(inLines: text))
                }
                try await AuditAPITests.write(client, user: "ann", key: "a1")
                try await AuditAPITests.write(client, user: "bob", key: "b1")
                try await AuditAPITests.write(client, user: "ann", key: "a2")
                let early = try #require(try await fixture.service.checkpoint(shard: 0))
                try await AuditAPITests.write(client, user: "ann", key: "a3")

                let first = try await export()
                #expect(first.events == 3)
                let covering = try #require(first.checkpoints.first)
                #expect(first.checkpoints.count == 1)
                #expect(covering.rows == 4 && covering != early, "the newest checkpoint did not cover the last row: one was signed")
                #expect(covering.isSigned(by: AuditChainTests.signer.publicKey))
                #expect(try await fixture.service.latestCheckpoint(shard: 0) == covering, "and kept in the shard")
                #expect(try await export().checkpoints == [covering], "with no row added since, the kept one is reused")

                let store = try #require(fixture.shards.shard(0)).store
                #expect(try await ShardVerification.run(store: store, shard: 0, extraCheckpoints: first.checkpoints, publicKey: AuditChainTests.signer.publicKey).problem == nil)
                // Cut ann's last row off the end, with the head row and the shard's checkpoints: the export still knows.
                let cut = try #require(try await store.chainedRows(after: 2, limit: 1).first)
                try await fixture.execute(onShard: 0, AuditChainTests.untrigger(backend) + [
                    "DELETE FROM stamp_audit_events WHERE chain_position > 3",
                    "UPDATE stamp_audit_chain SET rows = 3, head = \(AuditChainTests.literal(cut.hash, backend)), last_id = \(cut.row.id.rawValue)",
                    "DELETE FROM stamp_audit_checkpoints",
                ])
                #expect(try await ShardVerification.run(store: store, shard: 0, publicKey: AuditChainTests.signer.publicKey).problem == nil)
                let problem = try await ShardVerification.run(store: store, shard: 0, extraCheckpoints: first.checkpoints, publicKey: AuditChainTests.signer.publicKey).problem
                #expect(problem?.kind == .truncated)
            }
        }
    }

    @Test("checkpoint files are read line by line, from checkpoints or a user's export, and a stray line is named")
    func checkpointFilesAreParsed() throws {
        let checkpoint = AuditChainTests.signer.checkpoint(shard: 1, head: ChainHead(rows: 2, hash: Array(repeating: 1, count: 32), lastID: StampID(rawValue: 5)), signedAtMilliseconds: 9)
        let plain = String(decoding: try JSONEncoder().encode(checkpoint), as: UTF8.self)
        let exported = String(decoding: try JSONEncoder().encode(ExportedCheckpoint(checkpoint: checkpoint)), as: UTF8.self)
        let event = #"{"id":"5","userId":"ann","field":"email","actor":"a","reason":"r","shard":1,"recordedAt":"2026-01-01T00:00:00.000Z"}"#
        #expect(try AuditCheckpoint.checkpoints(inLines: "\(plain)\r\n\n\(event)\n\(exported)\n") == [checkpoint, checkpoint])
        #expect(throws: AuditInputError.self) { try AuditCheckpoint.checkpoints(inLines: "\(plain)\n{\"rows\": 3}\n") }
        let error = #expect(throws: AuditInputError.self) { try AuditCheckpoint.checkpoints(inLines: "\(plain)\nnot json\n") }
        #expect(error?.message == "line 2 is neither a checkpoint nor a line of a user's export")
    }
}
