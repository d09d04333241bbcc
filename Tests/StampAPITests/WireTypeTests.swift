import Foundation
import NIOCore
import StampAPI
import StampCore
import Testing

@Suite("Wire types")
struct WireTypeTests {
    static func decode<T: Decodable>(_ type: T.Type, _ text: String) throws -> T {
        try JSONDecoder().decode(type, from: Data(text.utf8))
    }

    static func encoded(_ value: some Encodable) throws -> String {
        String(decoding: try JSONEncoder().encode(value), as: UTF8.self)
    }

    /// Batches of none, one and many IDs, the smallest and the largest ID, nodes 0 and 31.
    static let batches: [IDBatch] = [
        IDBatch(ids: [], node: 0),
        IDBatch(ids: [StampID(rawValue: 1)!], node: 31),
        IDBatch(ids: [StampID(rawValue: 0)!, StampID(rawValue: Int64.max)!], node: 7),
        IDBatch(ids: (0..<1000).map { StampID(rawValue: 251_394_882_554_298_368 + Int64($0) * 4096)! }, node: 3),
    ]

    /// The hand-written encoder of the `/v1/ids` hot path writes a document that decodes to the
    /// same batch as the `Codable` form, and the `Codable` form decodes to the batch it encodes.
    @Test(arguments: batches)
    func handWrittenBatchDecodesLikeTheCodableForm(batch: IDBatch) throws {
        var buffer = ByteBuffer()
        IDBatch.writeJSON(ids: batch.ids, node: batch.node, into: &buffer)
        let handWritten = try JSONDecoder().decode(IDBatch.self, from: Data(buffer.readableBytesView))
        let codable = try JSONDecoder().decode(IDBatch.self, from: JSONEncoder().encode(batch))
        #expect(handWritten == batch)
        #expect(codable == batch)
    }

    /// IDs travel as decimal strings, not numbers (JavaScript loses precision above 2^53).
    @Test func idsAreDecimalStrings() throws {
        var buffer = ByteBuffer()
        IDBatch.writeJSON(ids: [StampID(rawValue: Int64.max)!], node: 2, into: &buffer)
        #expect(String(buffer: buffer) == #"{"ids":["9223372036854775807"],"node":2}"#)
        #expect(try Self.encoded(IDBatch(ids: [StampID(rawValue: 42)!], node: 2)).contains(#"["42"]"#))
        #expect(throws: DecodingError.self) { try Self.decode(IDBatch.self, #"{"ids":[42],"node":2}"#) }
    }

    /// The cluster document writes absent values as `null`, as the OpenAPI document requires.
    @Test func clusterStatusWritesNulls() throws {
        let status = ClusterStatus(layout: "t41-s12-h5-n5@2025-01-01T00:00:00Z", idsPerMillisecond: 4096, maxLeadMilliseconds: 1000, node: nil, ready: false, nodes: [.init(node: 1, address: nil, expiresAt: "2026-01-01T00:00:10.000Z")])
        let text = try Self.encoded(status)
        #expect(text.contains(#""node":null"#))
        #expect(text.contains(#""address":null"#))
        #expect(try Self.decode(ClusterStatus.self, text) == status)
    }

    /// An event shows values only when it has them, and then each as `null` when the change had none.
    @Test(arguments: [nil, AuditEvent.Values(before: nil, after: "new"), AuditEvent.Values(before: "old", after: nil)])
    func auditEventValuesAreShownOnlyWhenPresent(values: AuditEvent.Values?) throws {
        let event = AuditEvent(id: StampID(rawValue: 99)!, userId: "alice", field: "email", actor: "support:42", reason: "", shard: 1, recordedAt: "2026-01-01T00:00:00.000Z", values: values)
        let text = try Self.encoded(event)
        #expect(text.contains(#""before""#) == (values != nil))
        #expect(text.contains(#""after""#) == (values != nil))
        #expect(try Self.decode(AuditEvent.self, text) == event)
        let page = AuditEventPage(events: [event], next: nil)
        #expect(!(try Self.encoded(page)).contains("next"))
        #expect(try Self.decode(AuditEventPage.self, try Self.encoded(AuditEventPage(events: [event], next: event.id))).next == event.id)
    }

    /// A write body without `before`, `after` or `reason` reads them as absent; an encoded one
    /// writes `before` and `after` as `null`.
    @Test func auditEventWriteReadsMissingMembersAsAbsent() throws {
        let write = try Self.decode(AuditEventWrite.self, #"{"field":"email","actor":"support:42"}"#)
        #expect(write == AuditEventWrite(field: "email", before: nil, after: nil, actor: "support:42"))
        let text = try Self.encoded(AuditEventWrite(field: "email", before: nil, after: "x", actor: "a"))
        #expect(text.contains(#""before":null"#) && !text.contains("reason"))
        #expect(throws: DecodingError.self) { try Self.decode(AuditEventWrite.self, #"{"field":"email","before":1,"actor":"a"}"#) }
    }

    /// Problem documents round-trip; a document without `type` is `about:blank`, as RFC 9457 says.
    @Test func problemDetails() throws {
        let problem = ProblemDetails(type: .afterTooFarAhead, title: "Conflict", status: 409, detail: "after is ahead")
        let decoded = try Self.decode(ProblemDetails.self, try Self.encoded(problem))
        #expect(decoded == problem)
        #expect(decoded.is(.afterTooFarAhead))
        #expect(decoded.type == "urn:stamp:problem:after-too-far-ahead")
        let bare = try Self.decode(ProblemDetails.self, #"{"detail":"no type"}"#)
        #expect(bare.type == "about:blank" && bare.detail == "no type" && bare.status == nil)
    }

    @Test func healthStatusOmitsWhatDoesNotApply() throws {
        #expect(try Self.encoded(HealthStatus(status: .live)) == #"{"status":"live"}"#)
        #expect(try Self.decode(HealthStatus.self, #"{"status":"ready","node":3}"#) == HealthStatus(status: .ready, node: 3))
    }
}

/// The hand-written writer of an audit write's answer writes the very bytes of the `Codable` form.
@Suite struct AuditEventJSONTests {
    static let texts = ["", "alice", "support:42", "a \"quoted\" back\\slash / slash", "line\nbreak\ttab\r\u{8}\u{c}", "\u{0}\u{1}\u{1f}\u{7f}", "é ü 🙂 \u{2028}", String(repeating: "x", count: 300)]

    static let events: [AuditEvent] = texts.flatMap { text in
        [
            AuditEvent(id: StampID(rawValue: 251_394_882_554_298_368)!, userId: text, field: "email", actor: text, reason: text, shard: 3, recordedAt: "2026-12-01T17:00:00.000Z", values: nil),
            AuditEvent(id: StampID(rawValue: 0)!, userId: "u", field: text, actor: "a", reason: "", shard: 0, recordedAt: "2025-01-01T00:00:00.000Z", values: .init(before: text, after: nil)),
            AuditEvent(id: StampID(rawValue: Int64.max)!, userId: "u", field: "f", actor: "a", reason: "r", shard: 31, recordedAt: "x", values: .init(before: nil, after: text)),
            AuditEvent(id: StampID(rawValue: 7)!, userId: text, field: "f", actor: "a", reason: text, shard: 1, recordedAt: "x", values: nil, erased: true),
        ]
    }

    @Test(arguments: events)
    func handWrittenIsTheCodableBytes(event: AuditEvent) throws {
        var buffer = ByteBuffer()
        event.writeJSON(into: &buffer)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        #expect(String(buffer: buffer) == String(decoding: try encoder.encode(event), as: UTF8.self))
        #expect(try JSONDecoder().decode(AuditEvent.self, from: Data(buffer.readableBytesView)) == event)
    }
}
