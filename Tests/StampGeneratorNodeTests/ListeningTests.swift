import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Hummingbird
import Logging
import StampGeneratorNode
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
        let server = ServerConfiguration(host: "127.0.0.1", port: 0, portFile: portFile)
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
            let cluster = try JSONDecoder().decode(ClusterBody.self, from: data)
            #expect(cluster.nodes.map(\.address) == [bound.url])
        }
    }

    struct ClusterBody: Decodable {
        struct Node: Decodable {
            let address: String?
        }

        let nodes: [Node]
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
