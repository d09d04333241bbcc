import AsyncHTTPClient
import Foundation
import Hummingbird
import Logging
import NIOCore
import StampAudit
import StampAuditServer
import StampAuditService
import StampCore
import StampHTTP
import StampTesting
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
            let second = try AuditService(configuration: fixture.configuration, ids: try LocalIDSource(node: 1), clock: ManualClock(), logger: logger)
            let tokens = try AuditTokens(writer: AuditFixture.writerToken, reader: AuditFixture.readerToken)
            var server = AuditServerConfiguration().server
            server.port = 0
            let listening = [ListeningAddress(), ListeningAddress()]
            let servers = [
                buildAuditApplication(service: fixture.service, tokens: tokens, server: server, listening: listening[0], logger: logger),
                buildAuditApplication(service: second, tokens: tokens, server: server, listening: listening[1], logger: logger),
            ]
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await second.shards.run() }
                for server in servers {
                    group.addTask { try await server.runService() }
                }
                defer { group.cancelAll() }
                try await second.shards.prepare(fixture.map)
                let ports = try await listening.asyncMap { try #require(await $0.value()).port }

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
