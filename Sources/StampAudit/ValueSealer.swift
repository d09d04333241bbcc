import Crypto
import Foundation
import StampCore

/// Seals personal-data values for storage with AES-256-GCM, and digests write requests.
///
/// A sealed value is `0x01 ‖ nonce (12 bytes) ‖ ciphertext ‖ tag (16 bytes)`. The ID of the row
/// and the name of the value (`before` or `after`) are authenticated with it, so a sealed value
/// copied into another row or swapped with its partner fails to open.
public struct ValueSealer: Sendable {
    /// The format byte that leads every sealed value.
    static let format: UInt8 = 1
    private let key: SymmetricKey
    private let digestKey: SymmetricKey

    /// A sealer with the 32-byte data key `key`.
    public init(key: SymmetricKey) throws(AuditInputError) {
        guard key.bitCount == 256 else {
            throw AuditInputError(.invalidConfiguration, "the data key must be 32 bytes (256 bits); got \(key.bitCount / 8)")
        }
        self.key = key
        digestKey = HKDF<SHA256>.deriveKey(inputKeyMaterial: key, info: Array("stamp audit request digest".utf8), outputByteCount: 32)
    }

    /// A sealer with the data key given as base64 text of 32 bytes.
    public init(base64Key: String) throws(AuditInputError) {
        guard let bytes = Data(base64Encoded: base64Key.trimmingCharacters(in: .whitespacesAndNewlines)) else {
            throw AuditInputError(.invalidConfiguration, "the data key must be base64 text of 32 random bytes")
        }
        try self.init(key: SymmetricKey(data: bytes))
    }

    /// A new random data key as base64 text, for set-up.
    public static func generateKey() -> String {
        SymmetricKey(size: .bits256).withUnsafeBytes { Data($0).base64EncodedString() }
    }

    /// Which value of a row is sealed.
    public enum Slot: String, Sendable {
        case before, after
    }

    /// Seals `value` for row `id`.
    public func seal(_ value: String, id: StampID, slot: Slot) -> [UInt8] {
        let box = try! AES.GCM.seal(Array(value.utf8), using: key, authenticating: Self.context(id: id, slot: slot))
        // `combined` is nonce ‖ ciphertext ‖ tag, as the format has them; it exists for the default 12-byte nonce.
        var sealed = [Self.format]
        sealed.append(contentsOf: box.combined!)
        return sealed
    }

    /// Opens a value sealed for row `id`.
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
