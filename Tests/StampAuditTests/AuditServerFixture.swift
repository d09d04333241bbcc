import Foundation
import Hummingbird
import HummingbirdTesting
import Logging
import Metrics
import MetricsTestKit
import PostgresNIO
import StampAudit
import StampAuditServer
import StampAuditService
import StampAuditStore
import StampCore
import StampShardMap
import StampTesting
import Testing

/// IDs from a generator in the test process: the audit service's source without the network.
struct LocalIDSource: AuditIDSource {
    let generator: IDGenerator

    init(node: Int = 0) throws {
        generator = try IDGenerator(node: node)
    }

    func nextID(shard: Int, above floor: StampID?) async throws -> StampID {
        try generator.next(shard: shard, count: 1, after: floor)[0]
    }

    var isReachable: Bool { true }
}

/// One audit service on fresh shard databases of one backend, with its map file, tokens and key.
struct AuditFixture: Sendable {
    static let writerToken = "writer-token-0123456789"
    static let readerToken = "reader-token-0123456789"
    /// The data key every audit server of a fixture shares.
    static let dataKey = ValueSealer.generateKey()

    let backend: AuditStoreBackend
    let folder: URL
    let mapPath: String
    /// The configuration the service was built from; another server of the fixture takes it too.
    let configuration: AuditServiceConfiguration
    let service: AuditService<ManualClock>
    let shards: ShardSet
    let records: RecordingLogHandler.Records
    let metrics: TestMetrics
    /// The database locations made for the test, by shard ID; more can be made with ``addDatabase(shard:)``.
    let makeDatabase: @Sendable (Int) async throws -> String

    var map: ShardMap { service.shardMap.current }

    func application() throws -> some ApplicationProtocol {
        buildAuditApplication(service: service, tokens: try AuditTokens(writer: Self.writerToken, reader: Self.readerToken), metrics: { "" }, logger: records.logger())
    }

    /// Every row of every shard the map lists, read through the stores.
    func allIDs() async throws -> [StampID] {
        var ids: [StampID] = []
        for shard in map.shards.map(\.id).sorted() {
            let store = try #require(shards.shard(shard)).store
            var after: StampID?
            while true {
                let page = try await store.ids(after: after, limit: 1000)
                ids += page
                guard let last = page.last else { break }
                after = last
            }
        }
        return ids
    }
}

/// Runs `body` with an audit service on `shardCount` fresh databases of `backend`.
func withAuditFixture(_ backend: AuditStoreBackend, shardCount: Int = 3, _ body: (AuditFixture) async throws -> Void) async throws {
    let folder = FileManager.default.temporaryDirectory.appendingPathComponent("stamp-audit-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: folder) }
    let databases = TestDatabases(backend: backend)
    var failure: (any Error)?
    do {
        let locations = try await (0..<shardCount).asyncMap { try await databases.make(shard: $0) }
        let mapPath = folder.appendingPathComponent("shard-map.json").path
        let map = ShardMap.even(databases: locations, slotCount: 64)
        try map.write(to: mapPath)
        let records = RecordingLogHandler.Records()
        let metrics = TestMetrics()
        let configuration = AuditServiceConfiguration(shardMapPath: mapPath, maxBatch: 64, sealer: try ValueSealer(base64Key: AuditFixture.dataKey))
        let service = try AuditService(configuration: configuration, ids: try LocalIDSource(), clock: ManualClock(), logger: records.logger(), metricsFactory: metrics)
        let shards = service.shards
        let fixture = AuditFixture(backend: backend, folder: folder, mapPath: mapPath, configuration: configuration, service: service, shards: shards, records: records, metrics: metrics) { shard in
            try await databases.make(shard: shard)
        }
        try await withThrowingTaskGroup { group in
            group.addTask { try await shards.run() }
            defer { group.cancelAll() }
            try await shards.prepare(map)
            try await body(fixture)
        }
    } catch {
        failure = error
    }
    try await databases.drop()
    if let failure { throw failure }
}

/// Fresh databases for shards: SQLite file names, or PostgreSQL databases on the test server.
final class TestDatabases: @unchecked Sendable {
    let backend: AuditStoreBackend
    private let lock = NSLock()
    private var created: [String] = []
    private let prefix = "stamp_audit_srv_\(UUID().uuidString.lowercased().filter { $0 != "-" }.prefix(12))"

    init(backend: AuditStoreBackend) {
        self.backend = backend
    }

    /// A location for shard `shard` in the form the shard map takes.
    func make(shard: Int) async throws -> String {
        switch backend {
        case .sqlite:
            return "sqlite:shard-\(shard).sqlite"
        case .postgres:
            let url = try #require(AuditStoreBackend.postgresURL)
            let name = "\(prefix)_\(shard)"
            try await withPostgresClient(try PostgresAuditStore.configuration(url: url)) { client in
                try await client.query("CREATE DATABASE \(unescaped: name)")
            }
            lock.withLock { created.append(name) }
            return Self.url(url, database: name)
        }
    }

    func drop() async throws {
        guard backend == .postgres, let url = AuditStoreBackend.postgresURL else { return }
        let names = lock.withLock { created }
        try await withPostgresClient(try PostgresAuditStore.configuration(url: url)) { client in
            for name in names {
                try await client.query("DROP DATABASE IF EXISTS \(unescaped: name) WITH (FORCE)")
            }
        }
    }

    /// `url` with its database replaced by `database`.
    static func url(_ url: String, database: String) -> String {
        let schemeEnd = url.range(of: "://")!.upperBound
        let rest = url[schemeEnd...]
        let hostEnd = rest.firstIndex(of: "/") ?? rest.endIndex
        let query = rest[hostEnd...].firstIndex(of: "?").map { String(rest[$0...]) } ?? ""
        return String(url[..<hostEnd]) + "/" + database + query
    }
}

extension Sequence {
    func asyncMap<T>(_ transform: (Element) async throws -> T) async throws -> [T] {
        var results: [T] = []
        for element in self {
            results.append(try await transform(element))
        }
        return results
    }
}
