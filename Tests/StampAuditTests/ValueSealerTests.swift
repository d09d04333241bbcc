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
}
