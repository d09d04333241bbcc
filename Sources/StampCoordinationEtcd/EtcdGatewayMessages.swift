#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

// The messages of etcd's v3 JSON gateway that the store uses, as the gateway writes them: keys and
// values in base64, 64-bit integers as decimal strings, fields with zero values left out.

/// A key or value as the gateway carries it: base64 of its bytes.
struct EtcdBytes: Codable, Hashable, Sendable {
    let bytes: [UInt8]

    init(_ text: String) {
        bytes = Array(text.utf8)
    }

    init(bytes: [UInt8]) {
        self.bytes = bytes
    }

    /// The bytes as UTF-8 text, `nil` when they are not.
    var text: String? { String(validating: bytes, as: UTF8.self) }

    /// The smallest key above every key that starts with these bytes: the end of a prefix range.
    var prefixEnd: EtcdBytes {
        var end = bytes
        while let last = end.last {
            if last < 0xFF {
                end[end.count - 1] = last + 1
                return EtcdBytes(bytes: end)
            }
            end.removeLast()
        }
        // Every byte is 0xFF: the range runs to the end of the key space, which etcd writes as a zero byte.
        return EtcdBytes(bytes: [0])
    }

    init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        guard let data = Data(base64Encoded: try container.decode(String.self)) else {
            throw DecodingError.dataCorruptedError(in: container, debugDescription: "not base64")
        }
        bytes = Array(data)
    }

    func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(Data(bytes).base64EncodedString())
    }
}

/// A 64-bit integer as the gateway carries it: a decimal string.
struct EtcdInt64: Codable, Hashable, Sendable {
    let value: Int64

    init(_ value: Int64) {
        self.value = value
    }

    init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let number = try? container.decode(Int64.self) {
            value = number
            return
        }
        guard let number = Int64(try container.decode(String.self)) else {
            throw DecodingError.dataCorruptedError(in: container, debugDescription: "not a 64-bit integer")
        }
        value = number
    }

    func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(String(value))
    }
}

/// `RangeRequest`: the key, or every key in `[key, rangeEnd)`.
struct EtcdRangeRequest: Encodable, Sendable {
    var key: EtcdBytes
    var rangeEnd: EtcdBytes?

    enum CodingKeys: String, CodingKey {
        case key
        case rangeEnd = "range_end"
    }
}

/// `RangeResponse`.
struct EtcdRangeResponse: Decodable, Sendable {
    var kvs: [EtcdKeyValue]?
}

/// `mvccpb.KeyValue`.
struct EtcdKeyValue: Decodable, Sendable {
    var key: EtcdBytes
    var value: EtcdBytes?
    var modRevision: EtcdInt64?
    /// The lease the key is bound to; absent (zero) for none.
    var lease: EtcdInt64?

    enum CodingKeys: String, CodingKey {
        case key, value, lease
        case modRevision = "mod_revision"
    }
}

/// `PutRequest`.
struct EtcdPutRequest: Encodable, Sendable {
    var key: EtcdBytes
    var value: EtcdBytes
    var lease: EtcdInt64?
}

/// `DeleteRangeRequest` of one key.
struct EtcdDeleteRequest: Encodable, Sendable {
    var key: EtcdBytes
}

/// `Compare`: a key's modification revision equals a value (0 for a key that does not exist).
struct EtcdCompare: Encodable, Sendable {
    var key: EtcdBytes
    var modRevision: EtcdInt64

    enum CodingKeys: String, CodingKey {
        case key, target, result
        case modRevision = "mod_revision"
    }

    func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(key, forKey: .key)
        try container.encode("MOD", forKey: .target)
        try container.encode("EQUAL", forKey: .result)
        try container.encode(modRevision, forKey: .modRevision)
    }
}

/// `RequestOp`: one operation of a transaction.
enum EtcdOperation: Encodable, Sendable {
    case range(EtcdRangeRequest)
    case put(EtcdPutRequest)
    case delete(EtcdDeleteRequest)

    enum CodingKeys: String, CodingKey {
        case range = "request_range"
        case put = "request_put"
        case delete = "request_delete_range"
    }

    func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        switch self {
        case .range(let request): try container.encode(request, forKey: .range)
        case .put(let request): try container.encode(request, forKey: .put)
        case .delete(let request): try container.encode(request, forKey: .delete)
        }
    }
}

/// `TxnRequest`: if every comparison holds, the success operations, else the failure ones.
struct EtcdTransactionRequest: Encodable, Sendable {
    var compare: [EtcdCompare]
    var success: [EtcdOperation]
    var failure: [EtcdOperation]
}

/// `TxnResponse`.
struct EtcdTransactionResponse: Decodable, Sendable {
    var succeeded: Bool?
    var responses: [Response]?

    /// `ResponseOp`, of which only ranges are read.
    struct Response: Decodable, Sendable {
        var range: EtcdRangeResponse?

        enum CodingKeys: String, CodingKey {
            case range = "response_range"
        }
    }
}

/// `LeaseGrantRequest`; an ID of 0 lets etcd choose.
struct EtcdLeaseGrantRequest: Encodable, Sendable {
    var ttl: EtcdInt64

    enum CodingKeys: String, CodingKey {
        case ttl = "TTL"
    }
}

/// `LeaseGrantResponse`, and the lease of a `LeaseKeepAliveResponse`.
struct EtcdLease: Decodable, Sendable {
    var id: EtcdInt64?
    /// Seconds the lease lasts; absent (zero) when the lease no longer exists.
    var ttl: EtcdInt64?

    enum CodingKeys: String, CodingKey {
        case id = "ID"
        case ttl = "TTL"
    }
}

/// `LeaseKeepAliveRequest` and `LeaseRevokeRequest`.
struct EtcdLeaseRequest: Encodable, Sendable {
    var id: EtcdInt64

    enum CodingKeys: String, CodingKey {
        case id = "ID"
    }
}

/// A streamed answer (`LeaseKeepAlive`): one result or an error.
struct EtcdStreamedLease: Decodable, Sendable {
    var result: EtcdLease?
}

/// `AuthenticateRequest`.
struct EtcdAuthenticateRequest: Encodable, Sendable {
    var name: String
    var password: String
}

/// `AuthenticateResponse`.
struct EtcdAuthenticateResponse: Decodable, Sendable {
    var token: String?
}

/// The body of a refusal: a gRPC status code and message, flat or (in a streamed answer) nested.
struct EtcdGatewayRefusal: Decodable, Sendable {
    var code: Int
    var message: String

    enum CodingKeys: String, CodingKey {
        case code, message, error
        case grpcCode = "grpc_code"
    }

    init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        if let nested = try? container.nestedContainer(keyedBy: CodingKeys.self, forKey: .error) {
            code = try nested.decode(Int.self, forKey: .grpcCode)
            message = try nested.decodeIfPresent(String.self, forKey: .message) ?? ""
        } else {
            code = try container.decode(Int.self, forKey: .code)
            message = try container.decodeIfPresent(String.self, forKey: .message) ?? ""
        }
    }
}
