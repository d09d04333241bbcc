import NIOCore
import StampCore

extension AuditEvent {
    /// Writes the event's JSON document into `buffer` without building it through `Encoder`: the
    /// answer of every audit write.
    ///
    /// The bytes are those the servers' `Codable` encoding writes (compact, members sorted by
    /// name, `/` unescaped); a test holds the two together.
    public func writeJSON(into buffer: inout ByteBuffer) {
        buffer.writeStaticString("{\"actor\":")
        buffer.writeJSONString(actor)
        if let values {
            buffer.writeStaticString(",\"after\":")
            buffer.writeJSONString(values.after)
            buffer.writeStaticString(",\"before\":")
            buffer.writeJSONString(values.before)
        }
        if erased {
            buffer.writeStaticString(",\"erased\":true")
        }
        buffer.writeStaticString(",\"field\":")
        buffer.writeJSONString(field)
        buffer.writeStaticString(",\"id\":\"")
        buffer.writeDecimal(id.rawValue)
        buffer.writeStaticString("\",\"reason\":")
        buffer.writeJSONString(reason)
        buffer.writeStaticString(",\"recordedAt\":")
        buffer.writeJSONString(recordedAt)
        buffer.writeStaticString(",\"shard\":")
        buffer.writeDecimal(Int64(shard))
        buffer.writeStaticString(",\"userId\":")
        buffer.writeJSONString(userId)
        buffer.writeInteger(UInt8(ascii: "}"))
    }
}

extension ByteBuffer {
    /// Writes `text` as a JSON string, or `null` when it is `nil`: quotes, backslashes and control
    /// characters escaped as Foundation's `JSONEncoder` escapes them, everything else as UTF-8.
    public mutating func writeJSONString(_ text: String?) {
        guard var text else {
            writeStaticString("null")
            return
        }
        writeInteger(UInt8(ascii: "\""))
        text.withUTF8 { bytes in
            var start = 0
            for (index, byte) in bytes.enumerated() where byte < 0x20 || byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") {
                writeBytes(UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(bytes)[start..<index]))
                start = index + 1
                switch byte {
                case UInt8(ascii: "\""): writeStaticString("\\\"")
                case UInt8(ascii: "\\"): writeStaticString("\\\\")
                case 0x08: writeStaticString("\\b")
                case 0x09: writeStaticString("\\t")
                case 0x0A: writeStaticString("\\n")
                case 0x0C: writeStaticString("\\f")
                case 0x0D: writeStaticString("\\r")
                default:
                    let hex: StaticString = "0123456789abcdef"
                    writeStaticString("\\u00")
                    writeInteger(hex.utf8Start[Int(byte >> 4)])
                    writeInteger(hex.utf8Start[Int(byte & 0x0F)])
                }
            }
            writeBytes(UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(bytes)[start...]))
        }
        writeInteger(UInt8(ascii: "\""))
    }
}
