import Foundation
import StampCore
import StampTesting
import Testing

@Suite("ID value")
struct StampIDTests {
    @Test func decimalAndTextRoundTrip() throws {
        var random = SeededRandom(seed: 42)
        for value in [0, 1, 9, 10, 4_096, Int64.max, Int64.max - 1] + (0..<2000).map({ _ in Int64.random(in: 0...Int64.max, using: &random) }) {
            let id = try #require(StampID(rawValue: value))
            #expect(try StampID(decimal: id.description) == id)
            #expect(id.text.count == 13)
            #expect(try StampID(text: id.text) == id)
            #expect(try StampID(text: id.text.lowercased()) == id)
            if id.text.contains(where: \.isLetter) { #expect(try StampID(parsing: id.text) == id) }
            #expect(try StampID(parsing: id.description) == id)
        }
        #expect(StampID(rawValue: -1) == nil)
    }

    @Test func textOrderEqualsNumericOrder() throws {
        var random = SeededRandom(seed: 3)
        let ids = (0..<5000).map { _ in StampID(rawValue: Int64.random(in: 0...Int64.max, using: &random))! }
        #expect(ids.sorted().map(\.text) == ids.map(\.text).sorted())
        #expect(StampID(rawValue: 0)!.text == "0000000000000")
        #expect(StampID(rawValue: Int64.max)!.text == "7ZZZZZZZZZZZZ")
    }

    @Test(arguments: [
        ("", IDParseError.Code.empty),
        ("-1", .notDecimal),
        ("+1", .notDecimal),
        (" 1", .notDecimal),
        ("1 ", .notDecimal),
        ("1_000", .notDecimal),
        ("0x1F", .notDecimal),
        ("1e3", .notDecimal),
        ("١٢٣", .notDecimal),
        ("007", .leadingZero),
        ("9223372036854775808", .outOfRange),
        ("9999999999999999999", .outOfRange),
        ("12345678901234567890", .tooLong),
        ("123456789012345678901234567890", .tooLong),
    ])
    func malformedDecimalIsRejected(text: String, code: IDParseError.Code) {
        do {
            _ = try StampID(decimal: text)
            Issue.record("'\(text)' was accepted")
        } catch {
            #expect(error.code == code)
            #expect(error.description.contains("is not a Stamp ID"))
        }
    }

    @Test(arguments: [
        ("7ZZZZZZZZZZZ", IDParseError.Code.wrongLength),
        ("7ZZZZZZZZZZZZZ", .wrongLength),
        ("8000000000000", .notBase32),
        ("0000000000I00", .notBase32),
        ("0000000000L00", .notBase32),
        ("0000000000O00", .notBase32),
        ("0000000000U00", .notBase32),
        ("000000000000-", .notBase32),
        ("000000000000 ", .notBase32),
    ])
    func malformedTextIsRejected(text: String, code: IDParseError.Code) {
        do {
            _ = try StampID(text: text)
            Issue.record("'\(text)' was accepted")
        } catch {
            #expect(error.code == code)
        }
    }

    @Test func maximumDecimalIsAccepted() throws {
        #expect(try StampID(decimal: "9223372036854775807").rawValue == Int64.max)
        #expect(try StampID(decimal: "0").rawValue == 0)
    }

    @Test func jsonUsesDecimalStrings() throws {
        struct Envelope: Codable, Equatable { var id: StampID }
        let envelope = Envelope(id: StampID(rawValue: 9_007_199_254_740_993)!)
        let data = try JSONEncoder().encode(envelope)
        #expect(String(decoding: data, as: UTF8.self) == #"{"id":"9007199254740993"}"#)
        #expect(try JSONDecoder().decode(Envelope.self, from: data) == envelope)
        #expect(throws: DecodingError.self) { try JSONDecoder().decode(Envelope.self, from: Data(#"{"id":9007199254740993}"#.utf8)) }
        #expect(throws: DecodingError.self) { try JSONDecoder().decode(Envelope.self, from: Data(#"{"id":"-5"}"#.utf8)) }
    }
}
