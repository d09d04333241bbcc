import Foundation
import NIOCore
import NIOHTTP1
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

/// What one attempt of an audit write came to.
enum WriteAttemptOutcome: Equatable {
    /// Stored: the row's ID, and whether the answer said an earlier attempt had stored it.
    case acknowledged(id: Int64, replayed: Bool)
    /// Not acknowledged, for `reason` (the key failures are counted under); `retry` says whether
    /// another attempt with the same idempotency key may succeed.
    case failed(reason: String, detail: String, retry: Bool)

    init(_ result: Result<PipelinedHTTPClient.Answer, PipelinedHTTPError>) {
        switch result {
        case .success(let answer):
            let status = Int(answer.status.code)
            if status == 201, let id = Self.id(in: answer.body) {
                self = .acknowledged(id: id, replayed: answer.headers.first(name: "Idempotent-Replayed") == "true")
                return
            }
            let reason = status == 201 ? "201 without an id" : "HTTP \(status)"
            // A request the server refused for what it is would be refused again.
            self = .failed(reason: reason, detail: reason, retry: status >= 500 || status == 408 || status == 429)
        case .failure(let error):
            // Writes carry an idempotency key, so a write whose answer was lost may be sent again.
            self = .failed(reason: error.code.rawValue, detail: "\(error)", retry: error.code != .clientClosed)
        }
    }

    /// The decimal `"id"` member of a write's answer.
    static func id(in body: ByteBuffer) -> Int64? {
        let bytes = body.readableBytesView
        guard let member = bytes.firstRange(of: idMember) else { return nil }
        let digits = bytes[member.upperBound...].prefix { (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) }
        return Int64(String(decoding: digits, as: UTF8.self))
    }

    private static let idMember = Array(#""id":""#.utf8)
}

/// The demo's requests to the audit API, all on one event loop with no task per request: writes
/// retried with their idempotency key under the seed's policy, and history reads.
///
/// Its methods are called on ``eventLoop`` only; ``start(_:scheduled:)`` is where the open loop's
/// due requests come in, and each one ends with the open loop's ``EventLoopOpenLoop/finished()``.
final class AuditTraffic: @unchecked Sendable {
    let eventLoop: any EventLoop
    /// The balancer's client alone, or one client per audit server, taken in turn.
    let clients: [PipelinedHTTPClient]
    let users: UserLedger
    let writes: RequestRecorder
    let reads: RequestRecorder
    let runner: EventLoopOpenLoop
    private let writerHeaders: HTTPHeaders
    private let readerHeaders: HTTPHeaders
    /// Makes this run's idempotency keys unique.
    private let run = UUID().uuidString.prefix(8).lowercased()
    private var turn = 0
    private var isCancelled = false

    static let fields = ["email", "phone", "address"]
    /// The largest write answer kept.
    static let writeAnswerLimit = 64 * 1024

    init(clients: [PipelinedHTTPClient], writerToken: String, readerToken: String, users: UserLedger, writes: RequestRecorder, reads: RequestRecorder, runner: EventLoopOpenLoop) {
        precondition(!clients.isEmpty, "requests need somewhere to go")
        eventLoop = clients[0].eventLoop
        self.clients = clients
        self.users = users
        self.writes = writes
        self.reads = reads
        self.runner = runner
        writerHeaders = ["Authorization": "Bearer \(writerToken)", "Content-Type": "application/json"]
        readerHeaders = ["Authorization": "Bearer \(readerToken)"]
    }

    /// Starts a request that came due: stream 0 writes, stream 1 reads, each of a random user.
    func start(_ slot: OpenLoopSchedule.Slot, scheduled: ContinuousClock.Instant) {
        eventLoop.assertInEventLoop()
        let user = Int.random(in: 0..<users.count)
        guard slot.stream == 0 else {
            read(user: user, scheduled: scheduled)
            return
        }
        guard let claim = users.claim(near: user) else {
            writes.notStarted(reason: "not started: no user without a write in flight", detail: "no user without a write in flight")
            runner.finished()
            return
        }
        write(claim, scheduled: scheduled)
    }

    /// Stops retrying and closes the connections, from any thread: what is in flight fails, and
    /// each request ends.
    func cancel() {
        eventLoop.execute {
            self.isCancelled = true
            for client in self.clients {
                _ = client.close()
            }
        }
    }

    /// One logical write.
    private struct Write {
        let claim: UserLedger.Claim
        let scheduled: ContinuousClock.Instant
        let target: String
        let headers: HTTPHeaders
        let body: ByteBuffer
    }

    private func write(_ claim: UserLedger.Claim, scheduled: ContinuousClock.Instant) {
        let field = Self.fields[claim.sequence % Self.fields.count]
        var headers = writerHeaders
        headers.add(name: "Idempotency-Key", value: "demo-\(run)-\(claim.user)-\(claim.sequence)")
        let body = ByteBuffer(string: #"{"field":"\#(field)","before":"\#(field)-\#(claim.sequence)","after":"\#(field)-\#(claim.sequence + 1)","actor":"demo","reason":"demo"}"#)
        attempt(Write(claim: claim, scheduled: scheduled, target: "/v1/users/user-\(claim.user)/events", headers: headers, body: body), number: 0)
    }

    /// Attempt `number` (from 0) of a write; a failed one is tried again with the same key after the
    /// retry delay, up to the seed's number of retries.
    private func attempt(_ write: Write, number: Int) {
        let client = nextClient()
        let request = PipelinedHTTPClient.Request(method: .POST, target: write.target, host: client.authority, headers: write.headers, body: write.body)
        client.send(request, timeout: DemoConfiguration.attemptTimeout, bodyLimit: Self.writeAnswerLimit) { result in
            switch WriteAttemptOutcome(result) {
            case .acknowledged(let id, let replayed):
                self.writes.answered(latency: write.scheduled.duration(to: .now))
                self.users.acknowledge(write.claim, id: id, replayed: replayed)
                self.runner.finished()
            case .failed(let reason, let detail, let retry):
                if retry, number < DemoConfiguration.retries, !self.isCancelled {
                    self.users.countRetry()
                    self.eventLoop.scheduleTask(in: TimeAmount(DemoConfiguration.retryDelay)) {
                        if self.isCancelled {
                            self.give(up: write, reason: "cancelled", detail: "the run was cancelled")
                        } else {
                            self.attempt(write, number: number + 1)
                        }
                    }
                } else {
                    self.give(up: write, reason: reason, detail: detail)
                }
            }
        }
    }

    private func give(up write: Write, reason: String, detail: String) {
        users.release(write.claim)
        writes.failed(reason: reason, detail: detail)
        runner.finished()
    }

    /// One history read of a user.
    private func read(user: Int, scheduled: ContinuousClock.Instant) {
        let client = nextClient()
        let request = PipelinedHTTPClient.Request(method: .GET, target: "/v1/users/user-\(user)/events?limit=50", host: client.authority, headers: readerHeaders)
        client.send(request, timeout: DemoConfiguration.attemptTimeout, bodyLimit: 0) { result in
            switch result {
            case .success(let answer) where answer.status == .ok:
                self.reads.answered(latency: scheduled.duration(to: .now))
            case .success(let answer):
                self.reads.failed(reason: "read: HTTP \(answer.status.code)")
            case .failure(let error):
                self.reads.failed(reason: "read: \(error.code.rawValue)", detail: "read: \(error)")
            }
            self.runner.finished()
        }
    }

    private func nextClient() -> PipelinedHTTPClient {
        guard clients.count > 1 else { return clients[0] }
        turn = (turn + 1) % clients.count
        return clients[turn]
    }
}
