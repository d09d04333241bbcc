import StampCoordination
@testable import StampCoordinationEtcd
import StampCore
import StampTesting
import Testing

/// What the etcd store adds to the behaviour suite: etcd's leases decide expiry, and the members fail over.
@Suite(
    "etcd coordination store",
    .enabled(if: TestEtcdCluster.environment != nil, "STAMP_TEST_ETCD_ENDPOINTS is not set, so every etcd case is skipped; scripts/test sets it")
)
struct EtcdStoreTests {
    static let ttl = Duration.seconds(10)

    @Test("the behaviour suite's etcd cases run against the test cluster")
    func etcdCasesRun() async throws {
        #expect(StoreBackend.testable.contains(.etcd))
        try await withStores(.etcd, clock: nil) { stores in
            let leases = try await stores[0].liveLeases()
            #expect(leases.isEmpty)
        }
    }

    @Test("a node ID whose etcd lease is gone goes to the next claimer, and its stale owner is fenced")
    func endedEtcdLeaseFreesTheNodeID() async throws {
        let location = try #require(TestEtcdCluster.environment).freshLocation()
        try await withGateway(on: location) { gateway in try await withEtcdStores(location: location, count: 2) { stores in
            let (zombie, successor) = (stores[0], stores[1])
            let held = try #require(try await zombie.claim(owner: "zombie", address: "http://10.0.0.5:7400", ttl: Self.ttl, nodeCount: 1))
            let reservation = SystemWallClock().unixMilliseconds() + 15_000
            _ = try #require(try await zombie.renew(node: held.node, owner: "zombie", ttl: Self.ttl, reservedUntilUnixMilliseconds: reservation))
            #expect(try await successor.claim(owner: "successor", address: nil, ttl: Self.ttl, nodeCount: 1) == nil)

            // What etcd does when the holder stops renewing: the lease ends and the key bound to it goes.
            try await gateway.revokeLease(try #require(try await Self.etcdLease(of: held.node, in: location, gateway: gateway)))
            #expect(try await successor.liveLeases().isEmpty)
            let taken = try #require(try await successor.claim(owner: "successor", address: nil, ttl: Self.ttl, nodeCount: 1))
            #expect(taken.node == held.node)
            #expect(taken.reservedUntilUnixMilliseconds == reservation)

            #expect(try await zombie.renew(node: held.node, owner: "zombie", ttl: Self.ttl, reservedUntilUnixMilliseconds: reservation + 60_000) == nil)
            try await zombie.release(node: held.node, owner: "zombie")
            #expect(try await successor.liveLeases() == [taken])
        } }
    }

    @Test("an owner whose etcd lease ended while no one claimed the node ID renews it on a new lease")
    func lapsedLeaseIsRevived() async throws {
        let location = try #require(TestEtcdCluster.environment).freshLocation()
        try await withGateway(on: location) { gateway in try await withEtcdStores(location: location, count: 1) { stores in
            let store = stores[0]
            let held = try #require(try await store.claim(owner: "owner", address: "http://10.0.0.5:7400", ttl: Self.ttl, nodeCount: 2))
            let first = try #require(try await Self.etcdLease(of: held.node, in: location, gateway: gateway))
            try await gateway.revokeLease(first)
            #expect(try await store.liveLeases().isEmpty)

            let revived = try #require(try await store.renew(node: held.node, owner: "owner", ttl: Self.ttl, reservedUntilUnixMilliseconds: 42))
            #expect(revived.address == "http://10.0.0.5:7400")
            #expect(revived.reservedUntilUnixMilliseconds == 42)
            let second = try #require(try await Self.etcdLease(of: held.node, in: location, gateway: gateway))
            #expect(second != first)
            #expect(try await store.liveLeases() == [revived])

            // A renewal of a live lease keeps its etcd lease.
            _ = try #require(try await store.renew(node: held.node, owner: "owner", ttl: Self.ttl, reservedUntilUnixMilliseconds: 43))
            #expect(try await Self.etcdLease(of: held.node, in: location, gateway: gateway) == second)

            // Release revokes it: the key is gone and etcd no longer knows the lease.
            try await store.release(node: held.node, owner: "owner")
            #expect(try await Self.etcdLease(of: held.node, in: location, gateway: gateway) == nil)
            #expect(try await gateway.keepLeaseAlive(second) == 0)
        } }
    }

    @Test("a member that cannot be reached is passed over for the next one, and none reachable is an unavailable store")
    func failsOverBetweenMembers() async throws {
        let cluster = try #require(TestEtcdCluster.environment)
        let fresh = try cluster.freshLocation()
        // Port 1 on loopback refuses connections: a member that is down.
        var location = fresh
        location.endpoints = [EtcdLocation.Endpoint(host: "127.0.0.1", port: 1)] + fresh.endpoints
        try await withEtcdStores(location: location, count: 1) { stores in
            let held = try #require(try await stores[0].claim(owner: "owner", address: nil, ttl: Self.ttl, nodeCount: 1))
            #expect(try await stores[0].liveLeases().map(\.owner) == ["owner"])
            try await stores[0].release(node: held.node, owner: "owner")
        }

        var down = fresh
        down.endpoints = [EtcdLocation.Endpoint(host: "127.0.0.1", port: 1), EtcdLocation.Endpoint(host: "127.0.0.1", port: 2)]
        try await running([EtcdCoordinationStore(settings: try EtcdConnectionSettings(location: down), logger: silentLogger)], preparing: nil) { stores in
            let error = await #expect(throws: CoordinationError.self) {
                try await stores[0].claim(owner: "owner", address: nil, ttl: Self.ttl, nodeCount: 1)
            }
            #expect(error?.code == .unavailable)
            #expect(error?.message.contains("127.0.0.1:1") == true)
            #expect(error?.message.contains("127.0.0.1:2") == true)
        }
    }

    @Test("a member that answered and then refuses connections (killed) fails its request at once, not after the connect timeout, so a renewal's short deadline still reaches the next member")
    func refusedConnectionIsNotRetried() async throws {
        let fresh = try #require(TestEtcdCluster.environment).freshLocation()
        // The member the store tries first: a proxy to a real one, closed (killed) once the store used it.
        let member = try await FaultProxy(upstreamPort: fresh.endpoints[0].port)
        var location = fresh
        location.endpoints = [EtcdLocation.Endpoint(host: "127.0.0.1", port: member.port)] + fresh.endpoints
        // Connecting again to the refusing member until this timeout would outlast the deadline below.
        let settings = try EtcdConnectionSettings(location: location, requestTimeout: .seconds(20))
        try await running([EtcdCoordinationStore(settings: settings, logger: silentLogger)], preparing: .default) { stores in
            let store = stores[0]
            let held = try #require(try await store.claim(owner: "owner", address: nil, ttl: Self.ttl, nodeCount: 1))
            #expect(member.connections >= 1, "the store used the first member before it went down")
            try await member.close()
            let renewed = try await withDeadline(.seconds(10), on: ContinuousClock(), timedOut: { CoordinationError(.unavailable, "the renewal did not end within the deadline") }) { () async throws(CoordinationError) in
                try await store.renew(node: held.node, owner: "owner", ttl: Self.ttl, reservedUntilUnixMilliseconds: 42)
            }
            #expect(renewed?.owner == "owner")
            try await store.release(node: held.node, owner: "owner")
        }
    }

    @Test("a member that holds requests unanswered (cut off from the majority) is left after the request timeout, and the next answers from then on")
    func failsOverFromAHangingMember() async throws {
        let fresh = try #require(TestEtcdCluster.environment).freshLocation()
        let proxy = try await FaultProxy()
        proxy.set(.hang)
        var location = fresh
        location.endpoints = [EtcdLocation.Endpoint(host: "127.0.0.1", port: proxy.port)] + fresh.endpoints
        let settings = try EtcdConnectionSettings(location: location, requestTimeout: .seconds(1))
        try await running([EtcdCoordinationStore(settings: settings, logger: silentLogger)], preparing: .default) { stores in
            let held = try #require(try await stores[0].claim(owner: "owner", address: nil, ttl: Self.ttl, nodeCount: 1))
            _ = try #require(try await stores[0].renew(node: held.node, owner: "owner", ttl: Self.ttl, reservedUntilUnixMilliseconds: 42))
            try await stores[0].release(node: held.node, owner: "owner")
        }
        #expect(proxy.connections == 1, "only the first request went to the hanging member")
        try await proxy.close()
    }

    @Test("a request given up by its caller while a member holds it (a renewal's deadline, shorter than the request timeout) sends the next request to the next member")
    func givenUpRequestMovesOnFromAHangingMember() async throws {
        let fresh = try #require(TestEtcdCluster.environment).freshLocation()
        let proxy = try await FaultProxy()
        proxy.set(.hang)
        var location = fresh
        location.endpoints = [EtcdLocation.Endpoint(host: "127.0.0.1", port: proxy.port)] + fresh.endpoints
        // A request timeout longer than the deadlines below: only the caller's giving up can move the store on.
        let settings = try EtcdConnectionSettings(location: location, requestTimeout: .seconds(20))
        try await running([EtcdCoordinationStore(settings: settings, logger: silentLogger)], preparing: nil) { stores in
            let store = stores[0]
            let givenUp = Task { try await store.liveLeases() }
            await proxy.waitForConnections(1)
            givenUp.cancel()
            let error = await #expect(throws: CoordinationError.self) { try await givenUp.value }
            #expect(error?.code == .unavailable)
            #expect(error?.message.contains("given up") == true)

            // Were the next requests sent to the hanging member again, they would wait for the request timeout.
            try await withDeadline(.seconds(10), on: ContinuousClock(), timedOut: { CoordinationError(.unavailable, "the store went back to the hanging member") }) { () async throws(CoordinationError) in
                try await store.prepare(layout: .default)
                guard let held = try await store.claim(owner: "owner", address: nil, ttl: Self.ttl, nodeCount: 1) else { throw CoordinationError(.unavailable, "no node ID was free") }
                _ = try await store.renew(node: held.node, owner: "owner", ttl: Self.ttl, reservedUntilUnixMilliseconds: 42)
                try await store.release(node: held.node, owner: "owner")
            }
        }
        #expect(proxy.connections == 1, "after the given-up request, nothing more went to the hanging member")
        try await proxy.close()
    }

    /// A claim whose transaction etcd applied but whose answer was lost (the member timed out after
    /// committing, and the same transaction then failed its comparison at the next member) reads
    /// its own keys next: the one bound to the etcd lease it granted is its claim, not another's.
    /// Taken for another's, the claim went on to a second node ID, or, with none free, answered
    /// that none was and revoked the lease (the shared-store race of the suite failed so, once, on
    /// a loaded machine).
    @Test("a claim's or renewal's own write, applied though its answer was lost, is recognised by the etcd lease bound to it")
    func ownWriteIsFoundByItsEtcdLease() {
        typealias Store = EtcdCoordinationStore
        func state(owner: String, etcdLease: Int64?, expiresAt: Int64, reservedUntil: Int64) -> Store.NodeState {
            Store.NodeState(
                lease: Store.Stored(record: Store.LeaseRecord(owner: owner, address: "http://\(owner)", expiresAt: expiresAt), modRevision: 7, etcdLease: etcdLease),
                reservation: Store.Stored(record: Store.ReservationRecord(owner: owner, address: "http://\(owner)", reservedUntil: reservedUntil), modRevision: 8, etcdLease: nil)
            )
        }
        let nodes: [Int: Store.NodeState] = [
            0: state(owner: "other", etcdLease: 41, expiresAt: 1_000, reservedUntil: 500),
            1: state(owner: "me", etcdLease: 42, expiresAt: 2_000, reservedUntil: 1_500),
            2: state(owner: "unbound", etcdLease: nil, expiresAt: 3_000, reservedUntil: 2_500),
            3: Store.NodeState(),
        ]
        let mine = Store.node(boundTo: 42, in: nodes)
        #expect(mine?.node == 1)
        #expect(mine?.nodeLease == NodeLease(node: 1, owner: "me", address: "http://me", expiresAtUnixMilliseconds: 2_000, reservedUntilUnixMilliseconds: 1_500))
        #expect(Store.node(boundTo: 43, in: nodes) == nil, "no key is bound to a lease this call did not write")
        #expect(Store.node(boundTo: 42, in: [3: Store.NodeState()]) == nil)
    }

    @Test("a key under the prefix that Stamp did not write makes the store unavailable rather than guess")
    func foreignKeysAreRefused() async throws {
        let location = try #require(TestEtcdCluster.environment).freshLocation()
        try await withGateway(on: location) { gateway in
            let key = EtcdBytes("\(location.prefix)/nodes/0/reservation")
            _ = try await gateway.transaction(EtcdTransactionRequest(compare: [], success: [.put(EtcdPutRequest(key: key, value: EtcdBytes("12")))], failure: []))
        }
        try await withEtcdStores(location: location, count: 1) { stores in
            let error = await #expect(throws: CoordinationError.self) {
                try await stores[0].claim(owner: "owner", address: nil, ttl: Self.ttl, nodeCount: 1)
            }
            #expect(error?.code == .unavailable)
            #expect(error?.message.contains("no record Stamp wrote") == true)
        }
    }

    /// The etcd lease that the lease key of `node` is bound to; `nil` when the key does not exist.
    private static func etcdLease(of node: Int, in location: EtcdLocation, gateway: EtcdGatewayClient) async throws -> Int64? {
        let answer = try await gateway.range(EtcdRangeRequest(key: EtcdCoordinationStore.leaseKey(location.prefix, node)))
        return answer.kvs?.first?.lease?.value
    }

    /// Runs `body` with `count` prepared stores on `location`, judging expiry by etcd alone.
    private func withEtcdStores(location: EtcdLocation, count: Int, _ body: ([any CoordinationStore]) async throws -> Void) async throws {
        let settings = try EtcdConnectionSettings(location: location)
        try await running((0..<count).map { _ in EtcdCoordinationStore(settings: settings, logger: silentLogger) }, preparing: .default, body)
    }

    /// Runs `body` with a gateway client of its own on `location`, for what the store does not expose.
    private func withGateway(on location: EtcdLocation, _ body: (EtcdGatewayClient) async throws -> Void) async throws {
        let gateway = EtcdGatewayClient(settings: try EtcdConnectionSettings(location: location), logger: silentLogger)
        do {
            try await body(gateway)
        } catch {
            await gateway.shutdown()
            throw error
        }
        await gateway.shutdown()
    }
}
