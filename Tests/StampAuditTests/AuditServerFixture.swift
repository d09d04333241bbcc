import AsyncHTTPClient
import Foundation
import Hummingbird
import HummingbirdTesting
import Logging
import Metrics
import PostgresNIO
import MetricsTestKit
import StampAudit
import StampAuditServer
import StampAuditService
import StampAuditStore
import StampCore
import StampDatabase
import StampDatabaseTesting
import StampShardMap
import StampTesting
import Synchronization
import Testing

/// How a test's requests reach the audit server: through Hummingbird's router alone (its router
/// test mode), or over a live connection, where writes are answered in the channel pipeline.
enum HTTPPath: Sendable, CaseIterable, CustomTestStringConvertible {
    case router
    case pipeline

    var setup: TestingSetup { self == .router ? .router : .live }
    var testDescription: String { self == .router ? "router" : "pipeline" }
}

/// IDs from a generator in the test process: the audit service's source without the network.
///
/// A source may stand for a cluster whose nodes disagree: its blind requests (no floor) go to a
/// node whose wall clock runs `behind`, and, with `onTimeNode`, requests above a floor go to a
/// node on time, as a retry reaches another node. Its lagging node then stays behind for good (a
/// node that issues above a floor itself catches up).
struct LocalIDSource: AuditIDSource {
    let generator: IDGenerator
    let aboveFloors: IDGenerator

    init(node: Int = 0, behind: Duration = .zero, onTimeNode: Int? = nil) throws {
        generator = try IDGenerator(node: node, wallClock: LaggingWallClock(behind: behind))
        aboveFloors = try onTimeNode.map { try IDGenerator(node: $0) } ?? generator
    }

    func nextID(shard: Int, above floor: StampID?) async throws -> StampID {
        try (floor == nil ? generator : aboveFloors).next(shard: shard, count: 1, after: floor)[0]
    }

    func bufferedID(shard: Int) -> StampID? {
        try? generator.next(shard: shard, count: 1, after: nil)[0]
    }

    var isReachable: Bool { true }
}

/// The system's wall clock, a fixed time behind.
struct LaggingWallClock: WallClock {
    let milliseconds: Int64

    init(behind: Duration) {
        milliseconds = behind.components.seconds * 1000 + behind.components.attoseconds / 1_000_000_000_000_000
    }

    func unixMilliseconds() -> Int64 {
        SystemWallClock().unixMilliseconds() - milliseconds
    }
}

/// One audit service on fresh shard databases of one backend, with its map file, tokens and key.
struct AuditFixture: Sendable {
    static let writerToken = "writer-token-0123456789"
    static let readerToken = "reader-token-0123456789"
    static let adminToken = "admin-token-0123456789"
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
    let makeDatabase: @Sendable (Int) async throws -> DatabaseLocation

    var map: ShardMap { service.shardMap.current }

    func application() throws -> some ApplicationProtocol {
        var server = AuditServerConfiguration().server
        server.port = 0
        return buildAuditApplication(service: service, tokens: try AuditTokens(writer: Self.writerToken, reader: Self.readerToken, admin: Self.adminToken), server: server, metrics: { "" }, logger: records.logger())
    }

    /// Runs `statements` on the database of shard `shard`, directly, as its owner.
    func execute(onShard shard: Int, _ statements: [String]) async throws {
        switch try #require(map.shard(id: shard)).database.resolvingRelativePath(from: folder.path) {
        case .sqlite(let path):
            try await withSQLiteConnection(path) { connection in
                for statement in statements { try await connection.execute(statement) }
            }
        case .postgres(let url):
            try await withPostgresClient(try PostgresConnectionSettings(url: PostgresURL(parsing: url))) { client in
                for statement in statements { _ = try await client.query(PostgresQuery(unsafeSQL: statement)) }
            }
        }
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
func withAuditFixture(_ backend: AuditStoreBackend, shardCount: Int = 3, checkpoints: CheckpointPolicy? = nil, _ body: (AuditFixture) async throws -> Void) async throws {
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
        // Tests that time a shard out move their own clocks; the rest must not fail on a busy machine.
        var configuration = AuditServiceConfiguration(shardMapPath: mapPath, maxBatch: 64, storeTimeout: .seconds(60), sealer: try ValueSealer(base64Key: AuditFixture.dataKey))
        configuration.checkpoints = checkpoints
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
final class TestDatabases: Sendable {
    let backend: AuditStoreBackend
    private let created = Mutex<[PostgresURL]>([])

    init(backend: AuditStoreBackend) {
        self.backend = backend
    }

    /// A location for shard `shard`: a file beside the map, or a database created on the test server.
    func make(shard: Int) async throws -> DatabaseLocation {
        switch backend {
        case .sqlite:
            return .sqlite(path: "shard-\(shard).sqlite")
        case .postgres:
            let server = try #require(TestPostgresServer.environment)
            let database = try await server.createDatabase(prefix: "stamp_audit_shard\(shard)")
            created.withLock { $0.append(database) }
            return .postgres(url: database.text)
        }
    }

    func drop() async throws {
        guard let server = TestPostgresServer.environment else { return }
        try await server.dropDatabases(created.withLock { $0 })
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

/// Sends requests at once to an application under test: through the test client on the router
/// path, and over connections of their own on the pipeline path, since one connection's requests
/// are answered one after another (the last of many would wait past the test client's timeout).
struct ConcurrentRequests: Sendable {
    /// What came back: the status, the body and the headers.
    typealias Answer = (status: HTTPResponse.Status, body: ByteBuffer, headers: HTTPFields)

    let client: any TestClientProtocol
    let path: HTTPPath
    private let http = HTTPClient(eventLoopGroupProvider: .singleton, configuration: .init(connectionPool: .init(idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: 64)))

    init(client: some TestClientProtocol, path: HTTPPath) {
        self.client = client
        self.path = path
    }

    func post(_ uri: String, headers: HTTPFields, body: ByteBuffer) async throws -> Answer {
        switch path {
        case .router:
            return try await client.execute(uri: uri, method: .post, headers: headers, body: body) { ($0.status, $0.body, $0.headers) }
        case .pipeline:
            let port = try #require(client.port)
            var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)\(uri)")
            request.method = .POST
            for field in headers { request.headers.add(name: field.name.rawName, value: field.value) }
            request.body = .bytes(body)
            let response = try await http.execute(request, timeout: .seconds(60))
            var fields = HTTPFields()
            for (name, value) in response.headers {
                if let name = HTTPFields.Element.Name(name) { fields.append(HTTPFields.Element(name: name, value: value)) }
            }
            return (HTTPResponse.Status(code: Int(response.status.code)), try await response.body.collect(upTo: 1 << 16), fields)
        }
    }

    func shutdown() async throws {
        try await http.shutdown()
    }
}
