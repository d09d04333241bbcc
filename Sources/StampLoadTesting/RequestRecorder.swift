import StampCore
import Synchronization

/// What one kind of request did in a run: answered (with latency), failed or not started, each
/// failure counted under its reason; in total, and in the window that the progress line drains.
public final class RequestRecorder: Sendable {
    /// Counts and latencies of answered requests.
    public struct Tally: Sendable, Equatable {
        public var answered = 0
        public var failed = 0
        public var notStarted = 0
        /// Latencies of the answered requests in nanoseconds, in the order recorded.
        public var latencies: [Int64] = []
        /// Failures and requests not started, by reason (in the total only).
        public var reasons: [String: Int] = [:]

        public init() {}

        /// Failed and not started together.
        public var unanswered: Int { failed + notStarted }
    }

    /// Answers recorded together, for a driver that records too often to take the lock each time.
    public struct Batch: Sendable {
        public private(set) var latencies: [Int64] = []

        public init() {}

        public mutating func answered(latency: Duration) {
            latencies.append(latency.wholeNanoseconds)
        }
    }

    /// What a first failure of its reason was.
    public enum Outcome: Sendable, Equatable {
        case failed
        case notStarted
    }

    private struct State {
        var total = Tally()
        var window = Tally()
    }

    private let state = Mutex(State())
    private let firstOfReason: @Sendable (Outcome, _ reason: String, _ detail: String) -> Void

    /// `firstOfReason` hears the first failure of each reason, with its detail, to show it as it happens.
    public init(firstOfReason: @escaping @Sendable (Outcome, _ reason: String, _ detail: String) -> Void = { _, _, _ in }) {
        self.firstOfReason = firstOfReason
    }

    /// Records an answered request.
    public func answered(latency: Duration) {
        let nanoseconds = latency.wholeNanoseconds
        state.withLock { state in
            state.total.answered += 1
            state.total.latencies.append(nanoseconds)
            state.window.answered += 1
            state.window.latencies.append(nanoseconds)
        }
    }

    /// Adds the answers of a batch and empties it.
    public func merge(_ batch: inout Batch) {
        state.withLock { state in
            state.total.answered += batch.latencies.count
            state.total.latencies += batch.latencies
            state.window.answered += batch.latencies.count
            state.window.latencies += batch.latencies
        }
        batch = Batch()
    }

    /// Records a request that failed for `reason`, the key it is counted under; `detail` (the
    /// reason when `nil`) is what the first of that reason shows.
    public func failed(reason: String, detail: String? = nil) {
        record(.failed, reason: reason, detail: detail)
    }

    /// Records a request that was due but not started, for `reason`, as ``failed(reason:detail:)`` does.
    public func notStarted(reason: String, detail: String? = nil) {
        record(.notStarted, reason: reason, detail: detail)
    }

    /// The window's figures since the last drain; the window starts again empty.
    public func drainWindow() -> Tally {
        state.withLock { state in
            defer { state.window = Tally() }
            return state.window
        }
    }

    /// The figures of the whole run so far.
    public var total: Tally { state.withLock { $0.total } }

    private func record(_ outcome: Outcome, reason: String, detail: String?) {
        let first = state.withLock { state in
            switch outcome {
            case .failed:
                state.total.failed += 1
                state.window.failed += 1
            case .notStarted:
                state.total.notStarted += 1
                state.window.notStarted += 1
            }
            state.total.reasons[reason, default: 0] += 1
            return state.total.reasons[reason] == 1
        }
        if first { firstOfReason(outcome, reason, detail ?? reason) }
    }
}
