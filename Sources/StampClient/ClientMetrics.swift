import Metrics
import Synchronization

/// The metrics a client reports, made once through an injected factory.
struct ClientMetrics: Sendable {
    let requests: Counter
    let attempts: [String: Counter]
    let retries: Counter
    let failovers: Counter
    let failures: [StampClientError.Code: Counter]
    let attemptDuration: Timer
    let requestDuration: Timer
    let prefetchHits: Counter
    let prefetchMisses: Counter
    let prefetchFills: Counter
    let prefetchDiscarded: Counter

    /// Every outcome an attempt is counted under.
    static let outcomes = ["ok"] + [TransportFailure.Kind.timeout, .connection, .unavailable, .afterTooFarAhead, .serverError, .invalidRequest, .invalidResponse].map(\.rawValue)

    init(factory: any MetricsFactory) {
        requests = Counter(label: "stamp_client_requests_total", factory: factory)
        attempts = Dictionary(uniqueKeysWithValues: Self.outcomes.map { ($0, Counter(label: "stamp_client_attempts_total", dimensions: [("outcome", $0)], factory: factory)) })
        retries = Counter(label: "stamp_client_retries_total", factory: factory)
        failovers = Counter(label: "stamp_client_failovers_total", factory: factory)
        let codes: [StampClientError.Code] = [.allNodesFailed, .invalidRequest, .cancelled, .retryBudgetExhausted, .noNodes]
        failures = Dictionary(uniqueKeysWithValues: codes.map { ($0, Counter(label: "stamp_client_failures_total", dimensions: [("code", $0.rawValue)], factory: factory)) })
        attemptDuration = Timer(label: "stamp_client_attempt_duration_seconds", factory: factory)
        requestDuration = Timer(label: "stamp_client_request_duration_seconds", factory: factory)
        prefetchHits = Counter(label: "stamp_client_prefetch_hits_total", factory: factory)
        prefetchMisses = Counter(label: "stamp_client_prefetch_misses_total", factory: factory)
        prefetchFills = Counter(label: "stamp_client_prefetch_fills_total", factory: factory)
        prefetchDiscarded = Counter(label: "stamp_client_prefetch_discarded_total", factory: factory)
    }
}

/// Running totals of a client's work, for tools such as `stamp load` that report them.
public struct StampClientStatistics: Sendable, Equatable {
    /// Requests made to the cluster (first attempts), including prefetch refills.
    public var requests = 0
    /// Attempts made, first ones and retries.
    public var attempts = 0
    /// Retries made.
    public var retries = 0
    /// Retries sent to another node than the attempt before.
    public var failovers = 0
    /// Requests that failed after every allowed attempt.
    public var failures = 0
    /// IDs handed out from a prefetch buffer.
    public var prefetchHits = 0
    /// Prefetched IDs discarded as too old.
    public var prefetchDiscarded = 0
}

/// Lock-free counters behind ``StampClientStatistics``.
final class StatisticsCounters: Sendable {
    let requests = Atomic<Int>(0)
    let attempts = Atomic<Int>(0)
    let retries = Atomic<Int>(0)
    let failovers = Atomic<Int>(0)
    let failures = Atomic<Int>(0)
    let prefetchHits = Atomic<Int>(0)
    let prefetchDiscarded = Atomic<Int>(0)

    var snapshot: StampClientStatistics {
        StampClientStatistics(
            requests: requests.load(ordering: .relaxed),
            attempts: attempts.load(ordering: .relaxed),
            retries: retries.load(ordering: .relaxed),
            failovers: failovers.load(ordering: .relaxed),
            failures: failures.load(ordering: .relaxed),
            prefetchHits: prefetchHits.load(ordering: .relaxed),
            prefetchDiscarded: prefetchDiscarded.load(ordering: .relaxed)
        )
    }
}
