import StampCoordination
import StampCore
import Synchronization

/// A coordination store in memory, with the same behaviour as the real backends, for tests of
/// nodes and servers. Its clock is a ``ManualWallClock``; tests can make it fail on purpose.
///
/// The coordination store suite runs against it as against SQLite and PostgreSQL.
public final class InMemoryCoordinationStore: CoordinationStore {
    private struct Row {
        var owner: String?
        var address: String?
        var expiresAt: Int64 = 0
        var reservedUntil: Int64 = 0
    }

    private struct State {
        var layout: String?
        var rows: [Int: Row] = [:]
        var failuresToInject = 0
        var hangsToInject = 0
        var hung: [CheckedContinuation<Void, Never>] = []
        var hangWatchers: [CheckedContinuation<Void, Never>] = []
        var operations = 0
    }

    private let state = Mutex(State())
    private let closing = AsyncStream<Never>.makeStream()
    /// The store's clock, which judges lease expiry.
    public let clock: ManualWallClock

    public init(clock: ManualWallClock = ManualWallClock()) {
        self.clock = clock
    }

    /// Makes the next `count` operations fail with ``CoordinationError/Code/unavailable``.
    public func failNext(_ count: Int) {
        state.withLock { $0.failuresToInject = count }
    }

    /// Makes the next `count` claims or renewals hang, ignoring cancellation as a call on a dropped
    /// connection does, until ``releaseHung()``; then they go on as usual.
    public func hangNext(_ count: Int) {
        state.withLock { $0.hangsToInject = count }
    }

    /// Lets every hung call go on.
    public func releaseHung() {
        for call in state.withLock({ state in defer { state.hung = [] }; return state.hung }) {
            call.resume()
        }
    }

    /// Returns once a call hangs.
    public func waitUntilHung() async {
        await withCheckedContinuation { (waiter: CheckedContinuation<Void, Never>) in
            let hung = state.withLock { state in
                if !state.hung.isEmpty { return true }
                state.hangWatchers.append(waiter)
                return false
            }
            if hung { waiter.resume() }
        }
    }

    private func hangIfAsked() async {
        await withCheckedContinuation { (call: CheckedContinuation<Void, Never>) in
            let (hangs, watchers) = state.withLock { state -> (Bool, [CheckedContinuation<Void, Never>]) in
                guard state.hangsToInject > 0 else { return (false, []) }
                state.hangsToInject -= 1
                state.hung.append(call)
                defer { state.hangWatchers = [] }
                return (true, state.hangWatchers)
            }
            watchers.forEach { $0.resume() }
            if !hangs { call.resume() }
        }
    }

    /// How many operations were attempted.
    public var operationCount: Int { state.withLock { $0.operations } }

    /// The stored lease row of `node`, as the store sees it.
    public func lease(of node: Int) -> NodeLease? {
        state.withLock { state in
            state.rows[node].map { NodeLease(node: node, owner: $0.owner ?? "", address: $0.address, expiresAtUnixMilliseconds: $0.expiresAt, reservedUntilUnixMilliseconds: $0.reservedUntil) }
        }
    }

    /// Waits until the store is closed or the task is cancelled.
    public func run() async throws {
        for await _ in closing.stream {}
    }

    public func prepare(layout: IDLayout) async throws(CoordinationError) {
        try operate { state, _ throws(CoordinationError) in
            if let recorded = state.layout, recorded != layout.description {
                throw CoordinationError(.layoutMismatch, "the cluster uses layout \(recorded); this node has \(layout)")
            }
            state.layout = layout.description
        }
    }

    public func claim(owner: String, address: String?, ttl: Duration, nodeCount: Int) async throws(CoordinationError) -> NodeLease? {
        await hangIfAsked()
        return try operate { state, now in
            guard let node = (0..<nodeCount).first(where: { state.rows[$0].map { $0.owner == nil || $0.expiresAt <= now } ?? true }) else { return nil }
            var row = state.rows[node] ?? Row()
            row.owner = owner
            row.address = address
            row.expiresAt = now + ttl.wholeMilliseconds
            state.rows[node] = row
            return NodeLease(node: node, owner: owner, address: address, expiresAtUnixMilliseconds: row.expiresAt, reservedUntilUnixMilliseconds: row.reservedUntil)
        }
    }

    public func renew(node: Int, owner: String, ttl: Duration, reservedUntilUnixMilliseconds: Int64) async throws(CoordinationError) -> NodeLease? {
        await hangIfAsked()
        return try operate { state, now in
            guard var row = state.rows[node], row.owner == owner else { return nil }
            row.expiresAt = now + ttl.wholeMilliseconds
            row.reservedUntil = max(row.reservedUntil, reservedUntilUnixMilliseconds)
            state.rows[node] = row
            return NodeLease(node: node, owner: owner, address: row.address, expiresAtUnixMilliseconds: row.expiresAt, reservedUntilUnixMilliseconds: row.reservedUntil)
        }
    }

    public func release(node: Int, owner: String) async throws(CoordinationError) {
        try operate { state, now in
            guard var row = state.rows[node], row.owner == owner else { return }
            row.owner = nil
            row.address = nil
            row.expiresAt = min(row.expiresAt, now)
            state.rows[node] = row
        }
    }

    public func liveLeases() async throws(CoordinationError) -> [NodeLease] {
        try operate { state, now in
            state.rows.filter { $0.value.owner != nil && $0.value.expiresAt > now }.sorted { $0.key < $1.key }.map { node, row in
                NodeLease(node: node, owner: row.owner ?? "", address: row.address, expiresAtUnixMilliseconds: row.expiresAt, reservedUntilUnixMilliseconds: row.reservedUntil)
            }
        }
    }

    public func close() async {
        closing.continuation.finish()
    }

    private func operate<Result>(_ body: (inout State, Int64) throws(CoordinationError) -> Result) throws(CoordinationError) -> Result {
        let now = clock.unixMilliseconds()
        return try state.withLock { (state: inout State) throws(CoordinationError) -> Result in
            state.operations += 1
            if state.failuresToInject > 0 {
                state.failuresToInject -= 1
                throw CoordinationError(.unavailable, "injected failure")
            }
            return try body(&state, now)
        }
    }
}
