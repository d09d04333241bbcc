import StampClient
import StampCore
import StampTesting
import Synchronization

/// A transport whose nodes behave as a test says, recording every call.
final class FakeTransport: StampTransport {
    /// What a node does with a request.
    enum Behavior: Sendable {
        case issue
        case fail(TransportFailure)
        /// Never answers; ends only when cancelled.
        case hang
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
        var next: Int64 = 1000
        var cluster: [String] = []
        var callWatchers: [(count: Int, continuation: CheckedContinuation<Void, Never>)] = []
    }

    private let state = Mutex(State())

    func set(_ node: String, _ behavior: Behavior) {
        state.withLock { $0.behaviors[node] = behavior }
    }

    func setCluster(_ addresses: [String]) {
        state.withLock { $0.cluster = addresses }
    }

    var calls: [Call] { state.withLock { $0.calls } }

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
        let (behavior, ids, watchers) = state.withLock { state -> (Behavior, [StampID], [CheckedContinuation<Void, Never>]) in
            state.calls.append(Call(node: node, shard: shard, count: count, after: after))
            let satisfied = state.callWatchers.filter { $0.count <= state.calls.count }.map(\.continuation)
            state.callWatchers.removeAll { $0.count <= state.calls.count }
            let behavior = state.behaviors[node] ?? .issue
            guard case .issue = behavior else { return (behavior, [], satisfied) }
            state.next = max(state.next, (after?.rawValue ?? 0) + 1)
            let ids = (0..<Int64(count)).map { StampID(rawValue: state.next + $0)! }
            state.next += Int64(count)
            return (behavior, ids, satisfied)
        }
        watchers.forEach { $0.resume() }
        switch behavior {
        case .issue: return ids
        case .fail(let failure): throw failure
        case .hang:
            try? await ManualClock.waitForCancellation()
            throw TransportFailure(.connection, detail: "cancelled")
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
