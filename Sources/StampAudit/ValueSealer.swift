import Crypto
import Foundation
import StampCore

/// Seals personal-data values for storage with AES-256-GCM under per-user data keys, wraps those
/// keys with the master key (envelope encryption), and digests write requests.
///
/// A sealed value is `0x02 ‖ key generation (4 bytes, big-endian) ‖ nonce (12 bytes) ‖ ciphertext
/// ‖ tag (16 bytes)` under that generation of its user's data key. Rows stored before per-user
/// keys hold the first format, `0x01 ‖ nonce ‖ ciphertext ‖ tag` under the master key itself; they
/// still open. The ID of the row and the name of the value (`before` or `after`) are authenticated
/// with it, so a sealed value copied into another row or swapped with its partner fails to open.
///
/// A wrapped user key is `0x01 ‖ nonce ‖ ciphertext (32 bytes) ‖ tag` under the master key, with
/// the user and the generation authenticated. During a master key rotation a sealer holds the
/// previous master key too, and unwraps keys wrapped by either.
public struct ValueSealer: Sendable {
    /// The format byte of values sealed with the master key itself, before per-user keys.
    static let format: UInt8 = 1
    /// The format byte of values sealed with a user's data key.
    static let userKeyFormat: UInt8 = 2
    /// The format byte of wrapped user keys.
    static let wrapFormat: UInt8 = 1
    private let key: SymmetricKey
    private let previousKey: SymmetricKey?
    private let digestKey: SymmetricKey

    /// A sealer with the 32-byte master key `key`, and `previousKey`, the master key before a
    /// rotation, while keys wrapped by it may remain.
    public init(key: SymmetricKey, previousKey: SymmetricKey? = nil) throws(AuditInputError) {
        for candidate in [key] + (previousKey.map { [$0] } ?? []) where candidate.bitCount != 256 {
            throw AuditInputError(.invalidConfiguration, "the data key must be 32 bytes (256 bits); got \(candidate.bitCount / 8)")
        }
        self.key = key
        self.previousKey = previousKey
        digestKey = HKDF<SHA256>.deriveKey(inputKeyMaterial: key, info: Array("stamp audit request digest".utf8), outputByteCount: 32)
    }

    /// A sealer with the master key, and optionally the previous one, given as base64 text of 32 bytes.
    public init(base64Key: String, previousBase64Key: String? = nil) throws(AuditInputError) {
        try self.init(key: Self.key(base64: base64Key), previousKey: previousBase64Key.map { text throws(AuditInputError) in try Self.key(base64: text) })
    }

    private static func key(base64: String) throws(AuditInputError) -> SymmetricKey {
        guard let bytes = Data(base64Encoded: base64.trimmingCharacters(in: .whitespacesAndNewlines)) else {
            throw AuditInputError(.invalidConfiguration, "the data key must be base64 text of 32 random bytes")
        }
        return SymmetricKey(data: bytes)
    }

    /// A new random data key as base64 text, for set-up.
    public static func generateKey() -> String {
        SymmetricKey(size: .bits256).withUnsafeBytes { Data($0).base64EncodedString() }
    }

    /// Which value of a row is sealed.
    public enum Slot: String, Sendable {
        case before, after
    }

    /// Seals `value` for row `id` with the master key itself: the format of rows stored before
    /// per-user keys, which tests of those rows make.
    public func seal(_ value: String, id: StampID, slot: Slot) -> [UInt8] {
        let box = try! AES.GCM.seal(Array(value.utf8), using: key, authenticating: Self.context(id: id, slot: slot))
        // `combined` is nonce ‖ ciphertext ‖ tag, as the format has them; it exists for the default 12-byte nonce.
        var sealed = [Self.format]
        sealed.append(contentsOf: box.combined!)
        return sealed
    }

    /// Opens a value sealed for row `id` with the master key itself.
    public func open(_ sealed: [UInt8], id: StampID, slot: Slot) throws(AuditInputError) -> String {
        guard sealed.count >= 1 + 12 + 16, sealed[0] == Self.format else {
            throw AuditInputError(.sealedValueUnreadable, "a stored value of event \(id) is not in a known sealed format")
        }
        do {
            let box = try AES.GCM.SealedBox(nonce: AES.GCM.Nonce(data: sealed[1..<13]), ciphertext: sealed[13..<(sealed.count - 16)], tag: sealed[(sealed.count - 16)...])
            let plain = try AES.GCM.open(box, using: key, authenticating: Self.context(id: id, slot: slot))
            return String(decoding: plain, as: UTF8.self)
        } catch {
            throw AuditInputError(.sealedValueUnreadable, "a stored value of event \(id) does not open with the configured data key")
        }
    }

    /// Seals `value` for row `id` with `key`, one of the user's data keys.
    public func seal(_ value: String, id: StampID, slot: Slot, key: UserDataKey) -> [UInt8] {
        let box = try! AES.GCM.seal(Array(value.utf8), using: key.key, authenticating: Self.context(id: id, slot: slot))
        var sealed = [Self.userKeyFormat]
        withUnsafeBytes(of: UInt32(key.generation).bigEndian) { sealed.append(contentsOf: $0) }
        sealed.append(contentsOf: box.combined!)
        return sealed
    }

    /// Opens a value sealed for row `id` with a key of `keyring`, or the master key for the first
    /// format: `.erased` when an erasure destroyed the key that sealed it.
    public func open(_ sealed: [UInt8], id: StampID, slot: Slot, keyring: UserKeyring) throws(AuditInputError) -> OpenedValue {
        switch sealed.first {
        case Self.format:
            // Rows of the first format are erased with their user: their key was never the user's own.
            if keyring.isErased { return .erased }
            for key in keyring.legacyKeys {
                if let value = try? Self.open(sealed[1...], key: key, id: id, slot: slot) { return .value(value) }
            }
            throw AuditInputError(.sealedValueUnreadable, "a stored value of event \(id) does not open with the configured data key")
        case Self.userKeyFormat where sealed.count >= 1 + 4 + 12 + 16:
            let generation = sealed[1..<5].reduce(0) { $0 << 8 | Int($1) }
            if keyring.destroyed.contains(generation) { return .erased }
            guard let key = keyring.keys[generation] else {
                throw AuditInputError(.sealedValueUnreadable, "a stored value of event \(id) names a data key the user's shards do not hold")
            }
            do {
                return .value(try Self.open(sealed[5...], key: key.key, id: id, slot: slot))
            } catch {
                throw AuditInputError(.sealedValueUnreadable, "a stored value of event \(id) does not open with its user's data key")
            }
        default:
            throw AuditInputError(.sealedValueUnreadable, "a stored value of event \(id) is not in a known sealed format")
        }
    }

    /// Opens `nonce ‖ ciphertext ‖ tag`.
    private static func open(_ box: ArraySlice<UInt8>, key: SymmetricKey, id: StampID, slot: Slot) throws -> String {
        guard box.count >= 12 + 16 else { throw AuditInputError(.sealedValueUnreadable, "a stored value of event \(id) is too short") }
        let sealed = try AES.GCM.SealedBox(combined: box)
        return String(decoding: try AES.GCM.open(sealed, using: key, authenticating: context(id: id, slot: slot)), as: UTF8.self)
    }

    /// `key` wrapped by the master key for storage in `user`'s shards.
    public func wrap(_ key: UserDataKey, user: String) -> [UInt8] {
        let box = key.key.withUnsafeBytes { bytes in
            try! AES.GCM.seal(Array(bytes), using: self.key, authenticating: Self.wrapContext(user: user, generation: key.generation))
        }
        return [Self.wrapFormat] + box.combined!
    }

    /// The key `stored` holds, unwrapped with the master key or the previous one; `nil` when it was destroyed.
    public func unwrap(_ stored: StoredUserKey) throws(AuditInputError) -> UserDataKey? {
        guard let wrapped = stored.wrapped else { return nil }
        guard wrapped.count == 1 + 12 + 32 + 16, wrapped[0] == Self.wrapFormat else {
            throw AuditInputError(.sealedValueUnreadable, "a stored data key is not in a known wrapped format")
        }
        let context = Self.wrapContext(user: stored.user, generation: stored.generation)
        for master in [key] + (previousKey.map { [$0] } ?? []) {
            if let box = try? AES.GCM.SealedBox(combined: wrapped[1...]), let plain = try? AES.GCM.open(box, using: master, authenticating: context) {
                return UserDataKey(generation: stored.generation, key: SymmetricKey(data: plain))
            }
        }
        throw AuditInputError(.sealedValueUnreadable, "a stored data key does not unwrap with the configured master key")
    }

    /// `stored` wrapped by this sealer's master key when it is not already; `nil` when it is, or destroyed.
    public func rewrap(_ stored: StoredUserKey, from old: ValueSealer) throws(AuditInputError) -> [UInt8]? {
        guard stored.wrapped != nil, (try? ValueSealer(key: key).unwrap(stored)) == nil else { return nil }
        guard let key = try old.unwrap(stored) else { return nil }
        return wrap(key, user: stored.user)
    }

    /// The master key of `old` wrapped by this sealer's, for a shard to keep under
    /// ``StoredUserKey/legacyKeyOwner`` when the master key is rotated from `old`'s to this one's:
    /// the rows of the first format, sealed with the old master key itself, open with it afterwards.
    public func wrapped(masterKeyOf old: ValueSealer) -> StoredUserKey {
        StoredUserKey(user: StoredUserKey.legacyKeyOwner, generation: 0, wrapped: wrap(UserDataKey(generation: 0, key: old.key), user: StoredUserKey.legacyKeyOwner))
    }

    /// The keyring of a user from the keys their shards hold (``StoredUserKey/legacyKeyOwner``'s
    /// among them), every shard's together: a generation any shard destroyed is destroyed.
    public func keyring(_ stored: [StoredUserKey]) throws(AuditInputError) -> UserKeyring {
        var keys: [Int: UserDataKey] = [:]
        var destroyed: Set<Int> = []
        var legacy: [SymmetricKey] = []
        for record in stored {
            guard let key = try unwrap(record) else {
                if record.user != StoredUserKey.legacyKeyOwner { destroyed.insert(record.generation) }
                continue
            }
            if record.user == StoredUserKey.legacyKeyOwner {
                legacy.append(key.key)
            } else {
                keys[record.generation] = key
            }
        }
        for generation in destroyed { keys[generation] = nil }
        return UserKeyring(keys: keys, destroyed: destroyed, legacyKeys: legacy + [key] + (previousKey.map { [$0] } ?? []))
    }

    private static func wrapContext(user: String, generation: Int) -> [UInt8] {
        var context = Array("stamp audit user key".utf8)
        append(user, to: &context)
        withUnsafeBytes(of: UInt64(generation).bigEndian) { context.append(contentsOf: $0) }
        return context
    }

    /// A keyed digest (HMAC-SHA256 under a key derived from the data key) of everything a write
    /// request says, so that a retry can be told from a different write without storing values in clear.
    public func digest(of event: AuditEventInput, user: String) -> [UInt8] {
        var message: [UInt8] = []
        message.reserveCapacity(64 + user.utf8.count + event.field.utf8.count + event.actor.utf8.count + event.reason.utf8.count + (event.before?.utf8.count ?? 0) + (event.after?.utf8.count ?? 0))
        for part in [user, event.field, event.actor, event.reason] {
            Self.append(part, to: &message)
        }
        for value in [event.before, event.after] {
            if let value {
                message.append(1)
                Self.append(value, to: &message)
            } else {
                message.append(0)
            }
        }
        return Array(HMAC<SHA256>.authenticationCode(for: message, using: digestKey))
    }

    /// Appends `text` as its length (8 bytes, big-endian) and its UTF-8 bytes.
    private static func append(_ text: String, to message: inout [UInt8]) {
        withUnsafeBytes(of: UInt64(text.utf8.count).bigEndian) { message.append(contentsOf: $0) }
        message.append(contentsOf: text.utf8)
    }

    private static func context(id: StampID, slot: Slot) -> [UInt8] {
        withUnsafeBytes(of: id.rawValue.bigEndian) { Array($0) } + Array(slot.rawValue.utf8)
    }
}
