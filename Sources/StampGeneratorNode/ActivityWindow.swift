/// The IDs a node issued and the requests it refused over the last minute, from samples of its
/// running totals.
///
/// A pure value: the node feeds it the totals and a monotonic instant at each step of its lease
/// loop and at each status request, and reads the rates from it; tests feed it times by hand.
struct ActivityWindow<Instant: InstantProtocol>: Sendable where Instant.Duration == Duration, Instant: Sendable {
    /// The span the rates cover once the node has run that long.
    static var span: Duration { .seconds(60) }
    /// Samples closer together than this replace nothing and are dropped, bounding the window to
    /// about 60 samples.
    static var resolution: Duration { .seconds(1) }

    struct Sample: Sendable {
        let at: Instant
        let issued: UInt64
        let refused: UInt64
    }

    /// Samples, oldest first: at most one older than ``span`` before the newest.
    private(set) var samples: [Sample] = []

    /// What the window measured: IDs per second and refusals over ``seconds``.
    struct Rates: Sendable, Equatable {
        let idsPerSecond: Double
        let refusals: UInt64
        let seconds: Double
    }

    /// Records the running totals at `now`.
    mutating func record(at now: Instant, issued: UInt64, refused: UInt64) {
        if let last = samples.last, last.at.duration(to: now) < Self.resolution { return }
        samples.append(Sample(at: now, issued: issued, refused: refused))
        // Keep one sample at or beyond the span, the base the rates count from.
        let horizon = now.advanced(by: .zero - Self.span)
        while samples.count > 1, samples[1].at <= horizon { samples.removeFirst() }
    }

    /// The rates from the sample that starts the window to the totals at `now`.
    func rates(at now: Instant, issued: UInt64, refused: UInt64) -> Rates {
        let horizon = now.advanced(by: .zero - Self.span)
        guard let base = samples.last(where: { $0.at <= horizon }) ?? samples.first else {
            return Rates(idsPerSecond: 0, refusals: 0, seconds: 0)
        }
        let elapsed = base.at.duration(to: now)
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        let issuedSince = issued >= base.issued ? issued - base.issued : 0
        let refusedSince = refused >= base.refused ? refused - base.refused : 0
        return Rates(idsPerSecond: seconds > 0 ? Double(issuedSince) / seconds : 0, refusals: refusedSince, seconds: seconds)
    }
}
