import Foundation
import Hummingbird
import HummingbirdTesting
import NIOCore
import StampAudit
import StampAuditServer
import StampAuditService
import StampCore
import StampShardMap
import StampTesting
import Synchronization
import Testing

/// Shard-map changes under load, and personal data kept out of logs, errors and metrics.
@Suite("Audit resilience")
struct AuditResilienceTests {
    typealias API = AuditAPITests

    /// Acknowledged writes, in the order each user's were acknowledged.
    final class Ledger: Sendable {
        private let state = Mutex<(acknowledged: [(user: String, id: String)], failures: [String])>(([], []))
        let progress: AsyncStream<Int>
        private let continuation: AsyncStream<Int>.Continuation

        init() {
            (progress, continuation) = AsyncStream.makeStream(of: Int.self)
        }

        func acknowledge(user: String, id: String) {
            let count = state.withLock { state in
                state.acknowledged.append((user, id))
                return state.acknowledged.count
            }
            continuation.yield(count)
        }

        func fail(_ reason: String) {
            state.withLock { $0.failures.append(reason) }
            continuation.yield(-1)
        }

        var acknowledged: [(user: String, id: String)] { state.withLock { $0.acknowledged } }
        var failures: [String] { state.withLock { $0.failures } }
        /// Set when the writers should stop.
        let stop = Flag()

        final class Flag: Sendable {
            private let value = Atomic<Bool>(false)
            func set() { value.store(true, ordering: .relaxed) }
            var isSet: Bool { value.load(ordering: .relaxed) }
        }

        /// Waits until `count` writes were acknowledged (or one failed).
        func waitFor(_ count: Int) async {
            for await seen in progress where seen >= count || seen < 0 { return }
        }
    }

    /// Writes alternate between two servers on the same shards, the second one's generator 500 ms
    /// behind, while a fourth shard takes slots of a third: every user's history stays in write
    /// order only if the floors (the user's rows in the former shard, the order check in the
    /// commit) hold. Only the first server reads the new map file; the second moves to the new
    /// version when a shard refuses its writes under the old one.
    @Test(arguments: AuditStoreBackend.testable)
    func aFourthShardAddedDuringLoadFailsNoWriteAndKeepsOldRowsReadable(backend: AuditStoreBackend) async throws {
        try await withAuditFixture(backend) { fixture in
            let lagging = try AuditService(configuration: fixture.configuration, ids: try LocalIDSource(node: 1, behind: .milliseconds(500), onTimeNode: 2), clock: ManualClock(), logger: fixture.records.logger())
            let laggingShards = Task { try await lagging.shards.run() }
            defer { laggingShards.cancel() }
            try await lagging.shards.prepare(fixture.map)
            let laggingApplication = buildAuditApplication(service: lagging, tokens: try AuditTokens(writer: AuditFixture.writerToken, reader: AuditFixture.readerToken), logger: fixture.records.logger())
            try await fixture.application().test(.router) { onTime in try await laggingApplication.test(.router) { behind in
                let client = onTime
                let ledger = Ledger()
                let stop = ledger.stop
                let changed = try await withThrowingTaskGroup(of: Void.self) { group in
                    for writer in 0..<8 {
                        group.addTask {
                            var sequence = 0
                            while !stop.isSet {
                                // Each writer owns its users, so each user's writes are
                                // sequential; a user's consecutive writes go through either server in turn.
                                let user = "w\(writer)-u\(sequence % 12)"
                                let status = try await (sequence / 12 % 2 == 0 ? onTime : behind).execute(uri: "/v1/users/\(user)/events", method: .post, headers: API.writeHeaders(key: "w\(writer)-\(sequence)"), body: API.body(after: "v\(sequence)")) { response in
                                    if response.status == .created {
                                        let event = try JSONDecoder().decode(API.EventBody.self, from: Data(buffer: response.body))
                                        ledger.acknowledge(user: user, id: event.id)
                                    } else {
                                        ledger.fail("\(response.status): \(String(buffer: response.body))")
                                    }
                                    return response.status
                                }
                                guard status == .created else { return }
                                sequence += 1
                            }
                        }
                    }
                    await ledger.waitFor(200)
                    // Version 2: a fourth database takes the upper third of shard 2's slots.
                    var map = fixture.map
                    let moved = map.assignments[2].slots
                    let split = moved.lowerBound + moved.count / 2
                    map.version = 2
                    map.shards.append(ShardMap.Shard(id: 3, database: try await fixture.makeDatabase(3)))
                    map.assignments[2] = ShardMap.Assignment(slots: moved.lowerBound...(split - 1), shard: 2)
                    map.assignments.append(ShardMap.Assignment(slots: split...moved.upperBound, shard: 3, previous: [2]))
                    try map.write(to: fixture.mapPath)
                    let applied = await fixture.service.shardMap.refreshIfChanged()
                    let before = ledger.acknowledged.count
                    await ledger.waitFor(before + 200)
                    stop.set()
                    try await group.waitForAll()
                    return (applied, before)
                }
                #expect(changed.0.version == 2)
                #expect(ledger.failures.isEmpty, "\(ledger.failures.prefix(3))")

                let acknowledged = ledger.acknowledged
                let ids = try await fixture.allIDs()
                #expect(ids.count == acknowledged.count, "rows = acknowledged writes")
                #expect(Set(ids.map(\.description)) == Set(acknowledged.map(\.id)))
                let shardOf = { (id: String) in try! StampID(decimal: id).fields(in: .default).shard }
                #expect(acknowledged.suffix(from: changed.1).contains { shardOf($0.id) == 3 }, "writes after the change reach the new shard")

                // Every user's history, read across the shards it spans, is in acknowledgement order.
                var spanned = 0
                for user in Set(acknowledged.map(\.user)) {
                    let written = acknowledged.filter { $0.user == user }.map(\.id)
                    let stored = try await client.execute(uri: "/v1/users/\(user)/events?limit=500", method: .get, headers: API.reader) { response in
                        try JSONDecoder().decode(API.PageBody.self, from: Data(buffer: response.body)).events.map(\.id)
                    }
                    #expect(stored == written.reversed(), "history of \(user)")
                    if Set(written.map(shardOf)).count > 1 { spanned += 1 }
                }
                #expect(spanned > 0, "some user's history spans the old and the new shard")
                // Old rows stay readable where their IDs say they are.
                for (_, id) in acknowledged.prefix(changed.1) {
                    try await client.execute(uri: "/v1/events/\(id)", method: .get, headers: API.reader) { #expect($0.status == .ok) }
                }
                #expect(lagging.shardMap.current.version == 2, "the second server moved to the version its shards hold")
            } }
        }
    }

    @Test func markerValuesNeverReachLogsErrorsMetricsOrTheDatabaseFile() async throws {
        let marker = "MARKER-7f3a9c"
        try await withAuditFixture(.sqlite) { fixture in
            let bodies = try await fixture.application().test(.router) { client in
                var bodies: [String] = []
                let written = try #require(try await API.write(client, user: "mallory", key: "m1", body: API.body(before: "\(marker)-before", after: "\(marker)-after")))
                // Errors about writes carrying the marker: a reused key, a value too large, a bad field.
                for (key, body) in [
                    ("m1", API.body(before: "\(marker)-other", after: "\(marker)-after")),
                    ("m2", API.body(before: marker + String(repeating: "x", count: 1024))),
                    ("m3", API.body(field: "Bad", before: marker)),
                ] {
                        bodies.append(try await client.execute(uri: "/v1/users/mallory/events", method: .post, headers: API.writeHeaders(key: key), body: body) { response in
                        #expect(response.status.code >= 400)
                        return String(buffer: response.body)
                    })
                }
                // The reader does get the values back: they are stored, only protected.
                try await client.execute(uri: "/v1/events/\(written.id)", method: .get, headers: API.reader) { response in
                    #expect(String(buffer: response.body).contains("\(marker)-after"))
                }
                bodies.append(try await client.execute(uri: "/v1/users/mallory/events", method: .get, headers: [.authorization: "Bearer \(AuditFixture.writerToken)"]) { response in
                    String(buffer: response.body)
                })
                return bodies
            }
            #expect(!bodies.contains { $0.contains(marker) }, "no error or writer's read shows a value")
            let entries = fixture.records.entries
            #expect(!entries.isEmpty)
            #expect(!entries.contains { $0.contains(marker) }, "no log entry shows a value")
            let labels = fixture.metrics.counters.map { "\($0.label) \($0.dimensions)" } + fixture.metrics.timers.map { "\($0.label) \($0.dimensions)" }
            #expect(!labels.isEmpty && !labels.contains { $0.contains(marker) })
            var files = 0
            for name in try FileManager.default.contentsOfDirectory(atPath: fixture.folder.path) where name.contains(".sqlite") {
                let bytes = try Data(contentsOf: fixture.folder.appendingPathComponent(name))
                #expect(bytes.range(of: Data(marker.utf8)) == nil, "\(name) holds the value in clear")
                files += 1
            }
            #expect(files >= 3)
        }
    }
}
