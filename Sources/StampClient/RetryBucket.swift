import StampCore

/// A token bucket that bounds retries: see ``StampClientConfiguration/RetryBudget``.
struct RetryBucket<Instant: InstantProtocol> where Instant.Duration == Swift.Duration {
    let budget: StampClientConfiguration.RetryBudget
    private(set) var tokens: Double
    private var lastRefill: Instant

    init(budget: StampClientConfiguration.RetryBudget, now: Instant) {
        self.budget = budget
        tokens = min(budget.capacity, budget.minimumPerSecond * 10)
        lastRefill = now
    }

    /// Deposits the share of one new request.
    mutating func recordRequest(at now: Instant) {
        refill(at: now)
        tokens = min(budget.capacity, tokens + budget.ratio)
    }

    /// Withdraws one token for a retry; `false` when none is left and the retry must not be made.
    mutating func withdraw(at now: Instant) -> Bool {
        refill(at: now)
        guard tokens >= 1 else { return false }
        tokens -= 1
        return true
    }

    private mutating func refill(at now: Instant) {
        let elapsed = lastRefill.duration(to: now)
        guard elapsed > .zero else { return }
        tokens = min(budget.capacity, tokens + elapsed.secondsValue * budget.minimumPerSecond)
        lastRefill = now
    }
}
