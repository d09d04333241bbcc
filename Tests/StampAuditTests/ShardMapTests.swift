import Foundation
import Logging
import StampCore
import StampDatabase
import StampShardMap
import StampTesting
import Synchronization
import Testing

@Suite struct ShardMapTests {
    let layout = IDLayout.default

    @Test func evenMapAssignsEverySlotOnceAndValidates() throws {
        let map = ShardMap.even(databases: [.sqlite(path: "a"), .sqlite(path: "b"), .sqlite(path: "c")], slotCount: 1024)
        try map.validate(layout: layout)
        #expect(map.assignments.map(\.slots) == [0...340, 341...681, 682...1023])
        var counts = [0, 0, 0]
        for user in 0..<30_000 {
            counts[map.placement(ofUser: "user-\(user)").write] += 1
        }
        // A stable hash spreads users evenly: each shard within 5 % of a third.
        #expect(counts.allSatisfy { abs($0 - 10_000) < 500 }, "\(counts)")
    }

    @Test func slotsAreStableAcrossRuns() {
        // FNV-1a 64 of the UTF-8 bytes: fixed values, never Swift's per-process seeded hash.
        let map = ShardMap.even(databases: [.sqlite(path: "a")], slotCount: 1024)
        #expect(map.slot(ofUser: "") == Int(0xcbf2_9ce4_8422_2325 % UInt64(1024)))
        #expect(map.slot(ofUser: "alice") == map.slot(ofUser: "alice"))
        #expect(map.slot(ofUser: "a") == Int(0xaf63_dc4c_8601_ec8c % UInt64(1024)))
    }

    @Test func jsonRoundTripsAndDecodes() throws {
        let text = """
        {"version": 2, "slots": 8,
         "shards": [{"id": 0, "database": "sqlite:s0.sqlite", "state": "active"},
                    {"id": 3, "database": "postgres://u@127.0.0.1:5432/s3", "state": "active"}],
         "assignments": [{"slots": "0-5", "shard": 0}, {"slots": "6-7", "shard": 3, "previous": [0]}]}
        """
        let map = try ShardMap.decode(Data(text.utf8), layout: layout)
        #expect(map.version == 2)
        #expect(map.shards.map(\.database) == [.sqlite(path: "s0.sqlite"), .postgres(url: "postgres://u@127.0.0.1:5432/s3")])
        #expect(map.assignments[1].slots == 6...7)
        #expect(try ShardMap.decode(map.encoded(), layout: layout) == map)
        let moved = (0..<1000).map { "u\($0)" }.first { map.slot(ofUser: $0) >= 6 }!
        #expect(map.placement(ofUser: moved) == ShardMap.Placement(write: 3, read: [3, 0]))
        let stayed = (0..<1000).map { "u\($0)" }.first { map.slot(ofUser: $0) < 6 }!
        #expect(map.placement(ofUser: stayed) == ShardMap.Placement(write: 0, read: [0]))
    }

    @Test(arguments: [
        (#"{"version": 1, "slots": 4, "shards": [{"id": 0, "database": "sqlite:a", "state": "active"}], "assignments": [{"slots": "0-2", "shard": 0}]}"#, "slot 3 is not assigned"),
        (#"{"version": 1, "slots": 4, "shards": [{"id": 0, "database": "sqlite:a", "state": "active"}], "assignments": [{"slots": "0-3", "shard": 0}, {"slots": "2", "shard": 0}]}"#, "assigned twice"),
        (#"{"version": 1, "slots": 4, "shards": [{"id": 40, "database": "sqlite:a", "state": "active"}], "assignments": [{"slots": "0-3", "shard": 40}]}"#, "outside the layout"),
        (#"{"version": 1, "slots": 4, "shards": [{"id": 0, "database": "sqlite:a", "state": "read-only"}], "assignments": [{"slots": "0-3", "shard": 0}]}"#, "read-only"),
        (#"{"version": 1, "slots": 4, "shards": [{"id": 0, "database": "mysql://a", "state": "active"}], "assignments": [{"slots": "0-3", "shard": 0}]}"#, "sqlite:PATH or postgres"),
        (#"{"version": 1, "slots": 4, "shards": [{"id": 0, "database": "sqlite:a", "state": "active"}], "assignments": [{"slots": "0-3", "shard": 1}]}"#, "unknown shard 1"),
        (#"{"version": 1, "slots": 4, "shards": [{"id": 0, "database": "sqlite:a", "state": "active"}], "assignments": [{"slots": "3-1", "shard": 0}]}"#, "FIRST-LAST"),
        (#"{"version": 0, "slots": 4, "shards": [{"id": 0, "database": "sqlite:a", "state": "active"}], "assignments": [{"slots": "0-3", "shard": 0}]}"#, "version must be 1"),
        (#"{"version": 1, "slots": 4, "shards": [{"id": 0, "database": "sqlite:", "state": "active"}], "assignments": [{"slots": "0-3", "shard": 0}]}"#, "needs a path"),
        (#"[1, 2]"#, "not a shard map"),
    ])
    func invalidMapsAreRefusedWithTheReason(text: String, reason: String) {
        #expect {
            try ShardMap.decode(Data(text.utf8), layout: layout)
        } throws: { error in
            (error as? ShardMapError).map { $0.code == .invalid && $0.message.contains(reason) } ?? false
        }
    }

    @Test func aMalformedDatabaseIsRefusedWithoutRepeatingIt() {
        let text = #"{"version": 1, "slots": 4, "shards": [{"id": 0, "database": "mysql://u:MARKER-7f3a@h/d", "state": "active"}], "assignments": [{"slots": "0-3", "shard": 0}]}"#
        let error = #expect(throws: ShardMapError.self) {
            try ShardMap.decode(Data(text.utf8), layout: layout)
        }
        #expect(error?.message.contains("shards.[0].database") == true, "\(error.map(\.message) ?? "")")
        #expect(error?.message.contains("MARKER") == false)
    }

    @Test func aPasswordInADatabaseIsRefusedNamingWhereItGoesInstead() {
        let text = #"{"version": 1, "slots": 4, "shards": [{"id": 0, "database": "postgres://audit:MARKER-7f3a@db.internal/audit", "state": "active"}], "assignments": [{"slots": "0-3", "shard": 0}]}"#
        let error = #expect(throws: ShardMapError.self) {
            try ShardMap.decode(Data(text.utf8), layout: layout)
        }
        let message = error.map(\.message) ?? ""
        #expect(message.contains("shards.[0].database"), "\(message)")
        #expect(message.contains("must not hold a password") && message.contains("PGPASSWORD") && message.contains("PGPASSFILE"), "\(message)")
        #expect(!message.contains("MARKER"))
    }

    @Test func sourceMovesOnlyForwardAndPreparesFirst() async throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("stamp-map-\(UUID())")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let path = folder.appendingPathComponent("map.json").path
        var map = ShardMap.even(databases: [.sqlite(path: "a"), .sqlite(path: "b")], slotCount: 16)
        try map.write(to: path)
        let prepared = PreparedVersions()
        let clock = ManualClock()
        let source = try ShardMapSource(path: path, layout: layout, clock: clock, logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })) { map in
            try prepared.record(map.version)
        }
        #expect(source.current.version == 1)

        // A new version: prepared, then published.
        map.version = 2
        map.shards.append(ShardMap.Shard(id: 2, database: .sqlite(path: "c")))
        map.assignments = [ShardMap.Assignment(slots: 0...7, shard: 0), ShardMap.Assignment(slots: 8...11, shard: 1), ShardMap.Assignment(slots: 12...15, shard: 2, previous: [1])]
        try map.write(to: path)
        #expect(await source.refreshIfChanged().version == 2)
        #expect(prepared.versions == [2])

        // A lower version is refused; the map in use stays.
        var older = map
        older.version = 1
        try older.write(to: path)
        #expect(await source.refreshIfChanged().version == 2)

        // An invalid document is refused.
        try Data("{".utf8).write(to: URL(fileURLWithPath: path))
        #expect(await source.refreshIfChanged() == map)

        // A version whose preparation fails is not published, and is tried again on the next poll.
        map.version = 3
        try map.write(to: path)
        prepared.failNext = true
        #expect(await source.refreshIfChanged().version == 2)
        let poller = Task { try await source.run() }
        await clock.waitForSleepers(count: 1)
        clock.advance(by: .seconds(1))
        await clock.waitForSleepers(count: 1)
        #expect(source.current.version == 3)
        #expect(prepared.versions == [2, 2, 3], "run() prepares the map in use first, then polls")
        poller.cancel()
    }

    /// A preparation that finds a newer version held elsewhere (a shard) moves the source to that
    /// version instead; a map offered from elsewhere is applied only when newer.
    @Test func aNewerMapFoundWhilePreparingIsAppliedInstead() async throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("stamp-map-\(UUID())")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let path = folder.appendingPathComponent("map.json").path
        let first = ShardMap.even(databases: [.sqlite(path: "a")], slotCount: 16)
        try first.write(to: path)
        var held = first
        held.version = 5
        let prepared = Mutex<[Int]>([])
        let source = try ShardMapSource(path: path, layout: layout, clock: ManualClock(), logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })) { [held] map in
            prepared.withLock { $0.append(map.version) }
            if map.version < held.version { throw NewerShardMapFound(map: held, shard: 0) }
        }
        var next = first
        next.version = 2
        try next.write(to: path)
        #expect(await source.refreshIfChanged().version == 5)
        #expect(prepared.withLock { $0 } == [2, 5])
        #expect(await source.offer(first).version == 5, "an older map offered is ignored")
        var newest = held
        newest.version = 6
        #expect(await source.offer(newest).version == 6)
        #expect(prepared.withLock { $0 } == [2, 5, 6])
    }
}

/// Records the versions a shard-map source prepared, failing once when told to.
final class PreparedVersions: @unchecked Sendable {
    private let lock = NSLock()
    private var recorded: [Int] = []
    private var failing = false

    var versions: [Int] { lock.withLock { recorded } }
    var failNext: Bool {
        get { lock.withLock { failing } }
        set { lock.withLock { failing = newValue } }
    }

    struct Refused: Error {}

    func record(_ version: Int) throws {
        try lock.withLock {
            if failing {
                failing = false
                throw Refused()
            }
            recorded.append(version)
        }
    }
}
