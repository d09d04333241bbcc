/// Everything a ``StampIDClient`` is configured with; the defaults are the seed's client policy.
public struct StampClientConfiguration: Sendable {
    /// Base URLs of the generator nodes to start from, such as `http://127.0.0.1:7400`.
    ///
    /// Once discovery has read `GET /v1/cluster`, the nodes it lists replace these; the list is
    /// used again whenever discovery finds no node with an address.
    public var nodes: [String]
    /// The longest one attempt may take before it counts as failed (default 2 s).
    public var attemptTimeout: Duration
    /// How many times a failed request is tried again (default 3).
    public var maximumRetries: Int
    /// The pause before each retry (default 1 s).
    public var retryDelay: Duration
    /// The largest random amount added to each retry delay (default zero: no jitter).
    public var retryJitter: Duration
    /// How long a node that failed is skipped before it is probed again (default 2 s).
    public var coolDown: Duration
    /// How often `run()` looks for cooled-down nodes to probe with `GET /health/ready` (default 250 ms).
    public var probeInterval: Duration
    /// The share of requests that may be retried, and the floor below which retries are always allowed.
    public var retryBudget: RetryBudget
    /// How often `run()` reads `GET /v1/cluster` to learn added and removed nodes; `nil` turns discovery off (default 10 s).
    public var discoveryInterval: Duration?
    /// Local buffers of IDs refilled in the background; `nil` (the default) asks a node for every ID.
    public var prefetch: Prefetch?
    /// Most connections kept open to one node (default 8).
    public var connectionsPerNode: Int
    /// How calls made while others are in flight are sent together; `nil` sends every call as its own request.
    public var coalescing: Coalescing?
    /// The nodes' bearer token, sent as `Authorization: Bearer <token>` with every request; `nil` (the default) sends none.
    public var token: String?

    /// Makes a configuration; every value not given is the default.
    public init(
        nodes: [String] = ["http://127.0.0.1:7400"],
        attemptTimeout: Duration = .seconds(2),
        maximumRetries: Int = 3,
        retryDelay: Duration = .seconds(1),
        retryJitter: Duration = .zero,
        coolDown: Duration = .seconds(2),
        probeInterval: Duration = .milliseconds(250),
        retryBudget: RetryBudget = RetryBudget(),
        discoveryInterval: Duration? = .seconds(10),
        prefetch: Prefetch? = nil,
        connectionsPerNode: Int = 8,
        coalescing: Coalescing? = Coalescing(),
        token: String? = nil
    ) {
        self.nodes = nodes
        self.attemptTimeout = attemptTimeout
        self.maximumRetries = maximumRetries
        self.retryDelay = retryDelay
        self.retryJitter = retryJitter
        self.coolDown = coolDown
        self.probeInterval = probeInterval
        self.retryBudget = retryBudget
        self.discoveryInterval = discoveryInterval
        self.prefetch = prefetch
        self.connectionsPerNode = connectionsPerNode
        self.coalescing = coalescing
        self.token = token
    }

    /// Request coalescing: while a shard has `requestsInFlight` requests out, further calls for it wait
    /// and then go together as one request for all their IDs (as TiDB's PD client batches timestamp
    /// requests). Under load this turns thousands of single-ID calls into a few requests for many IDs
    /// each; a call alone is sent at once. The batch's IDs are above every waiting call's floor.
    public struct Coalescing: Sendable, Equatable {
        /// Requests one shard may have in flight before calls wait to be coalesced (default 2).
        public var requestsInFlight: Int
        /// The most IDs one coalesced request asks for; keep it within the nodes' `--max-count` (default 1,000).
        public var maximumCount: Int

        /// Makes a coalescing policy; values below 1 count as 1.
        public init(requestsInFlight: Int = 2, maximumCount: Int = 1000) {
            self.requestsInFlight = max(1, requestsInFlight)
            self.maximumCount = max(1, maximumCount)
        }
    }

    /// A token bucket that bounds retries, so that a sick cluster receives no retry storm.
    ///
    /// Each first attempt deposits `ratio` tokens and each second deposits `minimumPerSecond`, up to
    /// `capacity`; each retry withdraws one token, and a retry with no token left is not made.
    public struct RetryBudget: Sendable, Equatable {
        /// Tokens deposited per request: the share of requests that may be retried (default 0.2).
        public var ratio: Double
        /// Tokens deposited per second whatever the traffic, so that a quiet client can still retry (default 10).
        public var minimumPerSecond: Double
        /// The most tokens the bucket holds, which bounds a burst of retries (default 1,000).
        public var capacity: Double

        /// Makes a budget; the bucket starts with ten seconds of the floor, at most `capacity`.
        public init(ratio: Double = 0.2, minimumPerSecond: Double = 10, capacity: Double = 1000) {
            self.ratio = ratio
            self.minimumPerSecond = minimumPerSecond
            self.capacity = capacity
        }
    }

    /// How IDs are fetched ahead of need and kept in a local buffer per shard.
    public struct Prefetch: Sendable, Equatable {
        /// The most IDs one shard's buffer holds, and the count of one refill request (default 4,096).
        public var capacity: Int
        /// A refill starts when the buffer holds fewer IDs than this (default half the capacity).
        public var refillBelow: Int
        /// IDs fetched longer ago than this are discarded, so that IDs stay close to real time (default 1 s).
        public var maximumAge: Duration

        /// Makes a prefetch policy.
        public init(capacity: Int = 4096, refillBelow: Int? = nil, maximumAge: Duration = .seconds(1)) {
            self.capacity = capacity
            self.refillBelow = refillBelow ?? capacity / 2
            self.maximumAge = maximumAge
        }
    }
}
