/// The pure decision logic of an ID generator: given the wall time and its state, which IDs to
/// issue, or why not and for how long.
///
/// Logical time is `t = max(wall, last t)`. Within one millisecond the sequence counts up; when it
/// is exhausted the generator borrows the next millisecond, but only while `t - wall <= maxLead`.
/// A backward step of the wall clock is absorbed the same way. Nothing here reads a clock,
/// sleeps or locks: ``IDGenerator`` is the thin shell that does.
public struct GeneratorState: Sendable {
    /// The layout the IDs follow.
    public let layout: IDLayout
    /// How far logical time may run ahead of the wall clock, in milliseconds.
    public var maxLeadMilliseconds: Int64
    /// Exclusive upper bound on the time field, such as a persisted reservation; `nil` for none.
    public var timeLimit: Int64?

    /// Time field of the last ID issued, or -1 before the first.
    public private(set) var lastTime: Int64 = -1
    /// Sequence of the last ID issued.
    public private(set) var lastSequence: Int64
    /// The latest wall time seen (layout time units), to notice backward steps.
    public private(set) var lastWallTime: Int64?
    /// Counters for observation.
    public private(set) var statistics = GeneratorStatistics()

    /// Creates a state that has issued nothing yet.
    public init(layout: IDLayout, maxLeadMilliseconds: Int64) {
        self.layout = layout
        self.maxLeadMilliseconds = maxLeadMilliseconds
        self.lastSequence = layout.maxSequence
    }

    /// A run of consecutive positions (time, sequence) handed out by one decision.
    public struct Issue: Sendable, Equatable {
        public let startTime: Int64
        public let startSequence: Int64
        public let count: Int
    }

    /// What the generator must do for a request.
    public enum Decision: Sendable, Equatable {
        /// Issue `count` IDs starting at this position.
        case issue(Issue)
        /// Issue nothing.
        case refuse(Refusal)
    }

    /// Why a request got no IDs, and when to try again.
    public struct Refusal: Sendable, Equatable {
        public enum Reason: String, Sendable {
            /// Issuing would put logical time more than `maxLead` ahead of the wall clock.
            case leadExceeded = "lead-exceeded"
            /// Issuing would reach the time limit (the persisted reservation).
            case reservationExhausted = "reservation-exhausted"
            /// The requested lower bound (`after`) is further ahead than `maxLead` allows.
            case afterTooFarAhead = "after-too-far-ahead"
            /// The wall clock reads before the layout's epoch.
            case clockBeforeEpoch = "clock-before-epoch"
            /// The layout's time field has run out; this never clears.
            case layoutExhausted = "layout-exhausted"
        }

        public let reason: Reason
        /// How long to wait before the same request can succeed, in milliseconds (at least 1),
        /// or `nil` when waiting does not help.
        public let retryAfterMilliseconds: Int64?
    }

    /// Decides on `count` IDs at wall time `wallUnixMilliseconds`, each greater than position `after`
    /// when given, and moves the state past them when they are issued.
    public mutating func take(count: Int, wallUnixMilliseconds: Int64, after: (time: Int64, sequence: Int64)? = nil) -> Decision {
        precondition(count >= 1, "count must be positive")
        let wall = wallUnixMilliseconds - layout.epochUnixMilliseconds
        if let lastWallTime, wall < lastWallTime {
            statistics.backwardSteps += 1
            statistics.largestBackwardStepMilliseconds = max(statistics.largestBackwardStepMilliseconds, lastWallTime - wall)
        }
        lastWallTime = wall
        guard wall >= 0 else { return refuse(.clockBeforeEpoch, retryAfter: -wall) }

        var baseTime = lastTime, baseSequence = lastSequence
        if let after, (after.time, after.sequence) > (baseTime, baseSequence) {
            guard after.time - wall <= maxLeadMilliseconds else {
                return refuse(.afterTooFarAhead, retryAfter: after.time - wall - maxLeadMilliseconds)
            }
            (baseTime, baseSequence) = after
        }
        let startTime: Int64, startSequence: Int64
        if wall > baseTime {
            (startTime, startSequence) = (wall, 0)
        } else if baseSequence < layout.maxSequence {
            (startTime, startSequence) = (baseTime, baseSequence + 1)
        } else {
            (startTime, startSequence) = (baseTime + 1, 0)
        }
        let last = startSequence + Int64(count) - 1
        let endTime = startTime + last >> Int64(layout.sequenceBits)
        let endSequence = last & layout.maxSequence

        if endTime > layout.maxTime { return refuse(.layoutExhausted, retryAfter: nil) }
        if endTime - wall > maxLeadMilliseconds {
            return refuse(.leadExceeded, retryAfter: endTime - wall - maxLeadMilliseconds)
        }
        if let timeLimit, endTime >= timeLimit {
            return refuse(.reservationExhausted, retryAfter: nil)
        }
        lastTime = endTime
        lastSequence = endSequence
        statistics.issued += UInt64(count)
        return .issue(Issue(startTime: startTime, startSequence: startSequence, count: count))
    }

    /// Milliseconds by which logical time is ahead of `wallUnixMilliseconds` (0 when behind).
    public func lead(atWallUnixMilliseconds wallUnixMilliseconds: Int64) -> Int64 {
        max(0, lastTime - (wallUnixMilliseconds - layout.epochUnixMilliseconds))
    }

    /// Moves the state so that the next ID has a time of at least `time`; used after claiming a node
    /// ID whose previous owner may have issued IDs below its reservation.
    public mutating func advance(toTimeAtLeast time: Int64) {
        if time - 1 > lastTime || (time - 1 == lastTime && lastSequence < layout.maxSequence) {
            lastTime = time - 1
            lastSequence = layout.maxSequence
        }
    }

    private mutating func refuse(_ reason: Refusal.Reason, retryAfter: Int64?) -> Decision {
        statistics.refusals += 1
        return .refuse(Refusal(reason: reason, retryAfterMilliseconds: retryAfter.map { max(1, $0) }))
    }
}

/// The position arithmetic behind ``IDGenerator``'s lock-free path.
///
/// A position packs an ID's time and sequence as `time << sequenceBits | sequence`, so that position + 1
/// is the next ID's, also across a millisecond (a borrowed one included). The generator publishes the last
/// position in an atomic word whose top bit, ``openBit``, is set only while a ``LockFreeWindow`` exists: the
/// last wall time seen and the highest position that lead, time limit and layout allow at that wall time.
/// For a request whose wall reading is that wall time, whose `after` is not past the position and whose IDs
/// stay within the window, ``take(count:wallUnixMilliseconds:after:)`` would issue the positions right after
/// it, count no backward step and change nothing but the last position and the issued counter: exactly what
/// ``issuing(count:atTime:afterPosition:from:window:)`` and ``recordIssued(upTo:)`` do. So at the layout's
/// ceiling, where every millisecond is borrowed, one decision per wall millisecond takes the lock.
extension GeneratorState {
    /// The bit of a published word that says it may be advanced without the lock.
    static let openBit: UInt64 = 1 << 63

    /// Where the lock-free path may issue: at wall time `wallTime` (layout units), up to `limitPosition`.
    struct LockFreeWindow: Equatable {
        let wallTime: Int64
        let limitPosition: Int64
    }

    /// The last position issued, `time << sequenceBits | sequence`, or -1 before the first.
    var lastPosition: Int64 {
        lastTime < 0 ? -1 : lastTime << Int64(layout.sequenceBits) | lastSequence
    }

    /// The window for lock-free issuing in this state, or `nil` when every request needs a decision.
    var lockFreeWindow: LockFreeWindow? {
        guard lastTime >= 0, let wall = lastWallTime, wall >= 0, lastTime >= wall, maxLeadMilliseconds >= 0 else { return nil }
        var limitTime = min(layout.maxTime, wall + min(maxLeadMilliseconds, layout.maxTime))
        if let timeLimit { limitTime = min(limitTime, timeLimit - 1) }
        let limitPosition = limitTime << Int64(layout.sequenceBits) | layout.maxSequence
        guard limitTime >= 0, lastPosition < limitPosition else { return nil }
        return LockFreeWindow(wallTime: wall, limitPosition: limitPosition)
    }

    /// The last position as a closed word (0 before the first ID).
    var closedWord: UInt64 {
        lastTime >= 0 ? UInt64(lastPosition) : 0
    }

    /// The word to publish for this state: the last position, with ``openBit`` when it has a lock-free window.
    var publishedWord: UInt64 {
        lockFreeWindow == nil ? closedWord : closedWord | Self.openBit
    }

    /// The published word after issuing `count` IDs at wall time `time` (layout time units), each above
    /// `afterPosition`, within `window`; `nil` when the request needs a decision under the lock.
    @inline(__always)
    static func issuing(count: Int64, atTime time: Int64, afterPosition: Int64, from word: UInt64, window: LockFreeWindow) -> UInt64? {
        guard word & openBit != 0, time == window.wallTime else { return nil }
        let position = Int64(bitPattern: word & ~openBit)
        guard afterPosition <= position, count <= window.limitPosition - position else { return nil }
        return word + UInt64(count)
    }

    /// Accounts for the IDs issued from the published word up to `word` without a decision.
    mutating func recordIssued(upTo word: UInt64) {
        guard word & Self.openBit != 0 else { return }
        let position = Int64(bitPattern: word & ~Self.openBit)
        statistics.issued += UInt64(position - lastPosition)
        lastTime = position >> Int64(layout.sequenceBits)
        lastSequence = position & layout.maxSequence
    }
}

/// Counters a generator keeps for observation.
public struct GeneratorStatistics: Sendable, Equatable {
    /// IDs issued.
    public var issued: UInt64 = 0
    /// Requests refused (each one made a caller wait or fail).
    public var refusals: UInt64 = 0
    /// Times the wall clock was seen to go backwards.
    public var backwardSteps: UInt64 = 0
    /// The largest backward step seen, in milliseconds.
    public var largestBackwardStepMilliseconds: Int64 = 0
    /// Logical time's lead over the wall clock, in milliseconds, when the statistics were read.
    public var leadMilliseconds: Int64 = 0

    public init() {}
}
