import NIOCore
import StampCore

extension IDBatch {
    /// Writes the JSON document of a batch of `ids` issued by `node` into `buffer`, without
    /// building the value or allocating per ID: the hot path of `GET /v1/ids`.
    ///
    /// The document decodes to the same ``IDBatch`` as the `Codable` form. Inlinable, so that the
    /// server's call is specialized for its collection of IDs.
    @inlinable
    public static func writeJSON(ids: some Collection<StampID>, node: Int, into buffer: inout ByteBuffer) {
        buffer.writeStaticString("{\"ids\":[")
        var first = true
        for id in ids {
            if !first { buffer.writeInteger(UInt8(ascii: ",")) }
            first = false
            buffer.writeInteger(UInt8(ascii: "\""))
            buffer.writeDecimal(id.rawValue)
            buffer.writeInteger(UInt8(ascii: "\""))
        }
        buffer.writeStaticString("],\"node\":")
        buffer.writeDecimal(Int64(node))
        buffer.writeInteger(UInt8(ascii: "}"))
    }
}

extension ByteBuffer {
    /// Writes a non-negative integer in decimal without allocating.
    @inlinable
    public mutating func writeDecimal(_ value: Int64) {
        var digits: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) = (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        var remaining = UInt64(value)
        var count = 0
        withUnsafeMutableBytes(of: &digits) { bytes in
            repeat {
                bytes[19 - count] = UInt8(ascii: "0") + UInt8(remaining % 10)
                remaining /= 10
                count += 1
            } while remaining > 0
            writeBytes(UnsafeRawBufferPointer(rebasing: bytes[(20 - count)...]))
        }
    }
}
