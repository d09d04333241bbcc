import Foundation
import StampCore
import Testing

/// Tests of the built `stamp` binary: several nodes on one store, concurrent clients, and a node
/// killed with SIGKILL and restarted during the run.
@Suite("Cluster processes", .serialized)
struct ClusterProcessTests {
    static let postgresURL = ProcessInfo.processInfo.environment["STAMP_TEST_POSTGRES_PROCESS_URL"]
    static let etcdEndpoints = ProcessInfo.processInfo.environment["STAMP_TEST_ETCD_ENDPOINTS"]

    @Test func threeNodesOnSQLite() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("stamp-process-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        try await runCluster(store: "sqlite:\(directory.path)/coordination.sqlite", directory: directory)
    }

    @Test(.enabled(if: postgresURL != nil, "set STAMP_TEST_POSTGRES_PROCESS_URL (scripts/test does)"))
    func threeNodesOnPostgreSQL() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("stamp-process-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        try await runCluster(store: Self.postgresURL!, directory: directory)
    }

    /// The same on the test etcd cluster, under a prefix of its own; etcd raises the 2 s lease TTL to
    /// its shortest lease (3 s with the test cluster's heartbeat), which only delays a successor.
    @Test(.enabled(if: etcdEndpoints != nil, "set STAMP_TEST_ETCD_ENDPOINTS (scripts/test does)"))
    func threeNodesOnEtcd() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("stamp-process-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        try await runCluster(store: "etcd://\(Self.etcdEndpoints!)/stamp-process/\(UUID().uuidString.lowercased())", directory: directory)
    }

    /// A node started with a shard map issues IDs only for the shards it lists, and sees a new
    /// version written while it runs at the first request for a new shard, without a restart.
    @Test func theShardMapBoundsTheShardsANodeServes() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("stamp-process-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let map = directory.appendingPathComponent("shard-map.json")
        func writeMap(version: Int, shards: [Int]) throws {
            let entries = shards.map { #"{"id": \#($0), "database": "sqlite:shard-\#($0).sqlite", "state": "active"}"# }
            let assignments = shards.enumerated().map { #"{"slots": "\#($0.offset)", "shard": \#($0.element)}"# }
            let text = #"{"version": \#(version), "slots": \#(shards.count), "shards": [\#(entries.joined(separator: ","))], "assignments": [\#(assignments.joined(separator: ","))]}"#
            try Data(text.utf8).write(to: map, options: .atomic)
        }
        try writeMap(version: 1, shards: [0, 1])
        let node = try StampProcess(serve: ["--store", "sqlite:\(directory.path)/coordination.sqlite", "--shard-map", map.path], directory: directory)
        defer { node.stop(signal: SIGKILL) }
        try await node.waitUntilReady()
        #expect(try await HTTP.get("\(node.baseURL)/v1/ids?shard=1").1 == 200)
        let (refusal, status) = try await HTTP.get("\(node.baseURL)/v1/ids?shard=5")
        #expect(status == 400)
        #expect(String(decoding: refusal, as: UTF8.self).contains("urn:stamp:problem:unknown-shard"))

        try writeMap(version: 2, shards: [0, 1, 5])
        let (data, accepted) = try await HTTP.get("\(node.baseURL)/v1/ids?shard=5")
        #expect(accepted == 200, "the node re-read the map for the unknown shard")
        let batch = try JSONDecoder().decode(Batch.self, from: data)
        #expect(try batch.ids.allSatisfy { try StampID(decimal: $0).fields(in: .default).shard == 5 })
        node.stop(signal: SIGTERM)
        #expect(await node.output.waitFor("shard map applied"))
    }

    /// SIGTERM stops a node gracefully: it exits with status 0 and releases its lease, so the next
    /// node on the store claims the same node ID at once, above the kept reservation.
    @Test func sigtermReleasesTheLease() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("stamp-process-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let arguments = ["--store", "sqlite:\(directory.path)/coordination.sqlite", "--reservation-window", "500ms"]
        let first = try StampProcess(serve: arguments, directory: directory)
        defer { first.stop(signal: SIGKILL) }
        try await first.waitUntilReady()
        let (data, _) = try await HTTP.get("\(first.baseURL)/v1/ids")
        let before = try JSONDecoder().decode(Batch.self, from: data)
        first.stop(signal: SIGTERM)
        #expect(first.process.termination == .exited(0))
        #expect(await first.output.waitFor("released lease"))

        let second = try StampProcess(serve: arguments, directory: directory)
        defer { second.stop(signal: SIGKILL) }
        try await second.waitUntilReady()
        let (secondData, _) = try await HTTP.get("\(second.baseURL)/v1/ids")
        let after = try JSONDecoder().decode(Batch.self, from: secondData)
        #expect(after.node == before.node, "the released node ID is free again at once")
        #expect(try #require(Int64(after.ids[0])) > #require(Int64(before.ids[0])))
        second.stop(signal: SIGTERM)
        #expect(second.process.termination == .exited(0))
    }

    /// A node on port 0 writes the port it bound to its port file and advertises that port: the
    /// cluster document at that port lists the node at it.
    @Test func aNodeOnPortZeroReportsAndAdvertisesItsPort() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("stamp-process-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let node = try StampProcess(serve: ["--store", "sqlite:\(directory.path)/coordination.sqlite"], directory: directory)
        defer { node.stop(signal: SIGKILL) }
        try await node.waitUntilReady()
        #expect(node.port != 0)
        let (data, status) = try await HTTP.get("\(node.baseURL)/v1/cluster")
        #expect(status == 200)
        let cluster = try JSONDecoder().decode(Cluster.self, from: data)
        #expect(cluster.nodes.map(\.address) == [node.baseURL])
        node.stop(signal: SIGTERM)
        #expect(node.process.termination == .exited(0))
    }

    struct Cluster: Decodable {
        struct Node: Decodable {
            let address: String?
        }

        let nodes: [Node]
    }

    struct Batch: Decodable {
        let ids: [String]
        let node: Int
    }

    /// What one client saw: every ID, and for each node the IDs in the order received.
    struct Observation: Sendable {
        var ids: [Int64] = []
        var orderViolations = 0
        var failures = 0
    }

    func runCluster(store: String, directory: URL) async throws {
        let arguments = ["--store", store, "--lease-ttl", "2s", "--lease-margin", "500ms", "--reservation-window", "1s", "--retry-interval", "200ms"]
        var nodes = try (0..<3).map { _ in try StampProcess(serve: arguments, directory: directory) }
        defer { nodes.forEach { $0.stop(signal: SIGKILL) } }
        for node in nodes { try await node.waitUntilReady() }
        let addresses = nodes.map(\.baseURL)
        let requestsPerClient = 150

        let completed = ProgressCount()
        let observations = try await withThrowingTaskGroup(of: Observation.self) { group in
            for client in 0..<4 {
                group.addTask {
                    var observation = Observation()
                    var lastByNode: [Int: Int64] = [:]
                    for request in 0..<requestsPerClient {
                        defer { completed.increment() }
                        let base = addresses[(client + request) % addresses.count]
                        guard let (data, status) = try? await HTTP.get("\(base)/v1/ids?count=50&shard=\(client)"), status == 200,
                              let batch = try? JSONDecoder().decode(Batch.self, from: data)
                        else {
                            observation.failures += 1
                            continue
                        }
                        let ids = batch.ids.compactMap(Int64.init)
                        for id in ids {
                            if let last = lastByNode[batch.node], id <= last { observation.orderViolations += 1 }
                            lastByNode[batch.node] = id
                        }
                        observation.ids += ids
                    }
                    return observation
                }
            }
            // Meanwhile, node 2 is killed with SIGKILL and restarted three times, after a sixth, a third
            // and a half of the requests, so that the kills fall while the clients' requests are in flight.
            for share in 1...3 {
                await completed.waitUntil(4 * requestsPerClient * share / 6)
                nodes[2].stop(signal: SIGKILL)
                nodes[2] = try StampProcess(serve: arguments, directory: directory, port: nodes[2].port)
                try await nodes[2].waitUntilReady()
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }

        let all = observations.flatMap(\.ids).sorted()
        let duplicates = zip(all, all.dropFirst()).filter { $0 == $1 }.count
        let orderViolations = observations.map(\.orderViolations).reduce(0, +)
        let failures = observations.map(\.failures).reduce(0, +)
        let kind = store.hasPrefix("sqlite") ? "SQLite" : store.hasPrefix("etcd") ? "etcd" : "PostgreSQL"
        print("process test on \(kind): ids=\(all.count) duplicates=\(duplicates) order_violations=\(orderViolations) failed_requests=\(failures)")
        #expect(duplicates == 0)
        #expect(orderViolations == 0)
        #expect(all.count > 4 * requestsPerClient * 50 / 2, "most requests must succeed while one node restarts")
        nodes.forEach { $0.stop() }
    }
}
