import Crypto
import StampAudit
import StampCore
import Testing

/// Sealed values and request digests are stored: their bytes must not change between versions.
@Suite struct ValueSealerTests {
    static let sealer = try! ValueSealer(key: SymmetricKey(data: [UInt8](repeating: 0, count: 32)))

    @Test func aRequestDigestIsTheSameBytesAsEver() {
        let event = AuditEventInput(field: "email", before: "old@example.com", after: nil, actor: "support:42", reason: "ticket 7")
        let digest = Self.sealer.digest(of: event, user: "alice")
        // HMAC-SHA256, under the HKDF-SHA256 key of "stamp audit request digest", of each of user,
        // field, actor and reason as an 8-byte big-endian length and its UTF-8, then per value a
        // 1 and the value the same way, or a 0.
        #expect(digest.map { String($0, radix: 16).count == 1 ? "0" + String($0, radix: 16) : String($0, radix: 16) }.joined() == "3de3fa72a01b7622351d38d6ab8608f39e403a3541867bbbdbbe5a3449096135")
        var other = event
        other.after = ""
        #expect(Self.sealer.digest(of: other, user: "alice") != digest, "an empty value differs from none")
    }

    @Test(arguments: ["", "new@example.com", "é🙂\u{0}"])
    func aSealedValueOpensOnlyInItsRowAndSlot(value: String) throws {
        let id = StampID(rawValue: 123_456_789)!
        let sealed = Self.sealer.seal(value, id: id, slot: .after)
        #expect(sealed.first == 1)
        #expect(sealed.count == 1 + 12 + value.utf8.count + 16, "format byte, nonce, ciphertext, tag")
        #expect(try Self.sealer.open(sealed, id: id, slot: .after) == value)
        #expect(throws: AuditInputError.self) { try Self.sealer.open(sealed, id: id, slot: .before) }
        #expect(throws: AuditInputError.self) { try Self.sealer.open(sealed, id: StampID(rawValue: 123_456_790)!, slot: .after) }
        #expect(Self.sealer.seal(value, id: id, slot: .after) != sealed, "every seal takes a new nonce")
    }

    static let otherSealer = try! ValueSealer(key: SymmetricKey(data: [UInt8](repeating: 7, count: 32)))

    @Test func aValueSealedWithAUserKeyOpensWithItsGenerationOnlyUntilErased() throws {
        let id = StampID(rawValue: 987_654_321)!
        let first = UserDataKey.random(generation: 1), second = UserDataKey.random(generation: 2)
        let sealed = Self.sealer.seal("new@example.com", id: id, slot: .after, key: second)
        #expect(sealed.first == 2)
        #expect(Array(sealed[1..<5]) == [0, 0, 0, 2], "the generation, big-endian")
        #expect(sealed.count == 1 + 4 + 12 + "new@example.com".utf8.count + 16)
        let stored = [first, second].map { StoredUserKey(user: "alice", generation: $0.generation, wrapped: Self.sealer.wrap($0, user: "alice")) }
        let keyring = try Self.sealer.keyring(stored)
        #expect(try Self.sealer.open(sealed, id: id, slot: .after, keyring: keyring) == .value("new@example.com"))
        #expect(throws: AuditInputError.self) { try Self.sealer.open(sealed, id: id, slot: .before, keyring: keyring) }
        #expect(throws: AuditInputError.self, "another generation's key does not open it") {
            try Self.sealer.open(sealed, id: id, slot: .after, keyring: Self.sealer.keyring([stored[0]]))
        }
        // An erasure in any one shard destroys the generation for every reader.
        let erased = try Self.sealer.keyring(stored + [StoredUserKey(user: "alice", generation: 2, wrapped: nil), StoredUserKey(user: "alice", generation: 0, wrapped: nil)])
        #expect(erased.isErased)
        #expect(try Self.sealer.open(sealed, id: id, slot: .after, keyring: erased) == .erased)
    }

    @Test func aWrappedKeyBelongsToItsUserAndGenerationAndUnwrapsWithThePreviousMasterKeyToo() throws {
        let key = UserDataKey.random(generation: 3)
        let wrapped = Self.sealer.wrap(key, user: "alice")
        #expect(wrapped.count == 1 + 12 + 32 + 16)
        #expect(try Self.sealer.unwrap(StoredUserKey(user: "alice", generation: 3, wrapped: wrapped)) != nil)
        #expect(throws: AuditInputError.self) { try Self.sealer.unwrap(StoredUserKey(user: "bob", generation: 3, wrapped: wrapped)) }
        #expect(throws: AuditInputError.self) { try Self.sealer.unwrap(StoredUserKey(user: "alice", generation: 4, wrapped: wrapped)) }
        #expect(throws: AuditInputError.self) { try Self.otherSealer.unwrap(StoredUserKey(user: "alice", generation: 3, wrapped: wrapped)) }
        let rotating = try ValueSealer(key: SymmetricKey(data: [UInt8](repeating: 7, count: 32)), previousKey: SymmetricKey(data: [UInt8](repeating: 0, count: 32)))
        let stored = StoredUserKey(user: "alice", generation: 3, wrapped: wrapped)
        #expect(try rotating.unwrap(stored) != nil, "a key wrapped by the previous master key unwraps")
        let rewrapped = try #require(try Self.otherSealer.rewrap(stored, from: Self.sealer))
        #expect(try Self.otherSealer.unwrap(StoredUserKey(user: "alice", generation: 3, wrapped: rewrapped)) != nil)
        #expect(try Self.otherSealer.rewrap(StoredUserKey(user: "alice", generation: 3, wrapped: rewrapped), from: Self.sealer) == nil, "a key wrapped by the new master key already is left alone")
        // The same value sealed with the key before and after the rotation opens the same.
        let id = StampID(rawValue: 5)!
        let sealed = Self.sealer.seal("x", id: id, slot: .before, key: key)
        let keyring = try Self.otherSealer.keyring([StoredUserKey(user: "alice", generation: 3, wrapped: rewrapped)])
        #expect(try Self.otherSealer.open(sealed, id: id, slot: .before, keyring: keyring) == .value("x"))
    }

    @Test func aValueOfTheFirstFormatOpensWithTheMasterKeyOrTheOneKeptAtARotationAndReadsAsErasedOnceTheUserIs() throws {
        let id = StampID(rawValue: 42)!
        let legacy = Self.sealer.seal("old@example.com", id: id, slot: .before)
        #expect(try Self.sealer.open(legacy, id: id, slot: .before, keyring: Self.sealer.keyring([])) == .value("old@example.com"))
        #expect(throws: AuditInputError.self, "after a rotation, without the kept key") {
            try Self.otherSealer.open(legacy, id: id, slot: .before, keyring: Self.otherSealer.keyring([]))
        }
        let kept = Self.otherSealer.wrapped(masterKeyOf: Self.sealer)
        #expect(kept.user == StoredUserKey.legacyKeyOwner)
        #expect(try Self.otherSealer.open(legacy, id: id, slot: .before, keyring: Self.otherSealer.keyring([kept])) == .value("old@example.com"))
        let erased = try Self.otherSealer.keyring([kept, StoredUserKey(user: "alice", generation: 0, wrapped: nil)])
        #expect(try Self.otherSealer.open(legacy, id: id, slot: .before, keyring: erased) == .erased)
    }
}
