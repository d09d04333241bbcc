import AsyncHTTPClient
import Foundation
import NIOCore

/// Reads every written user's full history back (through the balancer, or from each audit server
/// in turn) and compares it with what was acknowledged.
struct DemoVerifier: Sendable {
    let http: HTTPClient
    let targets: AuditTargets
    let readerToken: String

    static let concurrency = 32
    static let pageSize = 500

    /// What the read-back found.
    struct Result: Sendable {
        var users = 0
        var unreadableUsers = 0
        var rows = 0
        var rowsPerShard: [Int: Int] = [:]
        /// The ID of every row read, for the duplicate check.
        var ids: [Int64] = []
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
        for history in histories {
            if let problem = history.problem {
                result.unreadableUsers += 1
                result.firstProblem = result.firstProblem ?? problem
            }
            result.rows += history.ids.count
            result.foreignRows += history.foreign
            for shard in history.shards { result.rowsPerShard[shard, default: 0] += 1 }
            result.ids += history.ids
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

    static func describe(_ error: any Error) -> String {
        if let error = error as? HTTPClientError { return "\(error)" }
        return String(describing: type(of: error)) + ": \(error)"
    }

    /// Every page of one user's history, newest first; a page is tried up to 3 times.
    private func history(of user: Int, acknowledged: [Int64]) async -> History {
        var history = History(user: user, acknowledged: acknowledged)
        var cursor: String?
        while true {
            var page: Page?
            var failure = ""
            for attempt in 0..<3 {
                if attempt > 0 { try? await Task.sleep(for: DemoConfiguration.retryDelay) }
                do {
                    var request = HTTPClientRequest(url: "\(targets.next())/v1/users/user-\(user)/events?limit=\(Self.pageSize)" + (cursor.map { "&before=\($0)" } ?? ""))
                    request.headers.add(name: "Authorization", value: "Bearer \(readerToken)")
                    let response = try await http.execute(request, timeout: .seconds(5))
                    let body = try await response.body.collect(upTo: 64 << 20)
                    guard response.status == .ok else {
                        failure = "HTTP \(response.status.code): \(String(buffer: body).prefix(300))"
                        continue
                    }
                    page = try JSONDecoder().decode(Page.self, from: Data(body.readableBytesView))
                    break
                } catch {
                    failure = Self.describe(error)
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
