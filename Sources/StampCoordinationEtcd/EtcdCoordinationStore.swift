#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Logging
import StampCoordination
import StampCore

/// A coordination store in an etcd cluster, for generator nodes that must keep issuing when any
/// one machine is lost.
///
/// The keys, under the location's prefix `P`:
///
/// - `P/layout`: the cluster's layout, written once.
/// - `P/nodes/N/lease`: the holder of node ID `N` (owner, address), bound to an etcd lease of the
///   lease's TTL, so that etcd deletes it when the holder stops renewing: expiry is judged by etcd.
/// - `P/nodes/N/reservation`: the node ID's reservation and its last holder, bound to no lease, so
///   that it outlives every holder.
///
/// Every change is one transaction conditional on the modification revisions of both keys of the
/// node ID as last read, and is read again and retried when another change came first. A claim
/// succeeds only while the lease key does not exist; a renewal (which also raises the
/// reservation) only while the reservation key still names the renewing owner and the lease key is
/// unchanged, so that a stale owner can never raise the reservation of a node ID another claimed
/// since. A release deletes the lease key, revokes the etcd lease and keeps the reservation.
///
/// Tests may inject a wall clock: it is then the store's now, and expiry is judged on it, at the
/// time each lease key records. The etcd leases are then granted ``injectedClockLeaseAllowance``
/// longer, so that etcd deletes no key while a test moves its clock by hand, however slowly it runs.
public final class EtcdCoordinationStore: CoordinationStore {
    /// How much longer than the TTL the etcd leases last when a clock is injected.
    public static let injectedClockLeaseAllowance = Duration.seconds(600)

    private let client: EtcdGatewayClient
    private let prefix: String
    private let clock: (any WallClock)?
    private let closed: AsyncStream<Never>
    private let closing: AsyncStream<Never>.Continuation

    /// Creates a store on the cluster of `settings`, logging member failures at debug level; `clock`,
    /// when given, is the store's now and adds its own expiry to etcd's.
    public init(settings: EtcdConnectionSettings, clock: (any WallClock)? = nil, logger: Logger) {
        self.client = EtcdGatewayClient(settings: settings, logger: logger)
        self.prefix = settings.location.prefix
        self.clock = clock
        (closed, closing) = AsyncStream.makeStream()
    }

    /// Waits until the store is closed: requests need no background work.
    public func run() async throws {
        for await _ in closed {}
    }

    public func prepare(layout: IDLayout) async throws(CoordinationError) {
        let key = EtcdBytes("\(prefix)/layout")
        let answer = try await perform("prepare the store") { () throws(EtcdGatewayError) in
            try await client.transaction(EtcdTransactionRequest(
                compare: [EtcdCompare(key: key, modRevision: EtcdInt64(0))],
                success: [.put(EtcdPutRequest(key: key, value: EtcdBytes(layout.description)))],
                failure: [.range(EtcdRangeRequest(key: key))]
            ))
        }
        if answer.succeeded == true { return }
        let recorded = answer.responses?.first?.range?.kvs?.first?.value?.text
        guard recorded == layout.description else {
            throw CoordinationError(
                .layoutMismatch,
                "the cluster records the layout \(recorded ?? "nothing"), but this node uses \(layout.description)"
            )
        }
    }

    public func claim(owner: String, address: String?, ttl: Duration, nodeCount: Int) async throws(CoordinationError) -> NodeLease? {
        try await perform("claim a node ID") { () throws(EtcdGatewayError) in
            // Each round takes the lowest node ID that is free in what it read; losing a race to
            // another claimer changes a revision, fails the transaction, and the next round reads
            // again. One etcd lease serves every round: granted after the claim began, it lasts at
            // least `ttl` past that, which is all the node counts on.
            var leaseID: Int64?
            while true {
                let (nodes, now) = try await readNodes()
                if let leaseID, let written = Self.node(boundTo: leaseID, in: nodes), written.lease.owner == owner {
                    return written.nodeLease
                }
                guard let node = (0..<nodeCount).first(where: { !isLive(nodes[$0]?.lease, now: now) }) else {
                    if let leaseID { try? await client.revokeLease(leaseID) }
                    return nil
                }
                let state = nodes[node] ?? NodeState()
                let granted: Int64
                if let leaseID {
                    granted = leaseID
                } else {
                    granted = try await client.grantLease(ttl: etcdLeaseTTL(ttl))
                    leaseID = granted
                }
                let lease = NodeLease(
                    node: node, owner: owner, address: address,
                    expiresAtUnixMilliseconds: now + ttl.wholeMilliseconds,
                    reservedUntilUnixMilliseconds: state.reservation?.record.reservedUntil ?? 0
                )
                if try await write(lease, etcdLease: granted, over: state, node: node) { return lease }
            }
        }
    }

    public func renew(node: Int, owner: String, ttl: Duration, reservedUntilUnixMilliseconds: Int64) async throws(CoordinationError) -> NodeLease? {
        try await perform("renew a lease") { () throws(EtcdGatewayError) in
            // A lease this renewal granted and wrote, whose transaction failed as far as it knows.
            var granted: Int64?
            while true {
                let (nodes, now) = try await readNodes(only: node)
                if let granted, let written = Self.node(boundTo: granted, in: nodes), written.node == node, written.lease.owner == owner {
                    return written.nodeLease
                }
                if let unbound = granted {
                    try? await client.revokeLease(unbound)
                    granted = nil
                }
                let state = nodes[node] ?? NodeState()
                guard let reservation = state.reservation?.record, reservation.owner == owner else { return nil }
                // The etcd lease of the key, kept alive, or a new one when it ended (a lapsed lease
                // that no one claimed since is still its owner's) or is shorter than `ttl`.
                let leaseID: Int64
                if let current = state.lease?.etcdLease, try await client.keepLeaseAlive(current) * 1000 >= etcdLeaseTTL(ttl).wholeMilliseconds {
                    leaseID = current
                } else {
                    leaseID = try await client.grantLease(ttl: etcdLeaseTTL(ttl))
                    granted = leaseID
                }
                let lease = NodeLease(
                    node: node, owner: owner, address: reservation.address,
                    expiresAtUnixMilliseconds: now + ttl.wholeMilliseconds,
                    reservedUntilUnixMilliseconds: max(reservation.reservedUntil, reservedUntilUnixMilliseconds)
                )
                if try await write(lease, etcdLease: leaseID, over: state, node: node) { return lease }
            }
        }
    }

    public func release(node: Int, owner: String) async throws(CoordinationError) {
        try await perform("release a lease") { () throws(EtcdGatewayError) in
            while true {
                let state = try await readNodes(only: node).nodes[node] ?? NodeState()
                guard let reservation = state.reservation?.record, reservation.owner == owner else { return }
                let released = ReservationRecord(owner: nil, address: nil, reservedUntil: reservation.reservedUntil)
                let answer = try await client.transaction(EtcdTransactionRequest(
                    compare: state.comparisons(prefix: prefix, node: node),
                    success: [
                        .delete(EtcdDeleteRequest(key: Self.leaseKey(prefix, node))),
                        .put(EtcdPutRequest(key: Self.reservationKey(prefix, node), value: try Self.encode(released))),
                    ],
                    failure: []
                ))
                guard answer.succeeded == true else { continue }
                if let etcdLease = state.lease?.etcdLease { try? await client.revokeLease(etcdLease) }
                return
            }
        }
    }

    public func liveLeases() async throws(CoordinationError) -> [NodeLease] {
        try await perform("list live leases") { () throws(EtcdGatewayError) in
            let (nodes, now) = try await readNodes()
            return nodes.keys.sorted().compactMap { node in
                guard let state = nodes[node], let lease = state.lease, isLive(lease, now: now) else { return nil }
                return NodeLease(
                    node: node, owner: lease.record.owner, address: lease.record.address,
                    expiresAtUnixMilliseconds: lease.record.expiresAt,
                    reservedUntilUnixMilliseconds: state.reservation?.record.reservedUntil ?? 0
                )
            }
        }
    }

    /// Ends ``run()`` and closes the connections; later operations fail.
    public func close() async {
        closing.finish()
        await client.shutdown()
    }

    // MARK: - Keys and records

    /// What the lease key holds.
    struct LeaseRecord: Codable, Sendable {
        var owner: String
        var address: String?
        /// When the lease ends unless renewed, on the store's clock as ``storeNow(wall:memberSecond:)`` reads it (or the injected clock).
        var expiresAt: Int64
    }

    /// What the reservation key holds: the reservation and the holder that last claimed the node ID,
    /// `nil` once it released it.
    struct ReservationRecord: Codable, Sendable {
        var owner: String?
        var address: String?
        var reservedUntil: Int64
    }

    /// A key as read: its record, its modification revision and the etcd lease it is bound to.
    struct Stored<Record: Sendable>: Sendable {
        var record: Record
        var modRevision: Int64
        var etcdLease: Int64?
    }

    /// Both keys of one node ID as read; a missing key has revision 0 in comparisons.
    struct NodeState: Sendable {
        var lease: Stored<LeaseRecord>?
        var reservation: Stored<ReservationRecord>?

        /// The transaction's condition: neither key changed since it was read.
        func comparisons(prefix: String, node: Int) -> [EtcdCompare] {
            [
                EtcdCompare(key: EtcdCoordinationStore.leaseKey(prefix, node), modRevision: EtcdInt64(lease?.modRevision ?? 0)),
                EtcdCompare(key: EtcdCoordinationStore.reservationKey(prefix, node), modRevision: EtcdInt64(reservation?.modRevision ?? 0)),
            ]
        }
    }

    static func leaseKey(_ prefix: String, _ node: Int) -> EtcdBytes { EtcdBytes("\(prefix)/nodes/\(node)/lease") }
    static func reservationKey(_ prefix: String, _ node: Int) -> EtcdBytes { EtcdBytes("\(prefix)/nodes/\(node)/reservation") }

    /// Writes `lease` as the holder of its node ID, bound to `etcdLease`, unless either key changed
    /// since `state` was read; returns whether it did.
    private func write(_ lease: NodeLease, etcdLease: Int64, over state: NodeState, node: Int) async throws(EtcdGatewayError) -> Bool {
        let leaseRecord = LeaseRecord(owner: lease.owner, address: lease.address, expiresAt: lease.expiresAtUnixMilliseconds)
        let reservation = ReservationRecord(owner: lease.owner, address: lease.address, reservedUntil: lease.reservedUntilUnixMilliseconds)
        let answer = try await client.transaction(EtcdTransactionRequest(
            compare: state.comparisons(prefix: prefix, node: node),
            success: [
                .put(EtcdPutRequest(key: Self.leaseKey(prefix, node), value: try Self.encode(leaseRecord), lease: EtcdInt64(etcdLease))),
                .put(EtcdPutRequest(key: Self.reservationKey(prefix, node), value: try Self.encode(reservation))),
            ],
            failure: []
        ))
        return answer.succeeded == true
    }

    /// The node ID whose lease key is bound to etcd lease `etcdLease`, with what its keys hold.
    ///
    /// A claim or renewal grants an etcd lease that no other call uses, so a key bound to it was
    /// written by that call: a transaction etcd applied although its answer was lost (the member
    /// timed out after committing it, and the same transaction, sent to the next member, then
    /// failed its comparison because it had taken effect). The call's next read finds it here
    /// rather than taking it for another holder's.
    static func node(boundTo etcdLease: Int64, in nodes: [Int: NodeState]) -> (node: Int, lease: LeaseRecord, nodeLease: NodeLease)? {
        guard let (node, state) = nodes.first(where: { $0.value.lease?.etcdLease == etcdLease }), let lease = state.lease?.record else { return nil }
        let nodeLease = NodeLease(
            node: node, owner: lease.owner, address: lease.address,
            expiresAtUnixMilliseconds: lease.expiresAt,
            reservedUntilUnixMilliseconds: state.reservation?.record.reservedUntil ?? 0
        )
        return (node, lease, nodeLease)
    }

    /// The keys of every node ID, or of `node` alone, by node ID, and the store's now when they were read.
    private func readNodes(only node: Int? = nil) async throws(EtcdGatewayError) -> (nodes: [Int: NodeState], now: Int64) {
        let start = EtcdBytes(node.map { "\(prefix)/nodes/\($0)/" } ?? "\(prefix)/nodes/")
        let (answer, memberSecond) = try await client.rangeWithDate(EtcdRangeRequest(key: start, rangeEnd: start.prefixEnd))
        let now = clock?.unixMilliseconds() ?? Self.storeNow(wall: SystemWallClock().unixMilliseconds(), memberSecond: memberSecond)
        let nodesPrefix = "\(prefix)/nodes/"
        var nodes: [Int: NodeState] = [:]
        for pair in answer.kvs ?? [] {
            guard let key = pair.key.text, key.hasPrefix(nodesPrefix) else { continue }
            let parts = key.dropFirst(nodesPrefix.count).split(separator: "/")
            guard parts.count == 2, let id = Int(parts[0]) else { continue }
            let revision = pair.modRevision?.value ?? 0
            let etcdLease = pair.lease.map(\.value).flatMap { $0 == 0 ? nil : $0 }
            let bytes = pair.value?.bytes ?? []
            switch parts[1] {
            case "lease":
                nodes[id, default: NodeState()].lease = Stored(record: try Self.decode(LeaseRecord.self, bytes), modRevision: revision, etcdLease: etcdLease)
            case "reservation":
                nodes[id, default: NodeState()].reservation = Stored(record: try Self.decode(ReservationRecord.self, bytes), modRevision: revision, etcdLease: etcdLease)
            default:
                continue
            }
        }
        return (nodes, now)
    }

    /// The TTL of the etcd lease for a lease of `ttl`: `ttl`, or with an injected clock ``injectedClockLeaseAllowance`` more.
    private func etcdLeaseTTL(_ ttl: Duration) -> Duration {
        clock == nil ? ttl : ttl + Self.injectedClockLeaseAllowance
    }

    /// Whether a lease key counts as held at `now`: it exists (etcd has not expired it) and, with an
    /// injected clock, its recorded end is still ahead.
    private func isLive(_ lease: Stored<LeaseRecord>?, now: Int64) -> Bool {
        guard let lease else { return false }
        return clock == nil || lease.record.expiresAt > now
    }

    /// The store's now, in Unix milliseconds: this machine's wall clock, moved into the second that
    /// the answering member's `Date` header named when it lies outside it.
    ///
    /// etcd shows no clock but that header, whole seconds of the member's clock. The result differs
    /// from this machine's reading only by as much as that reading is certainly off (give or take
    /// the answer's transit), so the node's skew measurement sees all of a skew above a second, part
    /// of a smaller one, and never more than there is.
    static func storeNow(wall: Int64, memberSecond: Int64?) -> Int64 {
        guard let memberSecond else { return wall }
        return min(max(wall, memberSecond * 1000), memberSecond * 1000 + 999)
    }

    private static func encode(_ record: some Encodable) throws(EtcdGatewayError) -> EtcdBytes {
        do {
            return EtcdBytes(bytes: Array(try JSONEncoder().encode(record)))
        } catch {
            throw EtcdGatewayError(.malformedAnswer, "a record could not be encoded", cause: error)
        }
    }

    private static func decode<Record: Decodable>(_ type: Record.Type, _ bytes: [UInt8]) throws(EtcdGatewayError) -> Record {
        do {
            return try JSONDecoder().decode(type, from: Data(bytes))
        } catch {
            throw EtcdGatewayError(.malformedAnswer, "a key under the store's prefix holds no record Stamp wrote", cause: error)
        }
    }

    /// Runs `body`, reporting any failure as ``CoordinationError/Code/unavailable``.
    private func perform<Result>(_ action: String, _ body: () async throws(EtcdGatewayError) -> Result) async throws(CoordinationError) -> Result {
        do {
            return try await body()
        } catch {
            throw CoordinationError(.unavailable, "the etcd store could not \(action): \(error.message)", cause: error)
        }
    }
}
