import StampCore
import StampTesting
import Testing

@Suite("ID layout")
struct LayoutTests {
    @Test func defaultLayoutMatchesDesign() {
        let layout = IDLayout.default
        #expect(layout.description == "time=41,sequence=12,shard=5,node=5,epoch=2025-01-01T00:00:00Z")
        #expect(layout.idsPerMillisecond == 4096)
        #expect(layout.idsPerSecondPerNode == 4_096_000)
        #expect(layout.shardCount == 32)
        #expect(layout.nodeCount == 32)
        #expect(RFC3339.format(unixMilliseconds: layout.lastUnixMilliseconds) == "2094-09-07T15:47:35.551Z")
    }

    @Test func writtenFormRoundTrips() throws {
        let spec = "time=40,sequence=14,shard=4,node=5,epoch=2024-02-29T12:30:15.250Z"
        let layout = try IDLayout(parsing: spec)
        #expect(layout.timeBits == 40 && layout.sequenceBits == 14 && layout.shardBits == 4 && layout.nodeBits == 5)
        #expect(layout.epochUnixMilliseconds == 1_709_209_815_250)
        #expect(try IDLayout(parsing: layout.description) == layout)
        #expect(try IDLayout(parsing: "node=5,shard=5,epoch=2025-01-01T00:00:00Z,sequence=12,time=41") == .default)
    }

    @Test(arguments: [
        ("", LayoutError.Code.malformedSpec),
        ("time=41,sequence=12,shard=5", .malformedSpec),
        ("time=41,sequence=12,shard=5,node=5", .malformedSpec),
        ("time=41,sequence=12,shard=5,node=5,epoch=2025-01-01T00:00:00Z,color=red", .malformedSpec),
        ("time=41,time=41,sequence=12,shard=5,node=5,epoch=2025-01-01T00:00:00Z", .malformedSpec),
        ("time=41;sequence=12;shard=5;node=5;epoch=2025-01-01T00:00:00Z", .invalidWidth),
        ("time=41,sequence=12,shard=5,node=6,epoch=2025-01-01T00:00:00Z", .wrongTotal),
        ("time=40,sequence=12,shard=5,node=5,epoch=2025-01-01T00:00:00Z", .wrongTotal),
        ("time=42,sequence=-1,shard=11,node=11,epoch=2025-01-01T00:00:00Z", .invalidWidth),
        ("time=x,sequence=12,shard=5,node=5,epoch=2025-01-01T00:00:00Z", .invalidWidth),
        ("time=0,sequence=53,shard=5,node=5,epoch=2025-01-01T00:00:00Z", .invalidWidth),
        ("time=41,sequence=12,shard=5,node=5,epoch=2025-01-01", .invalidEpoch),
        ("time=41,sequence=12,shard=5,node=5,epoch=2025-13-01T00:00:00Z", .invalidEpoch),
        ("time=41,sequence=12,shard=5,node=5,epoch=2025-02-29T00:00:00Z", .invalidEpoch),
        ("time=41,sequence=12,shard=5,node=5,epoch=2025-01-01T00:00:00+01:00", .invalidEpoch),
        ("time=63,sequence=0,shard=0,node=0,epoch=2025-01-01T00:00:00Z", .invalidEpoch),
    ])
    func invalidSpecsAreRejected(spec: String, code: LayoutError.Code) {
        #expect(throws: LayoutError.self) { try IDLayout(parsing: spec) }
        do {
            _ = try IDLayout(parsing: spec)
        } catch {
            #expect(error.code == code, "\(spec): \(error)")
            #expect(!error.message.isEmpty)
        }
    }

    @Test func largestValueOfEveryFieldRoundTrips() throws {
        for spec in ["time=41,sequence=12,shard=5,node=5", "time=31,sequence=22,shard=5,node=5", "time=60,sequence=1,shard=1,node=1", "time=32,sequence=31,shard=0,node=0"] {
            let layout = try IDLayout(parsing: spec + ",epoch=2025-01-01T00:00:00Z")
            let id = StampID(time: layout.maxTime, sequence: layout.maxSequence, shard: layout.maxShard, node: layout.maxNode, layout: layout)
            #expect(id.rawValue == Int64.max)
            let fields = id.fields(in: layout)
            #expect(fields.time == layout.maxTime)
            #expect(fields.sequence == layout.maxSequence)
            #expect(fields.shard == layout.maxShard)
            #expect(fields.node == layout.maxNode)
            let zero = StampID(time: 0, sequence: 0, shard: 0, node: 0, layout: layout)
            #expect(zero.rawValue == 0)
            let mixed = StampID(time: 1, sequence: 0, shard: layout.maxShard, node: 0, layout: layout)
            let mixedFields = mixed.fields(in: layout)
            #expect(mixedFields.time == 1 && mixedFields.sequence == 0 && mixedFields.shard == layout.maxShard && mixedFields.node == 0)
            #expect(mixedFields.unixMilliseconds == layout.epochUnixMilliseconds + 1)
        }
    }

    @Test func lifetimeIsCheckedAgainstNow() throws {
        let layout = try IDLayout(parsing: "time=36,sequence=17,shard=5,node=5,epoch=2025-01-01T00:00:00Z")
        // 2^36 ms is about 795 days: the layout runs out on 2027-03-07.
        #expect(RFC3339.format(unixMilliseconds: layout.lastUnixMilliseconds) == "2027-03-07T08:44:36.735Z")
        let now = RFC3339.parse("2026-11-25T00:00:00Z")!
        try layout.checkLifetime(at: now, minimumLifetimeMilliseconds: 30 * 86_400_000)
        #expect(throws: LayoutError.self) { try layout.checkLifetime(at: now, minimumLifetimeMilliseconds: 365 * 86_400_000) }
        #expect(throws: LayoutError.self) { try IDLayout.default.checkLifetime(at: RFC3339.parse("2024-12-31T23:59:59Z")!, minimumLifetimeMilliseconds: 0) }
    }

    @Test func rfc3339() {
        #expect(RFC3339.format(unixMilliseconds: 0) == "1970-01-01T00:00:00.000Z")
        #expect(RFC3339.format(unixMilliseconds: 951_782_400_123) == "2000-02-29T00:00:00.123Z")
        #expect(RFC3339.parse("2000-02-29T00:00:00.123Z") == 951_782_400_123)
        #expect(RFC3339.parse("2000-02-29T00:00:00.1Z") == 951_782_400_100)
        #expect(RFC3339.parse("2000-02-29T00:00:00.1234Z") == nil)
        #expect(RFC3339.parse("2000-02-30T00:00:00Z") == nil)
        #expect(RFC3339.parse("2000-02-29T24:00:00Z") == nil)
        #expect(RFC3339.parse("2000-02-29 00:00:00Z") == nil)
        var random = SeededRandom(seed: 7)
        for _ in 0..<1000 {
            let value = Int64.random(in: 0...4_102_444_800_000, using: &random)
            #expect(RFC3339.parse(RFC3339.format(unixMilliseconds: value)) == value)
        }
    }
}
