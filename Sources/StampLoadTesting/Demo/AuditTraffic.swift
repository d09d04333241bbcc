import AsyncHTTPClient
import Foundation
import NIOCore
import Synchronization

/// The base URLs requests go to: the load balancer's alone, or each audit server's in turn.
public final class AuditTargets: Sendable {
    public let bases: [String]
    private let turn = Atomic<Int>(0)

    public init(bases: [String]) {
        precondition(!bases.isEmpty, "requests need somewhere to go")
        self.bases = bases
    }

    /// The base URL of the next request.
    public func next() -> String {
        bases.count == 1 ? bases[0] : bases[(turn.wrappingAdd(1, ordering: .relaxed).oldValue & Int.max) % bases.count]
    }
}

/// The demo's requests to the audit API: writes retried with their idempotency key, and history reads.
struct AuditTraffic: Sendable {
    let http: HTTPClient
    let targets: AuditTargets
    let writerToken: String
    let readerToken: String
    let users: UserLedger
    let writes: RequestRecorder
    let reads: RequestRecorder
    /// Makes this run's idempotency keys unique.
    let run = UUID().uuidString.prefix(8).lowercased()

    static let fields = ["email", "phone", "address"]

    /// One logical write: retried with the same idempotency key, so that it is stored once.
    func write(_ claim: UserLedger.Claim, scheduled: ContinuousClock.Instant) async {
        let field = Self.fields[claim.sequence % Self.fields.count]
        let body = #"{"field":"\#(field)","before":"\#(field)-\#(claim.sequence)","after":"\#(field)-\#(claim.sequence + 1)","actor":"demo","reason":"demo"}"#
        var failure = "not sent"
        for attempt in 0...DemoConfiguration.retries {
            if attempt > 0 {
                users.countRetry()
                do {
                    try await Task.sleep(for: DemoConfiguration.retryDelay)
                } catch {
                    break
                }
            }
            var request = HTTPClientRequest(url: "\(targets.next())/v1/users/user-\(claim.user)/events")
            request.method = .POST
            request.headers.add(name: "Authorization", value: "Bearer \(writerToken)")
            request.headers.add(name: "Idempotency-Key", value: "demo-\(run)-\(claim.user)-\(claim.sequence)")
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(string: body))
            do {
                let response = try await http.execute(request, timeout: DemoConfiguration.attemptTimeout)
                let answer = try await response.body.collect(upTo: 64 * 1024)
                let status = response.status.code
                if status == 201, let id = Self.id(in: answer) {
                    writes.answered(latency: scheduled.duration(to: .now))
                    users.acknowledge(claim, id: id, replayed: response.headers.first(name: "Idempotent-Replayed") == "true")
                    return
                }
                failure = status == 201 ? "201 without an id" : "HTTP \(status)"
                // A request the server refused for what it is would be refused again.
                guard status >= 500 || status == 408 || status == 429 else { break }
            } catch {
                failure = Self.describe(error)
            }
        }
        users.release(claim)
        writes.failed(reason: failure)
    }

    /// One history read of a user.
    func read(user: Int, scheduled: ContinuousClock.Instant) async {
        var request = HTTPClientRequest(url: "\(targets.next())/v1/users/user-\(user)/events?limit=50")
        request.headers.add(name: "Authorization", value: "Bearer \(readerToken)")
        do {
            let response = try await http.execute(request, timeout: DemoConfiguration.attemptTimeout)
            _ = try await response.body.collect(upTo: 4 << 20)
            if response.status == .ok {
                reads.answered(latency: scheduled.duration(to: .now))
            } else {
                reads.failed(reason: "read: HTTP \(response.status.code)")
            }
        } catch {
            reads.failed(reason: "read: \(Self.describe(error))")
        }
    }

    /// The decimal `"id"` member of a write's answer.
    static func id(in body: ByteBuffer) -> Int64? {
        let text = String(buffer: body)
        guard let member = text.range(of: #""id":""#) else { return nil }
        return Int64(text[member.upperBound...].prefix { $0.isASCII && $0.isNumber })
    }

    static func describe(_ error: any Error) -> String {
        if let error = error as? HTTPClientError { return "\(error)" }
        return String(describing: type(of: error)) + ": \(error)"
    }
}
