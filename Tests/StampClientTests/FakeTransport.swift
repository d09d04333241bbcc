import StampClient
import StampCore
import StampTesting
import Synchronization

/// A transport whose nodes behave as a test says, recording every call.
///
/// Each fake node issues from its own counter, standing for its own clock and sequence: it moves
/// above `after` when asked, as a real node does, and otherwise knows nothing of the others. Node
/// `http://b` runs behind the rest by default, so that order across a failover holds only while the
/// client sends `after`.
final class FakeTransport: StampTransport {
    /// Where a node's counter starts unless ``init(counterStarts:)`` says otherwise.
    static let defaultCounterStart: Int64 = 1000
    /// What a node does with a request.
    enum Behavior: Sendable {
        case issue
        case fail(TransportFailure)
        /// Never answers; ends only when cancelled.
        case hang
        /// Answers as `.issue` once ``openGate()`` is called.
        case gated
        /// Refuses with 409 `after-too-far-ahead` when `after` is above the given ID, else issues.
        case refuseAfterAbove(StampID)
        /// Answers with exactly these IDs, whatever was asked.
        case answer([StampID])
    }

    struct Call: Sendable, Equatable {
        let node: String
        let shard: Int
        let count: Int
        let after: StampID?
    }

    private struct State {
        var behaviors: [String: Behavior] = [:]
        var calls: [Call] = []
        /// The next ID of each node that has issued.
        var next: [String: Int64] = [:]
        var cluster: [String] = []
        var callWatchers: [(count: Int, continuation: CheckedContinuation<Void, Never>)] = []
        var gateOpen = false
        var gateWaiters: [CheckedContinuation<Void, Never>] = []
    }

    private let state = Mutex(State())
    private let counterStarts: [String: Int64]

    /// - Parameter counterStarts: The first ID of the nodes whose counter does not start at
    ///   ``defaultCounterStart``; by default node `http://b`, whose counter starts at 1.
    init(counterStarts: [String: Int64] = ["http://b": 1]) {
        self.counterStarts = counterStarts
    }

    func set(_ node: String, _ behavior: Behavior) {
        state.withLock { $0.behaviors[node] = behavior }
    }

    func setCluster(_ addresses: [String]) {
        state.withLock { $0.cluster = addresses }
    }

    var calls: [Call] { state.withLock { $0.calls } }

    /// Lets every `.gated` request answer, now and from now on.
    func openGate() {
        let waiters = state.withLock { state in
            state.gateOpen = true
            defer { state.gateWaiters = [] }
            return state.gateWaiters
        }
        waiters.forEach { $0.resume() }
    }

    /// Returns once at least `count` ID requests have been made.
    func waitForCalls(_ count: Int) async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let ready = state.withLock { state in
                if state.calls.count >= count { return true }
                state.callWatchers.append((count, continuation))
                return false
            }
            if ready { continuation.resume() }
        }
    }

    func fetchIDs(node: String, shard: Int, count: Int, after: StampID?) async throws(TransportFailure) -> [StampID] {
        let (behavior, watchers) = state.withLock { state -> (Behavior, [CheckedContinuation<Void, Never>]) in
            state.calls.append(Call(node: node, shard: shard, count: count, after: after))
            let satisfied = state.callWatchers.filter { $0.count <= state.calls.count }.map(\.continuation)
            state.callWatchers.removeAll { $0.count <= state.calls.count }
            return (state.behaviors[node] ?? .issue, satisfied)
        }
        watchers.forEach { $0.resume() }
        switch behavior {
        case .issue:
            return issue(node: node, count: count, after: after)
        case .gated:
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let open = state.withLock { state in
                    if !state.gateOpen { state.gateWaiters.append(continuation) }
                    return state.gateOpen
                }
                if open { continuation.resume() }
            }
            return issue(node: node, count: count, after: after)
        case .fail(let failure):
            throw failure
        case .refuseAfterAbove(let limit):
            if let after, after > limit { throw TransportFailure(.afterTooFarAhead, detail: "after is too far ahead") }
            return issue(node: node, count: count, after: after)
        case .answer(let ids):
            return ids
        case .hang:
            try? await ManualClock.waitForCancellation()
            throw TransportFailure(.connection, detail: "cancelled")
        }
    }

    /// `count` new IDs from `node`'s counter, all above `after`.
    private func issue(node: String, count: Int, after: StampID?) -> [StampID] {
        state.withLock { state in
            let next = max(state.next[node] ?? counterStarts[node] ?? Self.defaultCounterStart, (after?.rawValue ?? 0) + 1)
            state.next[node] = next + Int64(count)
            return (0..<Int64(count)).map { StampID(rawValue: next + $0)! }
        }
    }

    func fetchCluster(node: String) async throws(TransportFailure) -> [String] {
        state.withLock { $0.cluster }
    }

    func probe(node: String) async -> Bool {
        state.withLock { state in
            if case .issue = state.behaviors[node] ?? .issue { return true }
            return false
        }
    }

    func shutdown() async {}
}
