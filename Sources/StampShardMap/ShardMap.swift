import Foundation
import StampCore
import StampDatabase

/// A versioned mapping of users to shards and of shards to databases.
///
/// A user's slot is a stable hash of the user ID (64-bit FNV-1a over its UTF-8 bytes) modulo
/// ``slotCount``; each slot range is assigned to one shard, which takes that user's new rows.
/// Moving a slot range to another shard (adding a database) is a new version in which the
/// assignment lists the former owners in `previous`: rows already written there stay readable
/// where their ID says they are, and reads of the user's history look in every one of them.
///
/// The JSON document:
/// ```json
/// {"version": 2, "slots": 1024,
///  "shards": [{"id": 0, "database": "sqlite:shard-0.sqlite", "state": "active"}, ...],
///  "assignments": [{"slots": "0-767", "shard": 0}, {"slots": "768-1023", "shard": 3, "previous": [0]}]}
/// ```
public struct ShardMap: Sendable, Equatable, Codable {
    /// Whether a shard takes new rows.
    public enum State: String, Sendable, Codable {
        /// Takes new rows of the users assigned to it, and serves reads.
        case active
        /// Serves reads only; no slot may be assigned to it.
        case readOnly = "read-only"
    }

    /// One database.
    public struct Shard: Sendable, Equatable, Codable {
        /// The shard (database) ID written into every ID of a row stored there.
        public var id: Int
        /// Where the shard's database lives, written `sqlite:PATH` (a relative path is taken from the
        /// map file's folder) or `postgres://...`.
        public var database: DatabaseLocation
        public var state: State

        public init(id: Int, database: DatabaseLocation, state: State = .active) {
            self.id = id
            self.database = database
            self.state = state
        }
    }

    /// A range of slots and the shard that takes their users' new rows.
    public struct Assignment: Sendable, Equatable, Codable {
        /// The first and last slot, inclusive; written `"FIRST-LAST"` or `"SLOT"`.
        public var slots: ClosedRange<Int>
        public var shard: Int
        /// Shards that held these slots before, oldest first: their rows are still read.
        public var previous: [Int]

        public init(slots: ClosedRange<Int>, shard: Int, previous: [Int] = []) {
            self.slots = slots
            self.shard = shard
            self.previous = previous
        }

        enum CodingKeys: String, CodingKey { case slots, shard, previous }

        public init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            let text = try container.decode(String.self, forKey: .slots)
            guard let range = Self.parseRange(text) else {
                throw DecodingError.dataCorruptedError(forKey: .slots, in: container, debugDescription: "slots must be FIRST-LAST or SLOT; got '\(text)'")
            }
            slots = range
            shard = try container.decode(Int.self, forKey: .shard)
            previous = try container.decodeIfPresent([Int].self, forKey: .previous) ?? []
        }

        public func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encode(slots.lowerBound == slots.upperBound ? "\(slots.lowerBound)" : "\(slots.lowerBound)-\(slots.upperBound)", forKey: .slots)
            try container.encode(shard, forKey: .shard)
            if !previous.isEmpty { try container.encode(previous, forKey: .previous) }
        }

        static func parseRange(_ text: String) -> ClosedRange<Int>? {
            let parts = text.split(separator: "-", omittingEmptySubsequences: false)
            guard parts.count <= 2, let first = parts.first.flatMap({ Int($0) }) else { return nil }
            let last = parts.count == 2 ? Int(parts[1]) : first
            guard let last, first >= 0, first <= last else { return nil }
            return first...last
        }
    }

    /// Rises with every change; nodes and servers only ever move to a higher version.
    public var version: Int
    /// The number of slots users hash into; fixed for the life of a cluster.
    public var slotCount: Int
    public var shards: [Shard]
    public var assignments: [Assignment]

    enum CodingKeys: String, CodingKey {
        case version
        case slotCount = "slots"
        case shards, assignments
    }

    public init(version: Int, slotCount: Int, shards: [Shard], assignments: [Assignment]) {
        self.version = version
        self.slotCount = slotCount
        self.shards = shards
        self.assignments = assignments
    }

    /// A first version spreading `slotCount` slots evenly over `databases`, given shard IDs 0, 1, ...
    public static func even(databases: [DatabaseLocation], slotCount: Int = 1024) -> ShardMap {
        let shards = databases.enumerated().map { Shard(id: $0.offset, database: $0.element) }
        let assignments = shards.indices.map { index in
            Assignment(slots: (slotCount * index / shards.count)...(slotCount * (index + 1) / shards.count - 1), shard: index)
        }
        return ShardMap(version: 1, slotCount: slotCount, shards: shards, assignments: assignments)
    }

    /// Where the rows of a user go and where they may be.
    public struct Placement: Sendable, Equatable {
        /// The shard that takes the user's new rows.
        public var write: Int
        /// Every shard that may hold the user's rows: `write` first, then former owners, newest first.
        public var read: [Int]

        public init(write: Int, read: [Int]) {
            self.write = write
            self.read = read
        }
    }

    /// The slot of `user`: 64-bit FNV-1a of its UTF-8 bytes, modulo ``slotCount``.
    public func slot(ofUser user: String) -> Int {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in user.utf8 {
            hash ^= UInt64(byte)
            hash &*= 0x0000_0100_0000_01b3
        }
        return Int(hash % UInt64(slotCount))
    }

    /// Where the rows of `user` go and may be found. The map must be valid.
    public func placement(ofUser user: String) -> Placement {
        let slot = slot(ofUser: user)
        let assignment = assignments.first { $0.slots.contains(slot) }!
        var read = [assignment.shard]
        for shard in assignment.previous.reversed() where !read.contains(shard) {
            read.append(shard)
        }
        return Placement(write: assignment.shard, read: read)
    }

    /// The shard with ID `id`, if the map knows it.
    public func shard(id: Int) -> Shard? {
        shards.first { $0.id == id }
    }

    /// Whether the map lists shard `id`.
    public func knows(shard id: Int) -> Bool {
        shards.contains { $0.id == id }
    }

    /// Checks the map against the ID layout: shard IDs unique and within the layout, every slot
    /// assigned exactly once to an active shard, former owners known.
    public func validate(layout: IDLayout) throws(ShardMapError) {
        guard version >= 1 else { throw ShardMapError(.invalid, "version must be 1 or more; got \(version)") }
        guard (1...1_048_576).contains(slotCount) else { throw ShardMapError(.invalid, "slots must be between 1 and 1048576; got \(slotCount)") }
        guard !shards.isEmpty else { throw ShardMapError(.invalid, "the map lists no shard") }
        var seen = Set<Int>()
        for shard in shards {
            guard (0...layout.maxShard).contains(Int(shard.id)) else {
                throw ShardMapError(.invalid, "shard \(shard.id) is outside the layout's shard range 0...\(layout.maxShard)")
            }
            guard seen.insert(shard.id).inserted else { throw ShardMapError(.invalid, "shard \(shard.id) is listed twice") }
        }
        var covered = 0
        for assignment in assignments.sorted(by: { $0.slots.lowerBound < $1.slots.lowerBound }) {
            guard assignment.slots.lowerBound == covered else {
                throw ShardMapError(.invalid, covered < assignment.slots.lowerBound ? "slot \(covered) is not assigned" : "slot \(assignment.slots.lowerBound) is assigned twice")
            }
            guard assignment.slots.upperBound < slotCount else {
                throw ShardMapError(.invalid, "slot \(assignment.slots.upperBound) is beyond the \(slotCount) slots")
            }
            guard let owner = shard(id: assignment.shard) else {
                throw ShardMapError(.invalid, "slots \(assignment.slots) are assigned to unknown shard \(assignment.shard)")
            }
            guard owner.state == .active else {
                throw ShardMapError(.invalid, "slots \(assignment.slots) are assigned to read-only shard \(assignment.shard)")
            }
            if let unknown = assignment.previous.first(where: { shard(id: $0) == nil }) {
                throw ShardMapError(.invalid, "slots \(assignment.slots) name unknown former shard \(unknown)")
            }
            covered = assignment.slots.upperBound + 1
        }
        guard covered == slotCount else { throw ShardMapError(.invalid, "slot \(covered) is not assigned") }
    }

    /// Decodes and validates a map document.
    public static func decode(_ data: Data, layout: IDLayout) throws(ShardMapError) -> ShardMap {
        let map: ShardMap
        do {
            map = try JSONDecoder().decode(ShardMap.self, from: data)
        } catch let error as DecodingError {
            throw ShardMapError(.invalid, "not a shard map: \(Self.describe(error))")
        } catch {
            throw ShardMapError(.invalid, "not a shard map")
        }
        try map.validate(layout: layout)
        return map
    }

    /// The map as pretty JSON with sorted keys.
    public func encoded() -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        return try! encoder.encode(self)
    }

    private static func describe(_ error: DecodingError) -> String {
        switch error {
        case .dataCorrupted(let context), .keyNotFound(_, let context), .typeMismatch(_, let context), .valueNotFound(_, let context):
            let path = context.codingPath.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".")
            return path.isEmpty ? context.debugDescription : "\(path): \(context.debugDescription)"
        @unknown default:
            return "\(error)"
        }
    }
}

/// Why a shard map cannot be used.
public struct ShardMapError: Error, Sendable, CustomStringConvertible {
    public enum Code: String, Sendable {
        /// The document is not a valid map.
        case invalid
        /// The file cannot be read.
        case unreadable
    }

    public let code: Code
    /// A message safe to show.
    public let message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "\(code.rawValue): \(message)" }
}
