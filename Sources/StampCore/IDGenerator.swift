import Synchronization

/// A thread-safe generator of Stamp IDs for one node.
///
/// It reads the wall clock and applies ``GeneratorState``; it never sleeps unless asked to through
/// ``nextWaiting(shard:count:after:clock:)``. Every ID it issues is greater than every ID it issued
/// before, whatever the shard.
///
/// Most requests take no lock: while the state allows it, the last position is published in one atomic
/// word that callers advance with a compare-and-exchange when their wall-clock reading is the wall time
/// the word was published at and their IDs fit its window (see ``GeneratorState/lockFreeWindow``), borrowed
/// milliseconds included. Any other request, such as the first of a new wall millisecond, a backward step
/// or a refusal, closes the word and lets the state decide under the lock.
public final class IDGenerator: Sendable {
    /// Largest number of IDs one call may ask for.
    public static let maxBatch = 1_000_000

    /// The layout of the IDs.
    public let layout: IDLayout
    /// The node ID written into every ID.
    public let node: Int
    private let wallClock: any WallClock
    private let readsSystemClock: Bool
    private let epochUnixMilliseconds: Int64
    private let sequenceBits: Int64
    private let maxSequence: Int64
    private let sequenceShift: Int64
    private let shardShift: Int64
    private let maxShard: Int
    private let locked: Mutex<Locked>
    private let word = Atomic<UInt64>(0)
    /// The window of the open word, written under the lock only while the word is closed.
    private let windowWallTime = Atomic<Int64>(0)
    private let windowLimitPosition = Atomic<Int64>(0)

    private struct Locked {
        var state: GeneratorState
        /// The position of the word when it was last closed. The word reopens only above it, so a
        /// reopened word never equals one a lock-free caller read before the close, and a successful
        /// compare-and-exchange proves that the window it read is still the published one.
        var closedPosition: Int64 = -1
    }

    /// Creates a generator for `node`, which must fit the layout.
    public init(layout: IDLayout = .default, node: Int, maxLeadMilliseconds: Int64 = 1000, wallClock: any WallClock = SystemWallClock()) throws(GeneratorError) {
        guard node >= 0, node <= layout.maxNode else {
            throw GeneratorError(.nodeOutOfRange, "node \(node) is outside 0...\(layout.maxNode) of the layout")
        }
        guard maxLeadMilliseconds >= 0 else {
            throw GeneratorError(.invalidArgument, "maximum lead must not be negative")
        }
        self.layout = layout
        self.node = node
        self.wallClock = wallClock
        self.readsSystemClock = wallClock is SystemWallClock
        self.epochUnixMilliseconds = layout.epochUnixMilliseconds
        self.sequenceBits = Int64(layout.sequenceBits)
        self.maxSequence = layout.maxSequence
        self.sequenceShift = layout.sequenceShift
        self.shardShift = layout.shardShift
        self.maxShard = layout.maxShard
        self.locked = Mutex(Locked(state: GeneratorState(layout: layout, maxLeadMilliseconds: maxLeadMilliseconds)))
    }

    /// Issues one ID for `shard`, or throws a refusal that says how long to wait.
    public func next(shard: Int) throws(GeneratorError) -> StampID {
        try checkShard(shard)
        let wall = readWallClock()
        if let word = issueWithoutLock(count: 1, wall: wall, afterPosition: -1) {
            return id(position: Int64(bitPattern: word & ~GeneratorState.openBit), shard: shard)
        }
        switch take(count: 1, after: nil) {
        case .issue(let issue):
            return id(position: issue.startTime << sequenceBits | issue.startSequence, shard: shard)
        case .refuse(let refusal):
            throw GeneratorError(refusal: refusal)
        }
    }

    /// Issues `count` consecutive IDs for `shard`, all or none, each greater than `after` when given.
    public func next(shard: Int, count: Int, after: StampID? = nil) throws(GeneratorError) -> [StampID] {
        var ids: [StampID] = []
        try next(shard: shard, count: count, after: after) { ids = Array($0) }
        return ids
    }

    /// Issues `count` consecutive IDs for `shard` and hands them to `body` without building an array.
    public func next(shard: Int, count: Int, after: StampID? = nil, _ body: (IssuedIDs) throws(GeneratorError) -> Void) throws(GeneratorError) {
        try checkShard(shard)
        guard count >= 1, count <= Self.maxBatch else {
            throw GeneratorError(.countOutOfRange, "count \(count) is outside 1...\(Self.maxBatch)")
        }
        let wall = readWallClock()
        let afterPosition = after.map { $0.rawValue >> sequenceShift } ?? -1
        let decision: GeneratorState.Decision
        if let word = issueWithoutLock(count: Int64(count), wall: wall, afterPosition: afterPosition) {
            let start = Int64(bitPattern: word & ~GeneratorState.openBit) - Int64(count) + 1
            decision = .issue(GeneratorState.Issue(startTime: start >> sequenceBits, startSequence: start & maxSequence, count: count))
        } else {
            decision = take(count: count, after: after.map { $0.position(in: layout) })
        }
        switch decision {
        case .issue(let issue):
            try body(IssuedIDs(issue: issue, shard: shard, node: node, layout: layout))
        case .refuse(let refusal):
            throw GeneratorError(refusal: refusal)
        }
    }

    /// Issues `count` IDs, waiting on `clock` while the generator refuses with a retry time.
    ///
    /// Refusals that waiting cannot clear (a reservation, an exhausted layout) are thrown.
    public func nextWaiting<C: Clock<Duration>>(shard: Int, count: Int = 1, after: StampID? = nil, clock: C) async throws -> [StampID] {
        while true {
            let result = Result { () throws(GeneratorError) in try next(shard: shard, count: count, after: after) }
            switch result {
            case .success(let ids):
                return ids
            case .failure(let error) where error.code == .leadExceeded || error.code == .clockBeforeEpoch:
                try await clock.sleep(for: .milliseconds(error.retryAfterMilliseconds ?? 1))
            case .failure(let error):
                throw error
            }
        }
    }

    /// The current counters, with the lead measured now.
    public var statistics: GeneratorStatistics {
        locked.withLock { locked in
            var current = locked.state
            current.recordIssued(upTo: word.load(ordering: .acquiring))
            var statistics = current.statistics
            statistics.leadMilliseconds = current.lead(atWallUnixMilliseconds: readWallClock())
            return statistics
        }
    }

    /// Runs `body` on the state under the lock: how the lease keeper sets the reservation limit
    /// and moves past a previous owner's reservation.
    public func withState<Result: Sendable>(_ body: (inout GeneratorState) -> Result) -> Result {
        locked.withLock { locked in
            closeWord(of: &locked)
            defer { publishWord(of: &locked) }
            return body(&locked.state)
        }
    }

    /// Reads the wall clock in Unix milliseconds, calling the system clock directly when it is the one in use.
    @inline(__always)
    private func readWallClock() -> Int64 {
        readsSystemClock ? SystemWallClock().unixMilliseconds() : wallClock.unixMilliseconds()
    }

    /// Advances the published word by `count` when the state allows it; returns the new word, whose
    /// position is the last ID issued, or `nil` when the request must be decided under the lock.
    @inline(__always)
    private func issueWithoutLock(count: Int64, wall: Int64, afterPosition: Int64) -> UInt64? {
        let time = wall - epochUnixMilliseconds
        var current = word.load(ordering: .acquiring)
        // The window is read after each (acquiring) read of the word, never reused across a failed
        // exchange: the word may have been closed and reopened with another window since.
        while current & GeneratorState.openBit != 0 {
            let window = GeneratorState.LockFreeWindow(wallTime: windowWallTime.load(ordering: .relaxed), limitPosition: windowLimitPosition.load(ordering: .relaxed))
            guard let desired = GeneratorState.issuing(count: count, atTime: time, afterPosition: afterPosition, from: current, window: window) else { return nil }
            let (exchanged, original) = word.weakCompareExchange(expected: current, desired: desired, ordering: .acquiringAndReleasing)
            if exchanged { return desired }
            current = original
        }
        return nil
    }

    /// Decides under the lock, reading the wall clock again inside it: a reading taken before waiting
    /// for the lock may be stale, which would count a false backward step and, with several threads at
    /// the layout's ceiling, refuse callers that the current time allows.
    private func take(count: Int, after: (time: Int64, sequence: Int64)?) -> GeneratorState.Decision {
        locked.withLock { locked in
            closeWord(of: &locked)
            let current = readWallClock()
            let decision = locked.state.take(count: count, wallUnixMilliseconds: current, after: after)
            publishWord(of: &locked)
            return decision
        }
    }

    /// Stops lock-free issuing and folds the IDs it issued into the state; called under the lock.
    private func closeWord(of locked: inout Locked) {
        guard word.load(ordering: .acquiring) & GeneratorState.openBit != 0 else { return }
        let (closed, _) = word.bitwiseAnd(~GeneratorState.openBit, ordering: .acquiringAndReleasing)
        locked.state.recordIssued(upTo: closed)
        locked.closedPosition = locked.state.lastPosition
    }

    /// Publishes the state for lock-free issuing, opening the word only above the position it was last
    /// closed at; called under the lock, with the word closed.
    private func publishWord(of locked: inout Locked) {
        let state = locked.state
        guard let window = state.lockFreeWindow, state.lastPosition > locked.closedPosition else {
            word.store(state.closedWord, ordering: .releasing)
            return
        }
        windowWallTime.store(window.wallTime, ordering: .relaxed)
        windowLimitPosition.store(window.limitPosition, ordering: .relaxed)
        word.store(state.closedWord | GeneratorState.openBit, ordering: .releasing)
    }

    /// The ID at `position` for `shard` on this node.
    @inline(__always)
    private func id(position: Int64, shard: Int) -> StampID {
        StampID(unchecked: position << sequenceShift | Int64(shard) << shardShift | Int64(node))
    }

    @inline(__always)
    private func checkShard(_ shard: Int) throws(GeneratorError) {
        guard shard >= 0, shard <= maxShard else {
            throw GeneratorError(.shardOutOfRange, "shard \(shard) is outside 0...\(layout.maxShard) of the layout")
        }
    }
}

/// A run of consecutive IDs from one generator call, readable without allocating.
public struct IssuedIDs: RandomAccessCollection, Sendable {
    let issue: GeneratorState.Issue
    let shard: Int
    let node: Int
    let layout: IDLayout

    public var startIndex: Int { 0 }
    public var endIndex: Int { issue.count }

    public subscript(position: Int) -> StampID {
        let offset = issue.startSequence + Int64(position)
        let time = issue.startTime + offset >> Int64(layout.sequenceBits)
        let sequence = offset & layout.maxSequence
        return StampID(unchecked: time << layout.timeShift | sequence << layout.sequenceShift | Int64(shard) << layout.shardShift | Int64(node))
    }
}

/// Why a generator issued nothing.
public struct GeneratorError: Error, Hashable, CustomStringConvertible {
    /// Stable codes for generator errors.
    public enum Code: String, Sendable {
        case shardOutOfRange = "shard-out-of-range"
        case nodeOutOfRange = "node-out-of-range"
        case countOutOfRange = "count-out-of-range"
        case invalidArgument = "invalid-argument"
        case leadExceeded = "lead-exceeded"
        case reservationExhausted = "reservation-exhausted"
        case afterTooFarAhead = "after-too-far-ahead"
        case clockBeforeEpoch = "clock-before-epoch"
        case layoutExhausted = "layout-exhausted"
    }

    public let code: Code
    /// A message safe to show to users.
    public let message: String
    /// For refusals that clear with time: how long to wait, in milliseconds.
    public let retryAfterMilliseconds: Int64?

    init(_ code: Code, _ message: String, retryAfterMilliseconds: Int64? = nil) {
        self.code = code
        self.message = message
        self.retryAfterMilliseconds = retryAfterMilliseconds
    }

    init(refusal: GeneratorState.Refusal) {
        let code: Code = switch refusal.reason {
        case .leadExceeded: .leadExceeded
        case .reservationExhausted: .reservationExhausted
        case .afterTooFarAhead: .afterTooFarAhead
        case .clockBeforeEpoch: .clockBeforeEpoch
        case .layoutExhausted: .layoutExhausted
        }
        let message = switch refusal.reason {
        case .leadExceeded: "logical time would run more than the maximum lead ahead of the wall clock"
        case .reservationExhausted: "the node's persisted time reservation is used up"
        case .afterTooFarAhead: "the requested lower bound is further ahead of this node's clock than the maximum lead"
        case .clockBeforeEpoch: "the wall clock reads before the layout's epoch"
        case .layoutExhausted: "the layout's time field has run out"
        }
        self.init(code, message, retryAfterMilliseconds: refusal.retryAfterMilliseconds)
    }

    /// Whether this is a refusal of a valid request (the node cannot issue now) rather than bad input.
    public var isRefusal: Bool {
        switch code {
        case .leadExceeded, .reservationExhausted, .clockBeforeEpoch, .layoutExhausted: true
        case .shardOutOfRange, .nodeOutOfRange, .countOutOfRange, .invalidArgument, .afterTooFarAhead: false
        }
    }

    public var description: String { message }
}
