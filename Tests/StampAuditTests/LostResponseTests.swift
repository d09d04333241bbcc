import AsyncHTTPClient
import Foundation
import Hummingbird
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import StampAudit
import StampAuditServer
import StampCore
import StampGeneratorNode
import StampShardMap
import StampTesting
import Synchronization
import Testing

/// Clients that lose answers retry through the load balancer with their keys, and every logical
/// write is stored exactly once.
@Suite("Lost responses")
struct LostResponseTests {
    static let logicalWrites = 300

    @Test(arguments: AuditStoreBackend.testable)
    func retriedWritesThroughTheBalancerStoreEachWriteOnce(backend: AuditStoreBackend) async throws {
        try await withAuditFixture(backend) { fixture in
            // A second audit server on the same shards, with IDs of another generator node.
            let logger = fixture.records.logger()
            let shards = ShardSet(initial: fixture.map, maxBatch: 64, commitsPerShard: { _ in 1 }, logger: logger) { shard in
                try AuditStores.open(shard, folder: fixture.folder.path, logger: logger)
            }
            let source = try ShardMapSource(path: fixture.mapPath, layout: .default, clock: ManualClock(), logger: logger)
            let second = AuditService(layout: .default, shardMap: source, shards: shards, ids: try LocalIDSource(node: 1), sealer: try ValueSealer(base64Key: AuditFixture.dataKey), logger: logger)
            let tokens = try AuditTokens(writer: AuditFixture.writerToken, reader: AuditFixture.readerToken)
            let ports = try (0..<2).map { _ in try freeLoopbackPort() }
            let servers = [
                buildAuditApplication(service: fixture.service, tokens: tokens, server: ServerConfiguration(port: ports[0], maxBodySize: AuditLimits.maxBodyBytes), logger: logger),
                buildAuditApplication(service: second, tokens: tokens, server: ServerConfiguration(port: ports[1], maxBodySize: AuditLimits.maxBodyBytes), logger: logger),
            ]
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await shards.run() }
                for server in servers {
                    group.addTask { try await server.runService() }
                }
                defer { group.cancelAll() }
                try await shards.prepare(fixture.map)
                for port in ports { try await waitUntilListening(port: port) }

                // Clients → a proxy that balances round-robin over the audit servers and loses every 5th answer.
                let balancer = try await FaultProxy(upstreamPorts: ports)
                balancer.set(.dropResponse(every: 5))
                let http = HTTPClient(eventLoopGroupProvider: .singleton)
                let outcomes = try await withThrowingTaskGroup(of: (id: String, attempts: Int, replayed: Bool).self) { writers in
                    var outcomes: [(id: String, attempts: Int, replayed: Bool)] = []
                    for write in 0..<Self.logicalWrites {
                        // At most 16 writes in flight.
                        if write >= 16, let outcome = try await writers.next() { outcomes.append(outcome) }
                        writers.addTask {
                            try await Self.writeRetrying(http, port: balancer.port, user: "user-\(write % 40)", key: "write-\(write)", value: "v\(write)")
                        }
                    }
                    for try await outcome in writers { outcomes.append(outcome) }
                    return outcomes
                }
                try await http.shutdown()
                try await balancer.close()

                #expect(balancer.droppedResponses > 0, "the proxy lost answers")
                let ids = try await fixture.allIDs()
                #expect(ids.count == Self.logicalWrites, "rows = logical writes")
                #expect(Set(ids).count == ids.count)
                #expect(Set(outcomes.map(\.id)) == Set(ids.map(\.description)), "every write's answer names its stored row")
                #expect(outcomes.contains { $0.attempts > 1 }, "some writes were retried")
                #expect(outcomes.contains { $0.replayed }, "some retries found their write already stored")
            }
        }
    }

    /// One logical write: retried with the same key until an answer arrives (at most 10 attempts).
    static func writeRetrying(_ http: HTTPClient, port: Int, user: String, key: String, value: String) async throws -> (id: String, attempts: Int, replayed: Bool) {
        var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)/v1/users/\(user)/events")
        request.method = .POST
        request.headers = [
            "Authorization": "Bearer \(AuditFixture.writerToken)", "Content-Type": "application/json",
            "Idempotency-Key": key, "Connection": "close",
        ]
        let body = #"{"field":"email","before":null,"after":"\#(value)","actor":"test"}"#
        var last = ""
        for attempt in 1...10 {
            request.body = .bytes(ByteBuffer(string: body))
            let response: HTTPClientResponse
            do {
                response = try await http.execute(request, timeout: .seconds(10))
            } catch {
                last = "\(error)"
                continue
            }
            let data = try await response.body.collect(upTo: 1 << 16)
            guard response.status == .created else {
                last = "\(response.status): \(String(buffer: data))"
                continue
            }
            let event = try JSONDecoder().decode(AuditAPITests.EventBody.self, from: Data(buffer: data))
            return (event.id, attempt, response.headers.first(name: "Idempotent-Replayed") == "true")
        }
        Issue.record("write \(key) got no answer in 10 attempts; the last: \(last)")
        return ("", 10, false)
    }
}

/// A free TCP port on 127.0.0.1, found by binding port 0.
func freeLoopbackPort() throws -> Int {
    let socket = Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(socket) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = 0
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafeMutablePointer(to: &address) { pointer in
        pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(socket, $0, length) == 0 && getsockname(socket, $0, &length) == 0 }
    }
    guard bound else { throw POSIXError(.EADDRINUSE) }
    return Int(UInt16(bigEndian: address.sin_port))
}

/// Waits until something accepts connections on `port`: a server started in a task gives no
/// other signal. Bounded; yields between tries instead of sleeping.
func waitUntilListening(port: Int) async throws {
    for _ in 0..<10_000 {
        if (try? await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton).connect(host: "127.0.0.1", port: port).get().close().get()) != nil {
            return
        }
        await Task.yield()
    }
    throw POSIXError(.ECONNREFUSED)
}
