import PostgresNIO
import StampAudit
import StampAuditStore
import StampCore
import StampDatabase
import StampDatabaseTesting
import StampTesting
import Synchronization
import Testing

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// The behaviour every audit store must show, checked against SQLite and PostgreSQL alike.
///
/// Every test runs once per backend in ``AuditStoreBackend/testable``, each on a fresh database.
@Suite("Audit store behaviour")
struct AuditStoreSuiteTests {
    /// Stands for the PostgreSQL cases in the report: skipped, with the reason, when they do not run.
    @Test(
        "the PostgreSQL cases run against a test server",
        .enabled(if: TestPostgresServer.environment != nil, "STAMP_TEST_POSTGRES_URL is not set, so every PostgreSQL case is skipped; scripts/test sets it")
    )
    func postgresCasesRun() async throws {
        #expect(AuditStoreBackend.testable.contains(.postgres))
        try await withAuditStores(.postgres) { database async throws in
            try await database.store.ping()
        }
    }

    @Test("migrating again, or from several stores at once, changes nothing", arguments: AuditStoreBackend.testable)
    func migrateIsIdempotent(backend: AuditStoreBackend) async throws {
        try await withAuditStores(backend, count: 3, migrating: false) { database async throws in
            try await withThrowingDiscardingTaskGroup { group in
                for store in database.stores {
                    group.addTask { try await store.migrate() }
                }
            }
            let row = AuditRow.storeTestRow(id: 1)
            #expect(try await database.store.insert([row]) == [.stored])
            for store in database.stores {
                try await store.migrate()
            }
            #expect(try await database.stores[2].row(id: row.id) == row)
            #expect(try await database.stores[1].insert([.storeTestRow(id: 2)]) == [.stored])
            #expect(try await database.store.ids(after: nil, limit: 10) == [row.id, StampID(rawValue: 2)!])
        }
    }

    @Test("rows read back exactly as inserted, absent and empty values included", arguments: AuditStoreBackend.testable)
    func rowsRoundTrip(backend: AuditStoreBackend) async throws {
        let rows = [
            AuditRow(
                id: StampID(rawValue: Int64.max)!,
                user: "usér 🙂 'quoted' \"double\"",
                field: "postal_address",
                actor: "support:ana; DROP TABLE stamp_audit_events; --",
                reason: "line 1\nline 2\t€",
                before: Array(0...255),
                after: nil,
                idempotencyKey: "key with spaces/and?query=1",
                requestDigest: Array((0...255).reversed())
            ),
            AuditRow(
                id: StampID(rawValue: 0)!,
                user: "u",
                field: "f",
                actor: "",
                reason: "",
                before: nil,
                after: [0x00],
                idempotencyKey: "k",
                requestDigest: [0x00]
            ),
            AuditRow(
                id: StampID(rawValue: 7)!,
                user: "u",
                field: "f",
                actor: "a",
                reason: "r",
                before: [],
                after: [],
                idempotencyKey: "k2",
                requestDigest: []
            ),
        ]
        try await withAuditStores(backend) { database async throws in
            let store = database.store
            #expect(try await store.insert(rows) == [.stored, .stored, .stored])
            for row in rows {
                #expect(try await store.row(id: row.id) == row)
                #expect(try await store.row(user: row.user, idempotencyKey: row.idempotencyKey) == row)
            }
            #expect(try await store.history(user: "u", field: nil, before: nil, limit: 10) == [rows[2], rows[1]])
            #expect(try await store.row(id: StampID(rawValue: 8)!) == nil)
            #expect(try await store.row(user: "u", idempotencyKey: "missing") == nil)
            #expect(try await store.row(user: "missing", idempotencyKey: "k") == nil)
        }
    }

    @Test("an empty insert stores nothing and answers nothing", arguments: AuditStoreBackend.testable)
    func emptyInsert(backend: AuditStoreBackend) async throws {
        try await withAuditStores(backend) { database async throws in
            #expect(try await database.store.insert([]) == [])
            #expect(try await database.store.ids(after: nil, limit: 10) == [])
        }
    }

    @Test("a user's idempotency key stores one row, across calls and within one", arguments: AuditStoreBackend.testable)
    func duplicateKeysAreSkipped(backend: AuditStoreBackend) async throws {
        try await withAuditStores(backend) { database async throws in
            let store = database.store
            let first = AuditRow.storeTestRow(id: 10, key: "a")
            #expect(try await store.insert([first]) == [.stored])

            // Across calls: the retry under the same key is skipped, the new key stored.
            var retry = AuditRow.storeTestRow(id: 11, key: "a")
            retry.reason = "a different request"
            #expect(try await store.insert([retry, .storeTestRow(id: 12, key: "b")]) == [.repeated, .stored])
            // The very same row again, ID included, is skipped as well.
            #expect(try await store.insert([first]) == [.repeated])

            // Within one call: only the first row of a key counts.
            let batch = [
                AuditRow.storeTestRow(id: 20, key: "c"),
                AuditRow.storeTestRow(id: 21, key: "c"),
                AuditRow.storeTestRow(id: 22, key: "d"),
                AuditRow.storeTestRow(id: 23, key: "a"),
                AuditRow.storeTestRow(id: 24, key: "d"),
            ]
            #expect(try await store.insert(batch) == [.stored, .repeated, .stored, .repeated, .repeated])

            #expect(try await store.row(user: "user-1", idempotencyKey: "a") == first)
            #expect(try await store.row(user: "user-1", idempotencyKey: "c")?.id.rawValue == 20)
            #expect(try await store.row(id: retry.id) == nil)
            #expect(try await store.row(id: StampID(rawValue: 21)!) == nil)
            #expect(try await store.ids(after: nil, limit: 100).map(\.rawValue) == [10, 12, 20, 22])
        }
    }

    @Test("the same idempotency key under another user is another row", arguments: AuditStoreBackend.testable)
    func keysAreScopedToUsers(backend: AuditStoreBackend) async throws {
        try await withAuditStores(backend) { database async throws in
            let store = database.store
            let ana = AuditRow.storeTestRow(id: 1, user: "ana", key: "shared")
            let bo = AuditRow.storeTestRow(id: 2, user: "bo", key: "shared")
            #expect(try await store.insert([ana]) == [.stored])
            #expect(try await store.insert([bo, .storeTestRow(id: 3, user: "cy", key: "shared")]) == [.stored, .stored])
            #expect(try await store.row(user: "ana", idempotencyKey: "shared") == ana)
            #expect(try await store.row(user: "bo", idempotencyKey: "shared") == bo)
            #expect(try await store.ids(after: nil, limit: 10).count == 3)
        }
    }

    @Test("history runs newest first, below the cursor, of one field when asked, up to the limit", arguments: AuditStoreBackend.testable)
    func historyOrderCursorFieldAndLimit(backend: AuditStoreBackend) async throws {
        try await withAuditStores(backend) { database async throws in
            let store = database.store
            // Across two calls, with another user's rows in between.
            let mine = (1...10).map { AuditRow.storeTestRow(id: Int64($0) * 10, field: $0.isMultiple(of: 2) ? "phone" : "email") }
            let others = (1...10).map { AuditRow.storeTestRow(id: Int64($0) * 10 + 5, user: "user-2") }
            #expect(try await store.insert(Array(mine.prefix(4)) + others).allSatisfy { $0 == .stored })
            #expect(try await store.insert(Array(mine.dropFirst(4))).allSatisfy { $0 == .stored })

            let newestFirst = mine.reversed().map(\.id)
            #expect(try await store.history(user: "user-1", field: nil, before: nil, limit: 100).map(\.id) == newestFirst)
            #expect(try await store.history(user: "user-1", field: nil, before: nil, limit: 3).map(\.id) == Array(newestFirst.prefix(3)))
            #expect(try await store.history(user: "user-1", field: nil, before: StampID(rawValue: 70), limit: 2).map(\.id.rawValue) == [60, 50])
            #expect(try await store.history(user: "user-1", field: nil, before: StampID(rawValue: 65), limit: 2).map(\.id.rawValue) == [60, 50])
            #expect(try await store.history(user: "user-1", field: "phone", before: nil, limit: 100).map(\.id.rawValue) == [100, 80, 60, 40, 20])
            #expect(try await store.history(user: "user-1", field: "email", before: StampID(rawValue: 50), limit: 1).map(\.id.rawValue) == [30])
            #expect(try await store.history(user: "user-1", field: "email", before: StampID(rawValue: 10), limit: 5) == [])
            #expect(try await store.history(user: "user-1", field: "name", before: nil, limit: 5) == [])
            #expect(try await store.history(user: "nobody", field: nil, before: nil, limit: 5) == [])
            #expect(try await store.history(user: "user-1", field: nil, before: nil, limit: 0) == [])
            #expect(try await store.history(user: "user-1", field: "phone", before: nil, limit: 1) == [mine[9]])

            // Walking with the cursor visits every row once.
            var walked: [StampID] = []
            var cursor: StampID?
            while case let page = try await store.history(user: "user-1", field: nil, before: cursor, limit: 3), !page.isEmpty {
                walked += page.map(\.id)
                cursor = page.last?.id
            }
            #expect(walked == newestFirst)
        }
    }

    @Test("the latest of each field is the user's newest row of that field, in field order", arguments: AuditStoreBackend.testable)
    func latestOfEachField(backend: AuditStoreBackend) async throws {
        try await withAuditStores(backend) { database async throws in
            let store = database.store
            #expect(try await store.latestOfEachField(user: "user-1") == [])
            // Fields interleaved, another user's newer rows of the same fields, and a field
            // changed only at first.
            let mine = [
                AuditRow.storeTestRow(id: 10, field: "name"), .storeTestRow(id: 20, field: "phone"), .storeTestRow(id: 30, field: "email"),
                .storeTestRow(id: 40, field: "phone"), .storeTestRow(id: 50, field: "email"), .storeTestRow(id: 60, field: "phone"),
            ]
            let others = [AuditRow.storeTestRow(id: 70, user: "user-2", field: "email"), .storeTestRow(id: 80, user: "user-2", field: "zip")]
            #expect(try await store.insert(mine + others).allSatisfy { $0 == .stored })
            #expect(try await store.latestOfEachField(user: "user-1") == [mine[4], mine[0], mine[5]])
            #expect(try await store.latestOfEachField(user: "user-2") == others)
            #expect(try await store.latestOfEachField(user: "nobody") == [])
        }
    }

    @Test("the latest ID is the greatest of the user's rows", arguments: AuditStoreBackend.testable)
    func latestID(backend: AuditStoreBackend) async throws {
        try await withAuditStores(backend) { database async throws in
            let store = database.store
            #expect(try await store.latestID(user: "user-1") == nil)
            _ = try await store.insert([.storeTestRow(id: 30), .storeTestRow(id: 99, user: "user-2")])
            #expect(try await store.latestID(user: "user-1") == StampID(rawValue: 30))
            _ = try await store.insert([.storeTestRow(id: 40)])
            #expect(try await store.latestID(user: "user-1") == StampID(rawValue: 40))
            #expect(try await store.latestID(user: "user-2") == StampID(rawValue: 99))
            #expect(try await store.latestID(user: "nobody") == nil)
        }
    }

    @Test("a row at or below its user's newest ID is refused with that ID, before the call or earlier in it", arguments: AuditStoreBackend.testable)
    func rowsBelowTheUsersNewestAreRefused(backend: AuditStoreBackend) async throws {
        try await withAuditStores(backend, count: 2) { database async throws in
            let store = database.store
            #expect(try await store.insert([.storeTestRow(id: 30), .storeTestRow(id: 50, user: "user-2")]) == [.stored, .stored])
            let latest = StampID(rawValue: 30)!
            // Through another store (another process): below, equal, and one of another user.
            #expect(
                try await database.stores[1].insert([.storeTestRow(id: 10), .storeTestRow(id: 40, user: "user-3"), .storeTestRow(id: 30, key: "again")])
                    == [.belowLatest(latest), .stored, .belowLatest(latest)]
            )
            // Within one call: a row below an earlier one of its user is refused even though the
            // database stored neither before; another user's rows between change nothing.
            #expect(
                try await store.insert([.storeTestRow(id: 60), .storeTestRow(id: 45, user: "user-2"), .storeTestRow(id: 55), .storeTestRow(id: 70)])
                    == [.stored, .belowLatest(StampID(rawValue: 50)!), .belowLatest(StampID(rawValue: 60)!), .stored]
            )
            // A repeat is a repeat whatever its ID.
            #expect(try await store.insert([.storeTestRow(id: 5, key: "key-30")]) == [.repeated])
            #expect(try await store.ids(after: nil, limit: 10).map(\.rawValue) == [30, 40, 50, 60, 70])
            #expect(try await store.history(user: "user-1", field: nil, before: nil, limit: 10).map(\.id.rawValue) == [70, 60, 30])
        }
    }

    @Test("a row whose ID another user's row has is refused as taken, alone, before the call or earlier in it", arguments: AuditStoreBackend.testable)
    func takenIDsAreRefusedAlone(backend: AuditStoreBackend) async throws {
        try await withAuditStores(backend) { database async throws in
            let store = database.store
            #expect(try await store.insert([.storeTestRow(id: 10)]) == [.stored])
            let outcomes = try await store.insert([
                .storeTestRow(id: 10, user: "user-2"),
                .storeTestRow(id: 20, user: "user-3"),
                .storeTestRow(id: 20, user: "user-4"),
                .storeTestRow(id: 30, user: "user-4"),
            ])
            #expect(outcomes == [.idTaken, .stored, .idTaken, .stored])
            #expect(try await store.ids(after: nil, limit: 10).map(\.rawValue) == [10, 20, 30])
            #expect(try await store.row(id: StampID(rawValue: 10)!)?.user == "user-1")
        }
    }

    @Test("a shard map version, once recorded, refuses inserts under older ones and never goes back", arguments: AuditStoreBackend.testable)
    func recordedMapVersionFencesOlderWriters(backend: AuditStoreBackend) async throws {
        try await withAuditStores(backend, count: 2) { database async throws in
            let (store, other) = (database.stores[0], database.stores[1])
            #expect(try await store.storedMap() == .none)
            #expect(try await store.insert([.storeTestRow(id: 1)], mapVersion: 1) == [.stored])
            let second = StoredShardMap(version: 2, document: Array("{\"version\": 2}".utf8))
            #expect(try await other.recordMap(second) == second)
            #expect(try await store.insert([.storeTestRow(id: 2), .storeTestRow(id: 3, user: "user-2")], mapVersion: 1) == [.staleMap(version: 2), .staleMap(version: 2)])
            #expect(try await store.insert([.storeTestRow(id: 4)], mapVersion: 2) == [.stored])
            #expect(try await store.insert([.storeTestRow(id: 5)], mapVersion: 3) == [.stored])
            let first = StoredShardMap(version: 1, document: Array("{\"version\": 1}".utf8))
            #expect(try await store.recordMap(first) == second, "an older version never replaces a newer one")
            #expect(try await store.storedMap() == second)
            #expect(try await store.ids(after: nil, limit: 10).map(\.rawValue) == [1, 4, 5])
        }
    }

    /// A commit can fail after every statement succeeded (a deferred constraint, a serialization
    /// failure): the insert must fail then, not answer its rows stored.
    @Test(
        "an error at the commit fails the insert and stores nothing",
        .enabled(if: TestPostgresServer.environment != nil, "STAMP_TEST_POSTGRES_URL is not set")
    )
    func commitErrorsFailTheInsert() async throws {
        try await withAuditStores(.postgres) { database async throws in
            try await database.execute("CREATE FUNCTION test_refuse_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'refused at commit'; END $$")
            try await database.execute(
                "CREATE CONSTRAINT TRIGGER test_refuse_at_commit AFTER INSERT ON stamp_audit_events DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION test_refuse_at_commit()"
            )
            let store = database.store
            let error = await #expect(throws: AuditStoreError.self) {
                try await store.insert([.storeTestRow(id: 1)])
            }
            #expect(error?.code == .rejected)
            let refused = await #expect(throws: AuditStoreError.self) {
                try await store.insert([.storeTestRow(id: 2), .storeTestRow(id: 3, user: "user-2")])
            }
            #expect(refused?.code == .rejected)
            #expect(try await store.ids(after: nil, limit: 10).isEmpty)
        }
    }

    @Test("IDs of every user come in ascending pages", arguments: AuditStoreBackend.testable)
    func idsPaging(backend: AuditStoreBackend) async throws {
        try await withAuditStores(backend) { database async throws in
            let store = database.store
            let rows = (1...25).map { AuditRow.storeTestRow(id: Int64($0) * 3, user: "user-\($0 % 4)") }
            #expect(try await store.insert(rows).allSatisfy { $0 == .stored })
            let all = rows.map(\.id).sorted()

            var pages: [[StampID]] = []
            var after: StampID?
            while case let page = try await store.ids(after: after, limit: 10), !page.isEmpty {
                pages.append(page)
                after = page.last
            }
            #expect(pages.map(\.count) == [10, 10, 5])
            #expect(pages.flatMap { $0 } == all)
            #expect(try await store.ids(after: StampID(rawValue: 4), limit: 2).map(\.rawValue) == [6, 9])
            #expect(try await store.ids(after: all.last, limit: 10) == [])
            #expect(try await store.ids(after: nil, limit: 0) == [])
        }
    }

    @Test("updates and deletes are refused by the database itself", arguments: AuditStoreBackend.testable)
    func changesAreRefused(backend: AuditStoreBackend) async throws {
        try await withAuditStores(backend) { database async throws in
            let row = AuditRow.storeTestRow(id: 1)
            _ = try await database.store.insert([row])
            var statements = [
                "UPDATE stamp_audit_events SET actor = 'someone else'",
                "DELETE FROM stamp_audit_events",
                "DELETE FROM stamp_audit_events WHERE id = 1",
            ]
            if backend == .postgres {
                statements.append("TRUNCATE stamp_audit_events")
                // A statement trigger refuses even a change that matches no row.
                statements.append("DELETE FROM stamp_audit_events WHERE id = 2")
            }
            for statement in statements {
                let error = await #expect(throws: (any Error).self, "\(statement)") {
                    try await database.execute(statement)
                }
                let message = error.map(AuditStoreDatabase.databaseMessage) ?? ""
                #expect(message.contains("append-only"), "\(statement): \(message)")
            }
            #expect(try await database.store.row(id: row.id) == row)
        }
    }

    @Test(
        "a member of stamp_audit_writer may read and insert but not change or delete",
        .enabled(if: TestPostgresServer.environment != nil, "STAMP_TEST_POSTGRES_URL is not set")
    )
    func writerRoleMayOnlyReadAndInsert() async throws {
        try await withAuditStores(.postgres) { database async throws in
            let role = "stamp_audit_test_\(UUID().uuidString.lowercased().filter { $0 != "-" })"
            try await database.execute("CREATE ROLE \(role) LOGIN IN ROLE stamp_audit_writer")
            var url = try #require(database.postgres).url
            url.username = role
            url.password = nil
            let configuration = try PostgresConnectionSettings(url: url)
            let failure: (any Error)?
            do {
                try await Self.checkWriterRole(configuration)
                failure = nil
            } catch {
                failure = error
            }
            try await database.execute("DROP ROLE \(role)")
            if let failure { throw failure }
        }
    }

    private static func checkWriterRole(_ configuration: PostgresConnectionSettings) async throws {
        let store = PostgresAuditStore(configuration: configuration, logger: AuditStoreBackend.logger)
        try await withThrowingTaskGroup { group in
            group.addTask { try await store.run() }
            defer { group.cancelAll() }
            // Every migration has run, so migrating needs nothing the role lacks.
            try await store.migrate()
            let row = AuditRow.storeTestRow(id: 1)
            #expect(try await store.insert([row, .storeTestRow(id: 2, key: "key-1")]) == [.stored, .repeated])
            #expect(try await store.row(id: row.id) == row)
            #expect(try await store.history(user: row.user, field: nil, before: nil, limit: 5) == [row])

            for statement in ["UPDATE stamp_audit_events SET actor = 'x'", "DELETE FROM stamp_audit_events", "TRUNCATE stamp_audit_events"] {
                let error = await #expect(throws: (any Error).self, "\(statement)") {
                    try await withPostgresClient(configuration) { client in
                        _ = try await client.query(PostgresQuery(unsafeSQL: statement))
                    }
                }
                let message = error.map(AuditStoreDatabase.databaseMessage) ?? ""
                #expect(message.hasPrefix("42501: permission denied"), "\(statement): \(message)")
            }
            #expect(try await store.row(id: row.id) == row)
            // The role stores, destroys and re-wraps data keys and appends to the access log.
            let key = StoredUserKey(user: row.user, generation: 1, wrapped: [1, 2, 3])
            #expect(try await store.addUserKey(key) == [key])
            #expect(try await store.rewrapUserKeys([(key, [4, 5, 6])]) == 1)
            try await store.eraseUserKeys(user: row.user)
            #expect(try await store.liveUserKeys().isEmpty)
            let entry = AccessLogEntry(recordedAt: 1, reader: "reader sha256:000000000000", user: row.user, request: "GET /", events: [row.id])
            try await store.recordAccess(entry)
            #expect(try await store.accessLog(user: row.user, limit: 5) == [entry])
            await store.close()
        }
    }

    @Test(
        "migrating as a role that may not create roles skips the writer role with a warning, until a privileged role migrates",
        .enabled(if: TestPostgresServer.environment != nil, "STAMP_TEST_POSTGRES_URL is not set")
    )
    func migratingWithoutCreateRole() async throws {
        try await withAuditStores(.postgres, migrating: false) { database async throws in
            let administration = try #require(database.postgres)
            let role = "stamp_audit_test_\(UUID().uuidString.lowercased().filter { $0 != "-" })"
            try await database.execute("CREATE ROLE \(role) LOGIN NOCREATEROLE")
            try await database.execute("GRANT CREATE ON SCHEMA public TO \(role)")
            var url = administration.url
            url.username = role
            url.password = nil
            let configuration = try PostgresConnectionSettings(url: url)
            let records = RecordingLogHandler.Records()
            let store = PostgresAuditStore(configuration: configuration, logger: records.logger())
            let failure: (any Error)?
            do {
                // Other tests on the cluster may create the role at any time, but not take it away.
                let writerRoleExisted = try await postgresRoleExists("stamp_audit_writer", configuration: administration)
                try await withThrowingTaskGroup { group in
                    group.addTask { try await store.run() }
                    defer { group.cancelAll() }
                    try await store.migrate()
                    #expect(try await store.insert([.storeTestRow(id: 1)]) == [.stored])
                    await store.close()
                }
                let recorded = try await postgresMigrations(configuration: administration)
                #expect(recorded.isSuperset(of: ["0001-create-events", "0002-refuse-changes"]))
                let warned = records.entries.contains { $0.hasPrefix("warning") && $0.contains("stamp_audit_writer") }
                if writerRoleExisted {
                    #expect(recorded.contains("0003-create-writer-role"))
                } else {
                    #expect(recorded.contains("0003-create-writer-role") != warned)
                }
                // A privileged role migrating later completes what was skipped.
                try await database.store.migrate()
                #expect(try await postgresMigrations(configuration: administration).contains("0003-create-writer-role"))
                failure = nil
            } catch {
                failure = error
            }
            // The owner's objects go first, so that the role can be dropped.
            try await database.execute("DROP OWNED BY \(role)")
            try await database.execute("DROP ROLE \(role)")
            if let failure { throw failure }
        }
    }

    @Test("concurrent inserts from several stores store each key exactly once", arguments: AuditStoreBackend.testable)
    func concurrentInserts(backend: AuditStoreBackend) async throws {
        // 20 writers of 50 rows each, spread over two stores (two processes); the 4 writers of a
        // user compete for the same 50 keys.
        let writers = 20
        let rowsPerWriter = 50
        let users = 5
        // A row refused below its user's newest row goes again with a new, greater ID, as the
        // service does; IDs come from one counter, so they are unique.
        final class IDCounter: Sendable {
            let last = Atomic<Int64>(0)
        }
        let counter = IDCounter()
        try await withAuditStores(backend, count: 2) { database async throws in
            let winners = try await withThrowingTaskGroup { group in
                for writer in 0..<writers {
                    let store = database.stores[writer % database.stores.count]
                    group.addTask {
                        var won: [AuditRow] = []
                        for index in 0..<rowsPerWriter {
                            while true {
                                let row = AuditRow.storeTestRow(
                                    id: counter.last.add(1, ordering: .relaxed).newValue,
                                    user: "user-\(writer % users)",
                                    key: "key-\(index)"
                                )
                                let outcome = try await store.insert([row])
                                if outcome == [.stored] { won.append(row) }
                                if case .belowLatest(let latest) = outcome[0] {
                                    #expect(latest >= row.id)
                                    continue
                                }
                                break
                            }
                        }
                        return won
                    }
                }
                return try await group.reduce(into: []) { $0 += $1 }
            }
            #expect(winners.count == users * rowsPerWriter)
            #expect(Set(winners.map { "\($0.user)/\($0.idempotencyKey)" }).count == users * rowsPerWriter)
            let stored = try await database.stores[1].ids(after: nil, limit: 10_000)
            #expect(stored == winners.map(\.id).sorted())
            for winner in winners {
                #expect(try await database.store.row(user: winner.user, idempotencyKey: winner.idempotencyKey) == winner)
            }
        }
    }

    @Test("a call too large for one statement is still one call", arguments: AuditStoreBackend.testable)
    func insertBeyondOneStatement(backend: AuditStoreBackend) async throws {
        // More rows than one statement takes on either database (3640 on SQLite, 7281 on
        // PostgreSQL); the last row repeats the first one's key, across the statements.
        let rows = (1...8_000).map { AuditRow.storeTestRow(id: Int64($0)) } + [.storeTestRow(id: 9_000, key: "key-1")]
        try await withAuditStores(backend) { database async throws in
            let stored = try await database.store.insert(rows)
            #expect(stored == Array(repeating: .stored, count: 8_000) + [.repeated])
            #expect(try await database.store.ids(after: nil, limit: 10_000) == rows.dropLast().map(\.id))
        }
    }

    @Test("reads go on, and writes wait their turn, while another process holds the write lock")
    func readsDoNotWaitForAnotherWriter() async throws {
        try await withAuditStores(.sqlite) { database async throws in
            let path = try #require(database.sqlitePath)
            let store = database.store
            let first = AuditRow.storeTestRow(id: 1)
            _ = try await store.insert([first])
            let later = AuditRow.storeTestRow(id: 3)
            try await withSQLiteConnection(path) { other in
                try await other.execute("BEGIN IMMEDIATE")
                // Another audit server's insert, chained after the first row.
                try await other.execute("INSERT INTO stamp_audit_events VALUES (2, 'user-1', 'email', 'a', 'r', NULL, NULL, 'other-key', X'00', 2, zeroblob(32))")
                try await other.execute("UPDATE stamp_audit_chain SET rows = 2, head = zeroblob(32), last_id = 2")
                // A read that waited for the lock would fail after the busy timeout instead.
                #expect(try await store.row(id: first.id) == first)
                #expect(try await store.ids(after: nil, limit: 10) == [first.id])
                try await withThrowingTaskGroup { group in
                    group.addTask {
                        let stored = try await store.insert([later])
                        #expect(stored == [.stored])
                    }
                    try await other.execute("COMMIT")
                    try await group.waitForAll()
                }
            }
            #expect(try await store.ids(after: nil, limit: 10).map(\.rawValue) == [1, 2, 3])
        }
    }

    @Test("errors and logs name the failure without bound values or SQL", arguments: AuditStoreBackend.testable)
    func errorsHideValues(backend: AuditStoreBackend) async throws {
        let marker = "MARKER-7f3a"
        let records = RecordingLogHandler.Records()
        try await withAuditStores(backend, logger: records.logger()) { database async throws in
            let store = database.store
            _ = try await store.insert([.storeTestRow(id: 1)])
            try await database.refuseRows(ofActor: marker)
            let clash = AuditRow(
                id: StampID(rawValue: 2)!,
                user: marker,
                field: marker,
                actor: marker,
                reason: marker,
                before: Array(marker.utf8),
                after: nil,
                idempotencyKey: marker,
                requestDigest: Array(marker.utf8)
            )
            let error = await #expect(throws: AuditStoreError.self) {
                try await store.insert([clash])
            }
            #expect(error?.code == .rejected)
            let description = error.map { "\($0) \(String(reflecting: $0))" } ?? ""
            #expect(!description.contains(marker), "\(description)")
            #expect(!description.contains("INSERT"), "\(description)")
            #expect(!description.contains("stamp_audit_events"), "\(description)")
            #expect(try await store.ids(after: nil, limit: 10).map(\.rawValue) == [1])
        }
        #expect(!records.entries.isEmpty)
        for entry in records.entries {
            #expect(!entry.contains(marker), "\(entry)")
        }
    }

    @Test("a closed store reports itself unavailable", arguments: AuditStoreBackend.testable)
    func closedStoreIsUnavailable(backend: AuditStoreBackend) async throws {
        try await withAuditStores(backend) { database async throws in
            try await database.store.ping()
            await database.store.close()
            let error = await #expect(throws: AuditStoreError.self) {
                try await database.store.ping()
            }
            #expect(error?.code == .unavailable)
        }
    }

    @Test("a PostgreSQL URL becomes the configuration PostgresURL reads; a bad one is an invalid configuration, not repeated")
    func postgresURL() throws {
        let configuration = try PostgresAuditStore.configuration(url: "postgresql://audit%40svc:p%3Ass@[::1]:6543/shard%5F0").clientConfiguration
        #expect(configuration.host == "::1")
        #expect(configuration.port == 6543)
        #expect(configuration.username == "audit@svc")
        #expect(configuration.password == "p:ss")
        #expect(configuration.database == "shard_0")

        for url in ["mysql://u:MARKER-7f3a@h/d", "postgres://u:MARKER-7f3a@h/d%zz"] {
            let error = #expect(throws: AuditStoreError.self, "\(url)") {
                try PostgresAuditStore.configuration(url: url)
            }
            #expect(error?.code == .invalidConfiguration)
            #expect(error?.description.contains("MARKER") == false)
        }
    }
}
