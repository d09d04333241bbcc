import StampAudit
import StampAuditStore
import StampCore
import Testing

/// What the stores keep for erasure and audited reads: users' data keys and the access log.
@Suite("Audit store personal data")
struct PersonalDataStoreTests {
    @Test("a user's data keys are stored once per generation, destroyed by an erasure, and never restored or deleted", arguments: AuditStoreBackend.testable)
    func userKeysLifecycle(backend: AuditStoreBackend) async throws {
        try await withAuditStores(backend, count: 2) { database async throws in
            let first = StoredUserKey(user: "alice", generation: 1, wrapped: [1, 1, 1])
            #expect(try await database.store.addUserKey(first) == [first])
            // Another server storing the same generation with another key finds the first one's.
            #expect(try await database.stores[1].addUserKey(StoredUserKey(user: "alice", generation: 1, wrapped: [9, 9])) == [first])
            let bob = StoredUserKey(user: "bob", generation: 1, wrapped: [2])
            _ = try await database.store.addUserKey(bob)
            let kept = StoredUserKey(user: StoredUserKey.legacyKeyOwner, generation: 0, wrapped: [3])
            _ = try await database.store.addUserKey(kept)
            #expect(try await database.store.userKeys(user: "alice") == [kept, first], "the user's keys and the kept master key")

            try await database.store.eraseUserKeys(user: "alice")
            try await database.stores[1].eraseUserKeys(user: "alice")
            let erased = [StoredUserKey(user: "alice", generation: 0, wrapped: nil), StoredUserKey(user: "alice", generation: 1, wrapped: nil)]
            #expect(try await database.store.userKeys(user: "alice") == [kept] + erased, "destroyed, and the erasure recorded as generation 0")
            #expect(try await database.store.liveUserKeys() == [kept, bob])
            // A later write makes the next generation.
            let second = StoredUserKey(user: "alice", generation: 2, wrapped: [4])
            #expect(try await database.store.addUserKey(second) == [kept] + erased + [second])
            // A user never written erases too: the erasure is recorded.
            try await database.store.eraseUserKeys(user: "carol")
            #expect(try await database.store.userKeys(user: "carol") == [kept, StoredUserKey(user: "carol", generation: 0, wrapped: nil)])

            for statement in [
                "UPDATE stamp_audit_user_keys SET wrapped_key = x'01' WHERE user_id = 'alice' AND generation = 1",
                "DELETE FROM stamp_audit_user_keys WHERE user_id = 'alice'",
            ] {
                let sql = backend == .postgres ? statement.replacingOccurrences(of: "x'01'", with: "'\\x01'::bytea") : statement
                let error = await #expect(throws: (any Error).self, "\(sql)") { try await database.execute(sql) }
                let message = error.map(AuditStoreDatabase.databaseMessage) ?? ""
                #expect(message.contains("destroyed") || message.contains("never deleted"), "\(sql): \(message)")
            }
            #expect(try await database.store.userKeys(user: "alice") == [kept] + erased + [second])
        }
    }

    @Test("first keys are stored in one call only for users the shard holds no key of, destroyed or not", arguments: AuditStoreBackend.testable)
    func firstKeysGoInTogether(backend: AuditStoreBackend) async throws {
        try await withAuditStores(backend) { database async throws in
            let held = StoredUserKey(user: "alice", generation: 1, wrapped: [1])
            _ = try await database.store.addUserKey(held)
            try await database.store.eraseUserKeys(user: "erased")
            let keys = ["alice", "bob", "carol", "erased"].map { StoredUserKey(user: $0, generation: 1, wrapped: [0x00, 0xff, UInt8($0.count)]) }
            #expect(try await database.store.addFirstUserKeys(keys) == ["bob", "carol"])
            #expect(try await database.store.userKeys(user: "alice") == [held])
            #expect(try await database.store.userKeys(user: "bob") == [keys[1]], "stored byte for byte")
            #expect(try await database.store.userKeys(user: "erased") == [StoredUserKey(user: "erased", generation: 0, wrapped: nil)])
            #expect(try await database.store.addFirstUserKeys([keys[1]]).isEmpty)
            #expect(try await database.store.addFirstUserKeys([]).isEmpty)
        }
    }

    @Test("re-wrapping replaces a key only while it is what the rotation read", arguments: AuditStoreBackend.testable)
    func rewrapIsConditional(backend: AuditStoreBackend) async throws {
        try await withAuditStores(backend) { database async throws in
            let alice = StoredUserKey(user: "alice", generation: 1, wrapped: [1])
            let bob = StoredUserKey(user: "bob", generation: 1, wrapped: [2])
            _ = try await database.store.addUserKey(alice)
            _ = try await database.store.addUserKey(bob)
            try await database.store.eraseUserKeys(user: "bob")
            #expect(try await database.store.rewrapUserKeys([(alice, [5]), (bob, [6])]) == 1, "bob's key was destroyed meanwhile")
            #expect(try await database.store.liveUserKeys() == [StoredUserKey(user: "alice", generation: 1, wrapped: [5])])
            #expect(try await database.store.rewrapUserKeys([(alice, [7])]) == 0, "alice's key is no longer what was read")
        }
    }

    @Test("the access log keeps every entry, newest first per user, and refuses changes", arguments: AuditStoreBackend.testable)
    func accessLogIsAppendOnly(backend: AuditStoreBackend) async throws {
        try await withAuditStores(backend) { database async throws in
            let entries = (1...4).map { n in
                AccessLogEntry(recordedAt: 1_000 + Int64(n), reader: "reader sha256:0123456789ab", user: n == 3 ? "bob" : "alice", request: "GET /v1/users/alice/events?limit=\(n)", events: (0..<n).map { StampID(rawValue: Int64($0 * 10))! })
            }
            for entry in entries {
                try await database.store.recordAccess(entry)
            }
            let empty = AccessLogEntry(recordedAt: 1_000, reader: "reader", user: "alice", request: "GET /", events: [])
            try await database.store.recordAccess(empty)
            #expect(try await database.store.accessLog(user: "alice", limit: 10) == [entries[3], entries[1], entries[0], empty])
            #expect(try await database.store.accessLog(user: "alice", limit: 2) == [entries[3], entries[1]])
            #expect(try await database.store.accessLog(user: "bob", limit: 10) == [entries[2]])
            for statement in ["UPDATE stamp_audit_access_log SET reader = 'nobody'", "DELETE FROM stamp_audit_access_log"] {
                let error = await #expect(throws: (any Error).self, "\(statement)") { try await database.execute(statement) }
                let message = error.map(AuditStoreDatabase.databaseMessage) ?? ""
                #expect(message.contains("append-only"), "\(statement): \(message)")
            }
            #expect(try await database.store.accessLog(user: "bob", limit: 10) == [entries[2]])
        }
    }
}
