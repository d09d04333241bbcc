import ArgumentParser
import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import ServiceLifecycle
import StampAudit
import StampLoadBalancer
import StampShardMap
import Synchronization

/// Reads every written user's full history back through the balancer and compares it with what was acknowledged.
struct DemoVerifier: Sendable {
    let http: HTTPClient
    let base: String
    let readerToken: String

    static let concurrency = 32
    static let pageSize = 500

    struct Result: Sendable {
        var users = 0
        var unreadableUsers = 0
        var rows = 0
        var rowsPerShard: [Int: Int] = [:]
        var duplicates = 0
        var lost = 0
        var orderViolations = 0
        var foreignRows = 0
        var firstProblem: String?
    }

    private struct History: Sendable {
        let user: Int
        let acknowledged: [Int64]
        var ids: [Int64] = []
        var shards: [Int] = []
        var foreign = 0
        var problem: String?
    }

    private struct Page: Decodable {
        struct Event: Decodable {
            let id: String
            let userId: String
            let shard: Int?
        }

        let events: [Event]
        let next: String?
    }

    func verify(_ users: [(user: Int, acknowledged: [Int64])]) async throws -> Result {
        // Each worker stops at its first unreadable user, so that a broken server fails the check
        // quickly; the users it did not get to count as unreadable.
        let (histories, skipped) = try await withThrowingTaskGroup(of: ([History], Int).self) { group in
            for worker in 0..<Self.concurrency {
                group.addTask {
                    var histories: [History] = []
                    let indices = Array(stride(from: worker, to: users.count, by: Self.concurrency))
                    for (done, index) in indices.enumerated() {
                        try Task.checkCancellation()
                        let history = await history(of: users[index].user, acknowledged: users[index].acknowledged)
                        histories.append(history)
                        if history.problem != nil { return (histories, indices.count - done - 1) }
                    }
                    return (histories, 0)
                }
            }
            var all: [History] = []
            var skipped = 0
            for try await part in group {
                all += part.0
                skipped += part.1
            }
            return (all, skipped)
        }

        var result = Result(users: users.count, unreadableUsers: skipped)
        var seen = Set<Int64>()
        for history in histories {
            if let problem = history.problem {
                result.unreadableUsers += 1
                result.firstProblem = result.firstProblem ?? problem
            }
            result.rows += history.ids.count
            result.foreignRows += history.foreign
            for shard in history.shards { result.rowsPerShard[shard, default: 0] += 1 }
            for id in history.ids where !seen.insert(id).inserted { result.duplicates += 1 }
            let stored = Set(history.ids)
            let acknowledged = Set(history.acknowledged)
            result.lost += history.acknowledged.count { !stored.contains($0) }
            // The stored order is ascending ID; compare it with the write order over the rows both know.
            let storedOrder = history.ids.sorted().filter { acknowledged.contains($0) }
            let writeOrder = history.acknowledged.filter { stored.contains($0) }
            if storedOrder != writeOrder { result.orderViolations += 1 }
        }
        return result
    }

    /// Every page of one user's history, newest first; a page is tried up to 3 times.
    private func history(of user: Int, acknowledged: [Int64]) async -> History {
        var history = History(user: user, acknowledged: acknowledged)
        var cursor: String?
        while true {
            var page: Page?
            var failure = ""
            for attempt in 0..<3 {
                if attempt > 0 { try? await Task.sleep(for: .seconds(1)) }
                do {
                    var request = HTTPClientRequest(url: "\(base)/v1/users/user-\(user)/events?limit=\(Self.pageSize)" + (cursor.map { "&before=\($0)" } ?? ""))
                    request.headers.add(name: "Authorization", value: "Bearer \(readerToken)")
                    let response = try await http.execute(request, timeout: .seconds(5))
                    let body = try await response.body.collect(upTo: 64 << 20)
                    guard response.status == .ok else {
                        failure = "HTTP \(response.status.code): \(String(buffer: body).prefix(300))"
                        continue
                    }
                    page = try JSONDecoder().decode(Page.self, from: Data(buffer: body))
                    break
                } catch {
                    failure = DemoDriver.describe(error)
                }
            }
            guard let page else {
                history.problem = "the history of user-\(user) could not be read: \(failure)"
                return history
            }
            for event in page.events {
                guard let id = Int64(event.id) else {
                    history.problem = "user-\(user) has an event whose ID is not a decimal number: \(event.id)"
                    return history
                }
                history.ids.append(id)
                if let shard = event.shard { history.shards.append(shard) }
                if event.userId != "user-\(user)" { history.foreign += 1 }
            }
            guard let next = page.next else { return history }
            // A cursor must move to older events, or paging would never end.
            if let cursor, let previous = Int64(cursor), let following = Int64(next), following >= previous {
                history.problem = "the history of user-\(user) pages back to a newer cursor (\(next) after \(cursor))"
                return history
            }
            cursor = next
        }
    }
}

/// The figures of a demo run, and their text.
struct DemoReport {
    let text: String
    let passed: Bool

    init(plan: DemoPlan, folder: URL, setting: String, totals: DemoRecorder.Totals, verification: DemoVerifier.Result, drove: Duration, checked: Duration) {
        var latencies = totals.latencies
        latencies.sort()
        var readLatencies = totals.readLatencies
        readLatencies.sort()
        let seconds = max(drove / .seconds(1), 0.001)
        let rate = Int((Double(totals.acknowledged) / seconds).rounded())
        let p99 = Self.milliseconds(Percentiles.value(latencies, 0.99))
        let writes = totals.acknowledged
        let failures = totals.failures.sorted { $0.key < $1.key }.map { "\($0.value)× \($0.key)" }.joined(separator: "; ")
        let shards = verification.rowsPerShard.sorted { $0.key < $1.key }.map { "shard \($0.key): \($0.value)" }.joined(separator: ", ")
        passed = writes > 0 && verification.rows == writes && verification.duplicates == 0 && verification.orderViolations == 0
            && verification.lost == 0 && verification.unreadableUsers == 0 && verification.foreignRows == 0
            && totals.failed == 0 && totals.notStarted == 0 && totals.readsFailed == 0
        text = """
        folder:            \(folder.path)\(plan.keep ? " (kept)" : " (deleted)")
        topology:          \(setting)
        load:              \(plan.rate) writes/s scheduled for \(String(format: "%.1f", Double(plan.duration.components.seconds) + Double(plan.duration.components.attoseconds) / 1e18)) s over \(plan.users) users, \(Int((plan.readFraction * 100).rounded()))% of requests reads; ran \(String(format: "%.1f", seconds)) s until the last answer
        writes:            \(writes) acknowledged (\(totals.replayed) replayed), \(totals.failed) failed, \(totals.notStarted) not started, \(totals.retries) retries
        reads:             \(totals.reads) answered, \(totals.readsFailed) failed, p99 \(Self.milliseconds(Percentiles.value(readLatencies, 0.99))) ms
        failures:          \(failures.isEmpty ? "none" : failures)
        write latency (ms): p50 \(Self.milliseconds(Percentiles.value(latencies, 0.5))) p99 \(p99) p99.9 \(Self.milliseconds(Percentiles.value(latencies, 0.999))) max \(Self.milliseconds(latencies.last ?? 0))
        check:             \(verification.users) users read back in \(String(format: "%.1f", checked / .seconds(1))) s, \(verification.unreadableUsers) unreadable\(verification.firstProblem.map { " (\($0))" } ?? "")
        rows:              \(verification.rows)\(shards.isEmpty ? "" : " (\(shards))")\(verification.foreignRows > 0 ? ", \(verification.foreignRows) under another user" : "")
        lost:              \(verification.lost) acknowledged writes not stored
        duplicates:        \(verification.duplicates)
        order violations:  \(verification.orderViolations) users whose rows are not in write order
        result:            \(passed ? "passed" : "FAILED")
        writes=\(writes) rows=\(verification.rows) duplicates=\(verification.duplicates) order_violations=\(verification.orderViolations) rate=\(rate) p99_ms=\(p99)
        """
    }

    /// Milliseconds with one decimal.
    static func milliseconds(_ nanoseconds: Int64) -> String {
        String(format: "%.1f", Double(nanoseconds) / 1e6)
    }
}
