import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Hummingbird
import Logging
import StampAPI
import StampGeneratorNode
import StampHTTP
import StampTesting
import Testing

@Suite("Listening on port 0")
struct ListeningTests {
    /// A node whose server binds port 0 claims its lease only once the server listens, and records
    /// the port it bound: the address in the lease, the port file and the live server agree.
    @Test func aNodeOnPortZeroAdvertisesThePortItBound() async throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("stamp-listening-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let portFile = folder.appendingPathComponent("port").path
        let listening = ListeningAddress()
        let fixture = NodeFixture(listening: listening)
        let server = HTTPServerConfiguration(host: "127.0.0.1", port: 0, portFile: portFile)
        let application = buildApplication(node: fixture.node, server: server, listening: listening, logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }))
        try await withThrowingTaskGroup { group in
            group.addTask { try await application.run() }
            defer { group.cancelAll() }
            try await fixture.start()
            let bound = try #require(await listening.value())
            #expect(bound.port != 0)
            #expect(try #require(fixture.store.lease(of: 0)).address == "http://127.0.0.1:\(bound.port)")
            #expect(try String(contentsOfFile: portFile, encoding: .utf8) == "\(bound.port)\n")

            let (data, response) = try await URLSession.shared.data(from: try #require(URL(string: "\(bound.url)/v1/cluster")))
            #expect((response as? HTTPURLResponse)?.statusCode == 200)
            let cluster = try JSONDecoder().decode(ClusterStatus.self, from: data)
            #expect(cluster.nodes.map(\.address) == [bound.url])
        }
    }

    /// The server `stamp serve` runs, built from its configuration on an SQLite store and port 0:
    /// once it logs that it issues IDs, its port file names the port it serves on, and its lease
    /// advertises that port.
    @Test func theServerBuiltFromItsConfigurationAdvertisesThePortItBound() async throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("stamp-listening-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        var configuration = GeneratorNodeServerConfiguration()
        configuration.server.port = 0
        configuration.server.portFile = folder.appendingPathComponent("port").path
        configuration.store = .database(.sqlite(path: folder.appendingPathComponent("coordination.sqlite").path))
        let log = RecordingLogHandler.Records()
        let application = try buildApplication(configuration: configuration, logger: log.logger())
        try await withThrowingTaskGroup { group in
            group.addTask {
                defer { log.finish() }
                try await application.run()
            }
            defer { group.cancelAll() }
            #expect(await log.waitFor("issuing IDs"), "the node never issued: \(log.messages)")
            let portFile = try #require(configuration.server.portFile)
            let port = try #require(Int(try String(contentsOfFile: portFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)))
            let (data, response) = try await URLSession.shared.data(from: try #require(URL(string: "http://127.0.0.1:\(port)/v1/cluster")))
            #expect((response as? HTTPURLResponse)?.statusCode == 200)
            let cluster = try JSONDecoder().decode(ClusterStatus.self, from: data)
            #expect(cluster.ready)
            #expect(cluster.nodes.map(\.address) == ["http://127.0.0.1:\(port)"])
        }
    }

    /// A wait for an address that never comes ends when its task is cancelled.
    @Test func waitingEndsWhenCancelled() async {
        let listening = ListeningAddress()
        let waiter = Task { await listening.value() }
        waiter.cancel()
        #expect(await waiter.value == nil)
    }

    /// Every waiter, before or after the server binds, gets the first address bound.
    @Test func everyWaiterGetsTheFirstAddress() async {
        let listening = ListeningAddress()
        let early = Task { await listening.value() }
        listening.bind(.init(host: "127.0.0.1", port: 7401))
        listening.bind(.init(host: "127.0.0.1", port: 7402))
        #expect(await early.value?.port == 7401)
        #expect(await listening.value()?.url == "http://127.0.0.1:7401")
    }
}
