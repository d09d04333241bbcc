import Crypto
import Foundation
import StampCore

/// A signed statement of how far one shard's hash chain reached: its row count, last ID and
/// head hash at a moment, signed with the audit servers' Ed25519 key.
///
/// Once a checkpoint is kept outside the database (a log line, a file, another system), nobody
/// can change a row it covers, or cut them off, without the chain no longer reaching its head.
public struct AuditCheckpoint: Sendable, Equatable {
    public var shard: Int
    /// How many rows the chain held.
    public var rows: Int64
    /// The ID of the last row chained; `nil` for an empty shard.
    public var lastID: StampID?
    /// The hash of the last row chained.
    public var head: [UInt8]
    /// When the checkpoint was signed, in milliseconds since 1970.
    public var signedAtMilliseconds: Int64
    /// The Ed25519 public key that signed it.
    public var publicKey: [UInt8]
    public var signature: [UInt8]

    public init(shard: Int, rows: Int64, lastID: StampID?, head: [UInt8], signedAtMilliseconds: Int64, publicKey: [UInt8], signature: [UInt8]) {
        self.shard = shard
        self.rows = rows
        self.lastID = lastID
        self.head = head
        self.signedAtMilliseconds = signedAtMilliseconds
        self.publicKey = publicKey
        self.signature = signature
    }

    /// The bytes that are signed: every field but the key and the signature, as text lines.
    public var signedMessage: [UInt8] {
        Array("""
            stamp-audit-checkpoint-v1
            shard \(shard)
            rows \(rows)
            last-id \(lastID.map { "\($0.rawValue)" } ?? "none")
            head \(AuditCheckpoint.hex(head))
            signed-at \(signedAtMilliseconds)

            """.utf8)
    }

    /// Whether the signature is valid for `publicKey` (by default the key the checkpoint names:
    /// pass the key you trust to check who signed it).
    public func isSigned(by publicKey: [UInt8]? = nil) -> Bool {
        guard let key = try? Curve25519.Signing.PublicKey(rawRepresentation: publicKey ?? self.publicKey) else { return false }
        if let publicKey, publicKey != self.publicKey { return false }
        return key.isValidSignature(signature, for: signedMessage)
    }

    /// Lowercase hexadecimal text of `bytes`.
    public static func hex(_ bytes: [UInt8]) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var text: [UInt8] = []
        text.reserveCapacity(bytes.count * 2)
        for byte in bytes {
            text.append(digits[Int(byte >> 4)])
            text.append(digits[Int(byte & 0x0f)])
        }
        return String(decoding: text, as: UTF8.self)
    }

    /// The bytes of hexadecimal text, or `nil` when it is not an even number of hex digits.
    public static func bytes(hex text: String) -> [UInt8]? {
        let digits = Array(text.utf8)
        guard digits.count % 2 == 0 else { return nil }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(digits.count / 2)
        for index in stride(from: 0, to: digits.count, by: 2) {
            guard let high = nibble(digits[index]), let low = nibble(digits[index + 1]) else { return nil }
            bytes.append(high << 4 | low)
        }
        return bytes
    }

    private static func nibble(_ digit: UInt8) -> UInt8? {
        switch digit {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): digit - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): digit - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): digit - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}

/// Signs checkpoints with an Ed25519 private key.
public struct CheckpointSigner: Sendable {
    private let key: Curve25519.Signing.PrivateKey

    /// The public key checkpoints are checked with.
    public var publicKey: [UInt8] { Array(key.publicKey.rawRepresentation) }

    /// A signer with the private key given as base64 text of its 32 bytes.
    public init(base64Key: String) throws(AuditInputError) {
        guard let bytes = Data(base64Encoded: base64Key.trimmingCharacters(in: .whitespacesAndNewlines)), bytes.count == 32,
              let key = try? Curve25519.Signing.PrivateKey(rawRepresentation: bytes)
        else {
            throw AuditInputError(.invalidConfiguration, "the checkpoint signing key must be base64 text of a 32-byte Ed25519 private key")
        }
        self.key = key
    }

    /// A new random signing key as base64 text, for set-up.
    public static func generateKey() -> String {
        Curve25519.Signing.PrivateKey().rawRepresentation.base64EncodedString()
    }

    /// The public key of a signing key given as base64 text, as base64 text.
    public static func publicKey(ofBase64Key key: String) throws(AuditInputError) -> String {
        Data(try CheckpointSigner(base64Key: key).publicKey).base64EncodedString()
    }

    /// A checkpoint of `head` on `shard`, signed now (`signedAtMilliseconds`).
    public func checkpoint(shard: Int, head: ChainHead, signedAtMilliseconds: Int64) -> AuditCheckpoint {
        var checkpoint = AuditCheckpoint(
            shard: shard, rows: head.rows, lastID: head.lastID, head: head.hash, signedAtMilliseconds: signedAtMilliseconds,
            publicKey: publicKey, signature: []
        )
        checkpoint.signature = Array(try! key.signature(for: checkpoint.signedMessage))
        return checkpoint
    }
}

/// The JSON form of a checkpoint, as `GET /v1/shards/{id}/checkpoint` answers it and
/// `stamp audit verify --checkpoint` reads it: IDs as decimal text, the head in hex, the key
/// and signature in base64.
extension AuditCheckpoint: Codable {
    private enum CodingKeys: String, CodingKey {
        case shard, rows, lastId, head, signedAt, signedAtMs, publicKey, signature
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        let lastID = try container.decodeIfPresent(String.self, forKey: .lastId)
        let head = try container.decode(String.self, forKey: .head)
        let key = try container.decode(String.self, forKey: .publicKey)
        let signature = try container.decode(String.self, forKey: .signature)
        guard let headBytes = Self.bytes(hex: head), let keyBytes = Data(base64Encoded: key), let signatureBytes = Data(base64Encoded: signature) else {
            throw DecodingError.dataCorruptedError(forKey: .head, in: container, debugDescription: "head must be hex, publicKey and signature base64")
        }
        var id: StampID?
        if let lastID {
            guard let value = Int64(lastID), let parsed = StampID(rawValue: value) else {
                throw DecodingError.dataCorruptedError(forKey: .lastId, in: container, debugDescription: "lastId must be an event ID in decimal")
            }
            id = parsed
        }
        self.init(
            shard: try container.decode(Int.self, forKey: .shard), rows: try container.decode(Int64.self, forKey: .rows), lastID: id, head: headBytes,
            signedAtMilliseconds: try container.decode(Int64.self, forKey: .signedAtMs), publicKey: Array(keyBytes), signature: Array(signatureBytes)
        )
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(shard, forKey: .shard)
        try container.encode(rows, forKey: .rows)
        try container.encodeIfPresent(lastID.map { "\($0.rawValue)" }, forKey: .lastId)
        try container.encode(Self.hex(head), forKey: .head)
        try container.encode(RFC3339.format(unixMilliseconds: signedAtMilliseconds), forKey: .signedAt)
        try container.encode(signedAtMilliseconds, forKey: .signedAtMs)
        try container.encode(Data(publicKey).base64EncodedString(), forKey: .publicKey)
        try container.encode(Data(signature).base64EncodedString(), forKey: .signature)
    }
}

extension AuditCheckpoint {
    /// The checkpoints in `text`, one JSON document per line: each line a checkpoint (as
    /// `GET /v1/shards/{id}/checkpoint` answers it) or a line of a user's export, whose
    /// checkpoint lines are taken and whose event lines are passed over. Blank lines are skipped.
    public static func checkpoints(inLines text: String) throws(AuditInputError) -> [AuditCheckpoint] {
        let decoder = JSONDecoder()
        var checkpoints: [AuditCheckpoint] = []
        for (index, line) in text.split(omittingEmptySubsequences: false, whereSeparator: \.isNewline).enumerated() where !line.allSatisfy(\.isWhitespace) {
            let data = Data(line.utf8)
            if let checkpoint = try? decoder.decode(AuditCheckpoint.self, from: data) {
                checkpoints.append(checkpoint)
            } else if let exported = try? decoder.decode(ExportedCheckpoint.self, from: data) {
                checkpoints.append(exported.checkpoint)
            } else if let object = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any], object["id"] != nil, object["userId"] != nil {
                continue
            } else {
                throw AuditInputError(.invalidConfiguration, "line \(index + 1) is neither a checkpoint nor a line of a user's export")
            }
        }
        return checkpoints
    }
}

/// A line of a user's export (`GET /v1/users/{id}/export`) that carries the checkpoint covering the
/// user's rows in one shard, `{"checkpoint": {...}}`, after the event lines.
public struct ExportedCheckpoint: Codable, Sendable, Equatable {
    public var checkpoint: AuditCheckpoint

    public init(checkpoint: AuditCheckpoint) {
        self.checkpoint = checkpoint
    }
}
