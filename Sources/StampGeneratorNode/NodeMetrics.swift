import Metrics
import StampCore

/// The metrics a generator node reports, made through an injected factory.
///
/// Counters per shard and per reason are made once, so that the request path never looks them up.
struct NodeMetrics: Sendable {
    let issuedByShard: [Counter]
    let refusals: [String: Counter]
    let backwardSteps: Counter
    let lead: Gauge
    let clockSkew: Gauge
    let reservationHeadroom: Gauge
    let leaseHeld: Gauge
    let renewals: [String: Counter]
    let claims: [String: Counter]

    static let refusalReasons = ["lead-exceeded", "reservation-exhausted", "clock-before-epoch", "layout-exhausted", "lease-not-held", "clock-skewed", "after-too-far-ahead"]

    init(layout: IDLayout, factory: any MetricsFactory) {
        issuedByShard = (0..<layout.shardCount).map { Counter(label: "stamp_ids_issued_total", dimensions: [("shard", String($0))], factory: factory) }
        refusals = Dictionary(uniqueKeysWithValues: Self.refusalReasons.map { ($0, Counter(label: "stamp_refusals_total", dimensions: [("reason", $0)], factory: factory)) })
        backwardSteps = Counter(label: "stamp_clock_backward_steps_total", factory: factory)
        lead = Gauge(label: "stamp_clock_lead_milliseconds", factory: factory)
        clockSkew = Gauge(label: "stamp_clock_skew_milliseconds", factory: factory)
        reservationHeadroom = Gauge(label: "stamp_reservation_headroom_milliseconds", factory: factory)
        leaseHeld = Gauge(label: "stamp_lease_held", factory: factory)
        renewals = Dictionary(uniqueKeysWithValues: ["ok", "error", "lost"].map { ($0, Counter(label: "stamp_lease_renewals_total", dimensions: [("result", $0)], factory: factory)) })
        claims = Dictionary(uniqueKeysWithValues: ["ok", "none-free", "error"].map { ($0, Counter(label: "stamp_lease_claims_total", dimensions: [("result", $0)], factory: factory)) })
    }
}
