import Foundation
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import StampCoordination
import StampCore
import StampTesting
import Testing
@testable import StampClient
@testable import StampGeneratorNode
import StampHTTP

/// A generator node in this process on an in-memory store, served over HTTP on loopback.
struct LiveNode {
    let node: GeneratorNode<ManualClock>
    let port: Int

    static let quiet = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })

    /// Starts a node on `store` on a free port, runs `body` while it serves, then stops it.
    ///
    /// With a proxy, the node advertises the proxy's address and the proxy forwards to the node.
    /// With a token, the node's API needs it.
    static func with<T: Sendable>(store: InMemoryCoordinationStore, advertisedThrough proxy: FaultProxy? = nil, token: NodeToken? = nil, _ body: @escaping @Sendable (LiveNode) async throws -> T) async throws -> T {
        let configuration = NodeConfiguration(advertisedAddress: proxy?.url)
        let wallClock = ManualWallClock(unixMilliseconds: 1_767_225_600_000)
        let node = GeneratorNode(configuration: configuration, store: store, clock: ManualClock(), wallClock: wallClock, logger: quiet)
        try await node.prepare()
        _ = await node.step()
        _ = await node.step()
        // A node ID the store held no reservation for starts above claim time + 2 × maximum lead.
        wallClock.advance(milliseconds: 2 * configuration.maxLeadMilliseconds + 1)
        let application = buildApplication(node: node, server: HTTPServerConfiguration(host: "127.0.0.1", port: 0), token: token, logger: quiet)
        return try await application.test(.live) { client in
            proxy?.set(upstreamPort: client.port!)
            return try await body(LiveNode(node: node, port: client.port!))
        }
    }

    /// Starts `count` nodes on one store, each behind a fault proxy, and runs `body` with the proxies.
    static func withCluster<T: Sendable>(count: Int, _ body: @escaping @Sendable ([FaultProxy]) async throws -> T) async throws -> T {
        let store = InMemoryCoordinationStore()
        @Sendable func nest(_ proxies: [FaultProxy]) async throws -> T {
            guard proxies.count < count else { return try await body(proxies) }
            return try await with(store: store) { node in
                let proxy = try await FaultProxy(upstreamPort: node.port)
                do {
                    let result = try await nest(proxies + [proxy])
                    try await proxy.close()
                    return result
                } catch {
                    try? await proxy.close()
                    throw error
                }
            }
        }
        return try await nest([])
    }
}

/// The client against real nodes behind fault proxies: results, attempts and failovers.
@Suite("Client against live nodes", .serialized)
struct LiveNodeTests {
    /// A client for the proxies. The attempt timeout is generous and the cool-down long, so that a
    /// slow, loaded test machine does not add attempts that the policy would not make on a quiet one.
    static func client(_ proxies: [FaultProxy], timeout: Duration = .milliseconds(1500)) -> StampIDClient<ContinuousClock> {
        StampIDClient(
            configuration: StampClientConfiguration(nodes: proxies.map(\.url), attemptTimeout: timeout, retryDelay: .milliseconds(20), coolDown: .seconds(60), discoveryInterval: nil),
            logger: LiveNode.quiet
        )
    }

    @Test func healthyClusterServesEveryRequestFirstTime() async throws {
        try await LiveNode.withCluster(count: 3) { proxies in
            // Nothing fails here, so a long attempt timeout costs nothing; it keeps a test machine
            // busy with the other suites from turning a slow answer into a retry.
            let client = Self.client(proxies, timeout: .seconds(20))
            var ids: [StampID] = []
            for _ in 0..<60 { ids.append(try await client.nextID(shard: 7)) }
            ids += try await client.nextIDs(shard: 7, count: 500)
            await client.shutdown()
            #expect(zip(ids, ids.dropFirst()).allSatisfy { $0 < $1 }, "per-client order holds across nodes")
            #expect(Set(ids.map { $0.fields(in: .default).node }).count == 3, "requests are spread over the nodes")
            #expect(ids.allSatisfy { $0.fields(in: .default).shard == 7 })
            #expect(client.statistics.retries == 0)
            #expect(client.statistics.attempts == 61)
        }
    }

    @Test func concurrentCallsAreCoalescedWithoutDuplicates() async throws {
        try await LiveNode.withCluster(count: 3) { proxies in
            let client = Self.client(proxies, timeout: .seconds(20))
            let perTask = try await withThrowingTaskGroup(of: [StampID].self) { group in
                for _ in 0..<32 {
                    group.addTask {
                        var ids: [StampID] = []
                        for _ in 0..<50 { ids.append(try await client.nextID(shard: 2)) }
                        return ids
                    }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            await client.shutdown()
            let all = perTask.flatMap { $0 }
            #expect(all.count == 1600)
            #expect(Set(all).count == all.count, "no ID twice")
            #expect(perTask.allSatisfy { ids in zip(ids, ids.dropFirst()).allSatisfy { $0 < $1 } }, "each task's IDs increase")
            #expect(client.statistics.requests < all.count, "calls made while requests were out went together")
        }
    }

    @Test func connectionResetFailsOverToTheNextNode() async throws {
        try await LiveNode.withCluster(count: 3) { proxies in
            proxies[0].set(.reset)
            let client = Self.client(proxies)
            let first = try await client.nextID()
            #expect(client.statistics.attempts == 2)
            #expect(client.statistics.failovers == 1)
            for _ in 0..<20 { _ = try await client.nextID() }
            #expect(client.statistics.retries == 1, "the reset node cools down and is skipped")
            #expect(first.fields(in: .default).node != 0 || proxies.count == 3)
            await client.shutdown()
        }
    }

    @Test func hangingNodeTimesOutAndFailsOver() async throws {
        try await LiveNode.withCluster(count: 3) { proxies in
            proxies[0].set(.hang)
            let client = Self.client(proxies)
            let started = ContinuousClock.now
            _ = try await client.nextID()
            let elapsed = started.duration(to: .now)
            #expect(elapsed >= .milliseconds(300), "the first attempt waited for its timeout")
            #expect(client.statistics.attempts == 2)
            #expect(client.statistics.failovers == 1)
            await client.shutdown()
        }
    }

    @Test func delayBelowTheTimeoutIsNotAFailure() async throws {
        try await LiveNode.withCluster(count: 2) { proxies in
            proxies[0].set(.delay(.milliseconds(50)))
            proxies[1].set(.delay(.milliseconds(50)))
            let client = Self.client(proxies)
            for _ in 0..<5 { _ = try await client.nextID() }
            #expect(client.statistics.retries == 0)
            await client.shutdown()
        }
    }

    @Test func delayAboveTheTimeoutIsRetriedElsewhere() async throws {
        try await LiveNode.withCluster(count: 2) { proxies in
            proxies[0].set(.delay(.seconds(3)))
            let client = Self.client(proxies, timeout: .milliseconds(1000))
            for _ in 0..<5 { _ = try await client.nextID() }
            #expect(client.statistics.retries == 1)
            #expect(client.statistics.failovers == 1)
            await client.shutdown()
        }
    }

    @Test func everyNodeFailingReportsEachAttempt() async throws {
        try await LiveNode.withCluster(count: 2) { proxies in
            proxies.forEach { $0.set(.reset) }
            let client = Self.client(proxies)
            let error = await #expect(throws: StampClientError.self) { try await client.nextID() }
            #expect(error?.code == .allNodesFailed)
            #expect(error?.attempts.count == 4)
            #expect(error?.attempts.allSatisfy { $0.failure.kind == .connection } == true)
            await client.shutdown()
        }
    }

    @Test func shardOutOfRangeIsReturnedAtOnce() async throws {
        try await LiveNode.withCluster(count: 2) { proxies in
            let client = Self.client(proxies)
            let error = await #expect(throws: StampClientError.self) { try await client.nextID(shard: 32) }
            #expect(error?.code == .invalidRequest)
            #expect(error?.attempts.first?.failure.status == 400)
            #expect(client.statistics.attempts == 1)
            await client.shutdown()
        }
    }

    @Test func theClientSendsTheNodesToken() async throws {
        let text = "a token of sixteen or more"
        try await LiveNode.with(store: InMemoryCoordinationStore(), token: NodeToken(text)) { node in
            let url = "http://127.0.0.1:\(node.port)"
            let client = StampIDClient(configuration: StampClientConfiguration(nodes: [url], discoveryInterval: nil, token: text), logger: LiveNode.quiet)
            _ = try await client.nextID()
            await client.shutdown()
            let stranger = StampIDClient(configuration: StampClientConfiguration(nodes: [url], discoveryInterval: nil), logger: LiveNode.quiet)
            let error = await #expect(throws: StampClientError.self) { try await stranger.nextID() }
            #expect(error?.code == .invalidRequest)
            #expect(error?.attempts.first?.failure.status == 401)
            await stranger.shutdown()
        }
    }

    @Test func discoveryAddsAStartedNodeAndDropsAReleasedOne() async throws {
        let store = InMemoryCoordinationStore()
        let firstProxy = try await FaultProxy()
        let secondProxy = try await FaultProxy()
        try await LiveNode.with(store: store, advertisedThrough: firstProxy) { _ in
            let client = StampIDClient(
                configuration: StampClientConfiguration(nodes: [firstProxy.url], discoveryInterval: nil),
                logger: LiveNode.quiet
            )
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await client.run() }
                try await LiveNode.with(store: store, advertisedThrough: secondProxy) { second in
                    let address = secondProxy.url
                    // One discovery round, as the client's discovery loop runs it every interval.
                    await client.discover()
                    #expect(client.nodes.contains(address))
                    let nodes = try await Self.nodesServing(client, count: 20)
                    #expect(nodes.contains(second.node.node!), "the node started mid-run receives traffic")
                    let released = second.node.node!
                    await second.node.release()
                    await client.discover()
                    #expect(!client.nodes.contains(address))
                    let after = try await Self.nodesServing(client, count: 20)
                    #expect(!after.contains(released), "the released node receives no more traffic")
                }
                group.cancelAll()
            }
        }
        try await firstProxy.close()
        try await secondProxy.close()
    }

    static func nodesServing(_ client: StampIDClient<ContinuousClock>, count: Int) async throws -> Set<Int> {
        var nodes = Set<Int>()
        for _ in 0..<count { nodes.insert(try await client.nextID().fields(in: .default).node) }
        return nodes
    }
}
