/// The bit layout of a Stamp ID: field widths and the epoch of the time field.
///
/// From the most significant bit down (bit 63 is always zero): time, sequence, shard, node.
/// Sequence sits above shard and node so that one node's IDs rise strictly whatever shard
/// each is for. The default is `time=41,sequence=12,shard=5,node=5,epoch=2025-01-01T00:00:00Z`.
public struct IDLayout: Sendable, Hashable, CustomStringConvertible {
    /// Width of the time field: milliseconds since ``epochUnixMilliseconds``.
    public let timeBits: Int
    /// Width of the per-millisecond sequence counter.
    public let sequenceBits: Int
    /// Width of the shard (database) field.
    public let shardBits: Int
    /// Width of the generator node field.
    public let nodeBits: Int
    /// The instant that time value 0 stands for, in Unix milliseconds.
    public let epochUnixMilliseconds: Int64

    /// The layout of DESIGN.md: 41 bits of milliseconds from 2025-01-01, 12 of sequence, 5 of shard, 5 of node.
    public static let `default` = try! IDLayout(timeBits: 41, sequenceBits: 12, shardBits: 5, nodeBits: 5, epochUnixMilliseconds: 1_735_689_600_000)

    /// Creates a layout after checking that the widths sum to 63 and every field can hold its values.
    public init(timeBits: Int, sequenceBits: Int, shardBits: Int, nodeBits: Int, epochUnixMilliseconds: Int64) throws(LayoutError) {
        for (name, width) in [("time", timeBits), ("sequence", sequenceBits), ("shard", shardBits), ("node", nodeBits)] where width < 0 {
            throw LayoutError(.invalidWidth, "\(name) width \(width) is negative")
        }
        guard timeBits >= 1 else { throw LayoutError(.invalidWidth, "time needs at least 1 bit") }
        let total = timeBits + sequenceBits + shardBits + nodeBits
        guard total == 63 else {
            throw LayoutError(.wrongTotal, "field widths sum to \(total) bits; they must sum to 63 (bit 63 stays zero)")
        }
        // The epoch must be representable and the time field must not overflow Unix milliseconds.
        guard epochUnixMilliseconds >= 0, epochUnixMilliseconds <= Int64.max - (Int64.max >> (63 - timeBits)) else {
            throw LayoutError(.invalidEpoch, "epoch must lie between 1970-01-01 and a date the time field can reach")
        }
        self.timeBits = timeBits
        self.sequenceBits = sequenceBits
        self.shardBits = shardBits
        self.nodeBits = nodeBits
        self.epochUnixMilliseconds = epochUnixMilliseconds
    }

    /// Parses the written form `time=41,sequence=12,shard=5,node=5,epoch=2025-01-01T00:00:00Z`.
    ///
    /// Every key must appear exactly once; the epoch is an RFC 3339 UTC time.
    public init(parsing spec: String) throws(LayoutError) {
        var widths: [String: Int] = [:]
        var epoch: Int64?
        let parts = spec.split(separator: ",", omittingEmptySubsequences: false)
        for part in parts {
            let pair = part.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard pair.count == 2 else {
                throw LayoutError(.malformedSpec, "'\(part)' is not key=value; expected time=41,sequence=12,shard=5,node=5,epoch=2025-01-01T00:00:00Z")
            }
            let key = String(pair[0]), value = String(pair[1])
            switch key {
            case "time", "sequence", "shard", "node":
                guard widths[key] == nil else { throw LayoutError(.malformedSpec, "'\(key)' appears twice") }
                guard !value.isEmpty, value.utf8.count <= 2, value.utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }), let width = Int(value) else {
                    throw LayoutError(.invalidWidth, "\(key) width '\(value)' is not a whole number of bits from 0 to 63")
                }
                widths[key] = width
            case "epoch":
                guard epoch == nil else { throw LayoutError(.malformedSpec, "'epoch' appears twice") }
                guard let parsed = RFC3339.parse(value) else {
                    throw LayoutError(.invalidEpoch, "epoch '\(value)' is not an RFC 3339 UTC time such as 2025-01-01T00:00:00Z")
                }
                epoch = parsed
            default:
                throw LayoutError(.malformedSpec, "unknown key '\(key)'; the keys are time, sequence, shard, node, epoch")
            }
        }
        for key in ["time", "sequence", "shard", "node"] where widths[key] == nil {
            throw LayoutError(.malformedSpec, "'\(key)' is missing; expected time=41,sequence=12,shard=5,node=5,epoch=2025-01-01T00:00:00Z")
        }
        guard let epoch else { throw LayoutError(.malformedSpec, "'epoch' is missing") }
        try self.init(timeBits: widths["time"]!, sequenceBits: widths["sequence"]!, shardBits: widths["shard"]!, nodeBits: widths["node"]!, epochUnixMilliseconds: epoch)
    }

    /// The written form, which ``init(parsing:)`` reads back.
    public var description: String {
        let epoch = RFC3339.format(unixMilliseconds: epochUnixMilliseconds).replacingSuffix(".000Z", with: "Z")
        return "time=\(timeBits),sequence=\(sequenceBits),shard=\(shardBits),node=\(nodeBits),epoch=\(epoch)"
    }

    /// Largest time value (milliseconds since the epoch).
    public var maxTime: Int64 { Int64.max >> (63 - timeBits) }
    /// Largest sequence value.
    public var maxSequence: Int64 { Int64.max >> (63 - sequenceBits) }
    /// Largest shard ID.
    public var maxShard: Int { (1 << shardBits) - 1 }
    /// Largest node ID.
    public var maxNode: Int { (1 << nodeBits) - 1 }
    /// IDs one node can issue per millisecond.
    public var idsPerMillisecond: Int64 { 1 << Int64(sequenceBits) }
    /// IDs one node can issue per second: the layout's ceiling for one node.
    public var idsPerSecondPerNode: Int64 { idsPerMillisecond * 1000 }
    /// Number of distinct shards.
    public var shardCount: Int { 1 << shardBits }
    /// Number of distinct generator nodes.
    public var nodeCount: Int { 1 << nodeBits }
    /// The last Unix millisecond the time field can hold; IDs cannot be issued after it.
    public var lastUnixMilliseconds: Int64 { epochUnixMilliseconds + maxTime }

    var sequenceShift: Int64 { Int64(shardBits + nodeBits) }
    var timeShift: Int64 { Int64(sequenceBits + shardBits + nodeBits) }
    var shardShift: Int64 { Int64(nodeBits) }

    /// Checks that the layout can be used at `unixMilliseconds`: the epoch has passed and at least
    /// `minimumLifetimeMilliseconds` remain before the time field runs out.
    public func checkLifetime(at unixMilliseconds: Int64, minimumLifetimeMilliseconds: Int64) throws(LayoutError) {
        guard unixMilliseconds >= epochUnixMilliseconds else {
            throw LayoutError(.invalidEpoch, "epoch \(RFC3339.format(unixMilliseconds: epochUnixMilliseconds)) is in the future")
        }
        let remaining = lastUnixMilliseconds - unixMilliseconds
        guard remaining >= minimumLifetimeMilliseconds else {
            throw LayoutError(.lifetimeTooShort, "the time field runs out at \(RFC3339.format(unixMilliseconds: lastUnixMilliseconds)), \(remaining / 86_400_000) days from now; at least \(minimumLifetimeMilliseconds / 86_400_000) days are required")
        }
    }
}

/// Why a layout was rejected.
public struct LayoutError: Error, Hashable, CustomStringConvertible {
    /// Stable codes for layout errors.
    public enum Code: String, Sendable {
        case malformedSpec = "malformed-spec"
        case invalidWidth = "invalid-width"
        case wrongTotal = "wrong-total"
        case invalidEpoch = "invalid-epoch"
        case lifetimeTooShort = "lifetime-too-short"
    }

    public let code: Code
    /// A message safe to show to users.
    public let message: String

    init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "invalid layout: \(message)" }
}

extension String {
    func replacingSuffix(_ suffix: String, with replacement: String) -> String {
        hasSuffix(suffix) ? String(dropLast(suffix.count)) + replacement : self
    }
}
