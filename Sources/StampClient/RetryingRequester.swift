import Logging
import StampCore
import Synchronization

/// Makes one request for IDs with the client's retry policy: the retry and failover loop.
///
/// Each attempt goes to the node that the node table chooses (a healthy one not tried yet for this
/// request, when there is one) and ends at the attempt timeout. A failed attempt is tried again
/// after the retry delay, up to `maximumRetries` times and while the retry budget has a token; a
/// node that failed as sick starts its cool-down, but not one whose attempt ended because the
/// caller cancelled. A 4xx is not retried.
///
/// Every attempt asks above what the shard ledger says the shard has returned or buffered, and an
/// answer that does not ascend above it counts as invalid. The request returns the IDs; recording
/// them in the ledger (as returned, or buffered) is the caller's.
final class RetryingRequester<C: Clock<Duration>>: Sendable where C.Instant: Sendable {
    private let configuration: StampClientConfiguration
    private let transport: any StampTransport
    private let clock: C
    private let nodes: Locked<NodeTable<C.Instant>>
    private let ledger: Locked<ShardLedger>
    private let logger: Logger
    private let metrics: ClientMetrics
    private let counters: StatisticsCounters
    private let state: Mutex<State>

    private struct State {
        var bucket: RetryBucket<C.Instant>
        /// How many retry delays have begun, so that tests know when a request waits to retry.
        var retryDelaysStarted = 0
    }

    init(configuration: StampClientConfiguration, transport: any StampTransport, clock: C, nodes: Locked<NodeTable<C.Instant>>, ledger: Locked<ShardLedger>, logger: Logger, metrics: ClientMetrics, counters: StatisticsCounters) {
        self.configuration = configuration
        self.transport = transport
        self.clock = clock
        self.nodes = nodes
        self.ledger = ledger
        self.logger = logger
        self.metrics = metrics
        self.counters = counters
        state = Mutex(State(bucket: RetryBucket(budget: configuration.retryBudget, now: clock.now)))
    }

    /// How many retry delays have begun since the requester was made.
    var retryDelaysStarted: Int {
        state.withLock { $0.retryDelaysStarted }
    }

    /// Gets `count` ascending IDs of `shard`, above `floor` and above every ID the ledger holds for
    /// the shard, trying again and failing over as the policy allows.
    func request(shard: Int, count: Int, above floor: StampID?) async throws(StampClientError) -> [StampID] {
        let started = clock.now
        metrics.requests.increment()
        counters.requests.add(1, ordering: .relaxed)
        state.withLock { $0.bucket.recordRequest(at: started) }
        defer { metrics.requestDuration.recordNanoseconds(started.duration(to: clock.now).wholeNanoseconds) }
        var failures: [StampClientError.Attempt] = []
        var tried: Set<String> = []
        var previous: String?
        for attempt in 0...max(0, configuration.maximumRetries) {
            if attempt > 0 {
                guard state.withLock({ $0.bucket.withdraw(at: clock.now) }) else {
                    logger.warning("retry budget exhausted", metadata: ["stamp.shard": "\(shard)", "stamp.attempts": "\(attempt)"])
                    throw fail(StampClientError(.retryBudgetExhausted, "the retry budget is spent; the cluster is failing too many requests", attempts: failures))
                }
                state.withLock { $0.retryDelaysStarted += 1 }
                do {
                    try await clock.sleep(for: retryDelay())
                } catch {
                    throw fail(StampClientError(.cancelled, "the request was cancelled", attempts: failures))
                }
                metrics.retries.increment()
                counters.retries.add(1, ordering: .relaxed)
            }
            guard let node = nodes.withLock({ $0.choose(excluding: tried) }) else {
                throw fail(StampClientError(.noNodes, "the client knows no node", attempts: failures))
            }
            let after = ledger.withLock { $0.after(shard: shard, floor: floor) }
            if let previous, previous != node {
                metrics.failovers.increment()
                counters.failovers.add(1, ordering: .relaxed)
            }
            previous = node
            tried.insert(node)
            counters.attempts.add(1, ordering: .relaxed)
            let attemptStarted = clock.now
            let outcome = await self.attempt(node: node, shard: shard, count: count, after: after)
            let now = clock.now
            metrics.attemptDuration.recordNanoseconds(attemptStarted.duration(to: now).wholeNanoseconds)
            switch outcome {
            case .success(let ids):
                metrics.attempts["ok"]?.increment()
                nodes.withLock { $0.finish(node, failed: false, at: now) }
                return ids
            case .failure(let failure):
                metrics.attempts[failure.kind.rawValue]?.increment()
                failures.append(StampClientError.Attempt(node: node, failure: failure))
                // An attempt cut short because its caller cancelled says nothing about the node.
                let sick = failure.kind != .invalidRequest && failure.kind != .afterTooFarAhead && !Task.isCancelled
                nodes.withLock { $0.finish(node, failed: sick, at: now) }
                logger.debug("attempt failed", metadata: [
                    "stamp.node": "\(node)", "stamp.shard": "\(shard)", "stamp.attempt": "\(attempt + 1)",
                    "stamp.failure": "\(failure.kind.rawValue)", "stamp.detail": "\(failure.detail)", "stamp.cooling_down": "\(sick)",
                ])
                if Task.isCancelled {
                    throw fail(StampClientError(.cancelled, "the request was cancelled", attempts: failures))
                }
                if !failure.isRetryable {
                    throw fail(StampClientError(.invalidRequest, failure.detail, attempts: failures))
                }
            }
        }
        logger.warning("all attempts failed", metadata: ["stamp.shard": "\(shard)", "stamp.attempts": "\(failures.count)"])
        throw fail(StampClientError(.allNodesFailed, "every attempt failed (\(failures.count) attempts)", attempts: failures))
    }

    /// Counts `error` as a failed call, in the metrics and the statistics, and returns it.
    func fail(_ error: StampClientError) -> StampClientError {
        metrics.failures[error.code]?.increment()
        counters.failures.add(1, ordering: .relaxed)
        return error
    }

    /// The pause before a retry: the delay plus a random share of the jitter.
    private func retryDelay() -> Duration {
        guard configuration.retryJitter > .zero else { return configuration.retryDelay }
        return configuration.retryDelay + configuration.retryJitter * Double.random(in: 0...1)
    }

    /// One attempt, ended by the attempt timeout if the transport has not answered by then. The
    /// IDs must ascend and exceed `after`, or the answer counts as invalid.
    private func attempt(node: String, shard: Int, count: Int, after: StampID?) async -> Result<[StampID], TransportFailure> {
        let transport = self.transport
        let timeout = configuration.attemptTimeout
        let outcome = await withTimeout(
            timeout,
            on: clock,
            timedOut: .failure(TransportFailure(.timeout, detail: "no answer within \(timeout)")),
            cancelled: .failure(TransportFailure(.connection, detail: "cancelled"))
        ) { () async -> Result<[StampID], TransportFailure> in
            do throws(TransportFailure) {
                return .success(try await transport.fetchIDs(node: node, shard: shard, count: count, after: after))
            } catch {
                return .failure(error)
            }
        }
        guard case .success(let ids) = outcome else { return outcome }
        guard ids.count == count else {
            return .failure(TransportFailure(.invalidResponse, detail: "asked for \(count) IDs, got \(ids.count)"))
        }
        var floor = after
        for id in ids {
            if let floor, id <= floor {
                return .failure(TransportFailure(.invalidResponse, detail: "IDs out of order: \(id) is not above \(floor)"))
            }
            floor = id
        }
        return outcome
    }
}
