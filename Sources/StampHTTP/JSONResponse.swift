import Foundation
import Hummingbird
import NIOCore

/// The JSON encoding of the servers' answers.
enum APIEncoding {
    /// Compact JSON, members sorted by name (the same bytes for the same value), `/` unescaped.
    static var encoder: JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return encoder
    }
}

extension Response {
    /// An `application/json` answer of `value`, not to be cached.
    public static func json(_ value: some Encodable, status: HTTPResponse.Status = .ok, headers: HTTPFields = [:]) throws -> Response {
        Response(DirectResponse.json(document: ByteBuffer(data: try APIEncoding.encoder.encode(value)), status: status, headers: headers))
    }
}
