import Crypto
import Foundation
import Hummingbird
import NIOCore
import StampAPI
import StampAudit
import StampAuditService
import StampCore
import StampHTTP
import StampWebConsole
import Synchronization

/// The bearer tokens of the API: writers record changes, readers also see personal-data values,
/// the administrator erases a user's personal data and reads the access log.
public struct AuditTokens: Sendable {
    private let writer: SHA256.Digest
    private let reader: SHA256.Digest
    private let admin: SHA256.Digest?

    /// What a caller may do.
    public enum Role: String, Sendable {
        /// May record changes and read events without their values.
        case writer
        /// May read events with their values, and export a user's history.
        case reader
        /// May erase a user's personal data and read the access log; reads events without their values.
        case admin
    }

    /// Every token must be at least 16 characters and differ from the others; without an admin
    /// token, nobody may erase or read the access log.
    public init(writer: String, reader: String, admin: String? = nil) throws(AuditInputError) {
        let all = [writer, reader] + (admin.map { [$0] } ?? [])
        guard all.allSatisfy({ $0.utf8.count >= 16 }), Set(all).count == all.count else {
            throw AuditInputError(.invalidConfiguration, "the writer, reader and admin tokens must be different and at least 16 characters long")
        }
        self.writer = SHA256.hash(data: Array(writer.utf8))
        self.reader = SHA256.hash(data: Array(reader.utf8))
        self.admin = admin.map { SHA256.hash(data: Array($0.utf8)) }
    }

    /// How the access log names the holder of `role`'s token: the role and the first 6 bytes of
    /// the token's SHA-256 in hex, which tell tokens apart across changes without revealing them.
    public func identity(of role: Role) -> String {
        let digest = switch role {
        case .writer: writer
        case .reader: reader
        case .admin: admin ?? writer
        }
        return "\(role.rawValue) sha256:" + digest.prefix(6).map { String($0, radix: 16).count == 1 ? "0" + String($0, radix: 16) : String($0, radix: 16) }.joined()
    }

    /// The role of the caller of `request`. Digests are compared in constant time.
    func role(of request: Request) throws -> Role {
        try role(authorization: request.headers[.authorization])
    }

    /// The role of the caller who sent this `Authorization` header.
    func role(authorization: String?) throws(Problem) -> Role {
        guard let header = authorization, header.count > 7, header.prefix(7).lowercased() == "bearer " else {
            throw Self.unauthorized("this API needs a bearer token")
        }
        let presented = SHA256.hash(data: Array(header.dropFirst(7).utf8))
        if presented == writer { return .writer }
        if presented == reader { return .reader }
        if let admin, presented == admin { return .admin }
        throw Self.unauthorized("the bearer token is not valid")
    }

    static func unauthorized(_ detail: String) -> Problem {
        Problem(.unauthorized, status: .unauthorized, detail: detail, headers: [.wwwAuthenticate: #"Bearer realm="stamp-audit""#])
    }
}

/// Lets one holder in at a time: `enter()` is `false` while another holds it.
final class VerificationGate: Sendable {
    private let held = Mutex(false)

    func enter() -> Bool {
        held.withLock { held in
            guard !held else { return false }
            held = true
            return true
        }
    }

    func leave() {
        held.withLock { $0 = false }
    }
}

/// The headers of idempotent writes.
public enum AuditHeaders {
    /// The client's key for one logical write, reused on its retries.
    public static let idempotencyKey = HTTPFields.Element.Name("Idempotency-Key")!
    /// Set to `true` on the answer to a retry whose key an earlier request stored.
    public static let replayed = HTTPFields.Element.Name("Idempotent-Replayed")!
}

/// The audit endpoints under `/v1`.
struct AuditRoutes<C: Clock<Duration>>: Sendable {
    let service: AuditService<C>
    let tokens: AuditTokens
    let maxBodySize: Int
    /// Lets one whole-chain verification run on this server at a time.
    let verifications = VerificationGate()

    func add(to router: Router<BasicRequestContext>) {
        let writing = AuditWriteRoute(service: service, tokens: tokens)
        router.post("/v1/users/:userId/events") { request, context in
            var request = request
            let body = try await request.collectBody(upTo: maxBodySize)
            let answer = await withCheckedContinuation { continuation in
                writing.write(headers: request.headers, user: context.parameters.get("userId") ?? "", body: body) { continuation.resume(returning: $0) }
            }
            return Response(answer)
        }
        router.get("/v1/users/:userId/events") { request, context in try await Self.answering { try await history(request, context: context) } }
        router.get("/v1/users/:userId/events/latest") { request, context in try await Self.answering { try await latest(request, context: context) } }
        router.get("/v1/events/:id") { request, context in try await Self.answering { try await event(request, context: context) } }
        router.get("/v1/users/:userId/export") { request, context in try await Self.answering { try await export(request, context: context) } }
        router.delete("/v1/users/:userId/personal-data") { request, context in try await Self.answering { try await erase(request, context: context) } }
        router.get("/v1/users/:userId/access-log") { request, context in try await Self.answering { try await accessLog(request, context: context) } }
        router.get("/v1/shards/:shardId/checkpoint") { request, context in try await Self.answering { try await checkpoint(request, context: context) } }
        router.get("/v1/users/:userId/fields") { request, context in try await Self.answering { try await fields(request, context: context) } }
        router.get("/v1/caller") { request, _ in try caller(request) }
        router.get("/v1/shards") { request, _ in try await Self.answering { try await shardList(request) } }
        router.post("/v1/shards/:shardId/verification") { request, context in try await Self.answering { try await verification(request, context: context) } }
    }

    /// Runs a handler, turning the service's errors into problems.
    static func answering(_ handler: () async throws -> Response) async throws -> Response {
        do {
            return try await handler()
        } catch let error as AuditServiceError {
            throw Problem(error)
        }
    }

    /// The methods each path serves, for 405 answers.
    static func allowedMethods(_ path: String) -> String? {
        if OperationalRoutes.paths.contains(path) || path == "/v1/caller" || path == "/v1/shards" || path == AuditConsole.path { return "GET" }
        if WebConsole.isAssetPath(path) { return "GET" }
        let segments = path.split(separator: "/", omittingEmptySubsequences: false).dropFirst()
        switch Array(segments) {
        case let parts where parts.count == 3 && parts[0] == "v1" && parts[1] == "events" && !parts[2].isEmpty: return "GET"
        case let parts where parts.count == 4 && parts[0] == "v1" && parts[1] == "users" && !parts[2].isEmpty && parts[3] == "events": return "GET, POST"
        case let parts where parts.count == 5 && parts[0] == "v1" && parts[1] == "users" && !parts[2].isEmpty && parts[3] == "events" && parts[4] == "latest": return "GET"
        case let parts where parts.count == 4 && parts[0] == "v1" && parts[1] == "users" && !parts[2].isEmpty && ["export", "access-log", "fields"].contains(parts[3]): return "GET"
        case let parts where parts.count == 4 && parts[0] == "v1" && parts[1] == "users" && !parts[2].isEmpty && parts[3] == "personal-data": return "DELETE"
        case let parts where parts.count == 4 && parts[0] == "v1" && parts[1] == "shards" && !parts[2].isEmpty && parts[3] == "checkpoint": return "GET"
        case let parts where parts.count == 4 && parts[0] == "v1" && parts[1] == "shards" && !parts[2].isEmpty && parts[3] == "verification": return "POST"
        default: return nil
        }
    }

    func history(_ request: Request, context: BasicRequestContext) async throws -> Response {
        let role = try tokens.role(of: request)
        let user = try Self.user(context)
        let query = request.uri.queryParameters
        let field = try query["field"].map { text in
            try Self.check { () throws(AuditInputError) in try AuditLimits.validate(field: text) }
            return String(text)
        }
        var limit = AuditLimits.defaultPageSize
        if let text = query["limit"] {
            guard let number = Int(text), (1...AuditLimits.maxPageSize).contains(number) else {
                throw Problem(.invalidParameter, status: .badRequest, detail: "limit must be a whole number from 1 to \(AuditLimits.maxPageSize)")
            }
            limit = number
        }
        var before: StampID?
        if let text = query["before"] {
            do {
                before = try StampID(decimal: text)
            } catch {
                throw Problem(.invalidCursor, status: .badRequest, detail: "before must be an event ID from a previous page (\(error))")
            }
        }
        let rows = try await service.history(user: user, field: field, before: before, limit: limit + 1)
        let page = Array(rows.prefix(limit))
        return try Response.json(AuditEventPage(events: try await render(page, user: user, role: role, request: request), next: rows.count > limit ? page.last?.id : nil))
    }

    func latest(_ request: Request, context: BasicRequestContext) async throws -> Response {
        let role = try tokens.role(of: request)
        let user = try Self.user(context)
        guard let field = request.uri.queryParameters["field"] else {
            throw Problem(.invalidField, status: .badRequest, detail: "the field query parameter is required")
        }
        try Self.check { () throws(AuditInputError) in try AuditLimits.validate(field: field) }
        guard let row = try await service.history(user: user, field: String(field), before: nil, limit: 1).first else {
            throw Problem(.notFound, status: .notFound, detail: "this user has no recorded change of this field")
        }
        return try Response.json(try await render([row], user: user, role: role, request: request)[0])
    }

    func event(_ request: Request, context: BasicRequestContext) async throws -> Response {
        let role = try tokens.role(of: request)
        let raw = context.parameters.get("id") ?? ""
        let text = raw.removingPercentEncoding ?? raw
        let id: StampID
        do {
            id = try StampID(parsing: text)
        } catch {
            throw Problem(.invalidID, status: .badRequest, detail: error.description)
        }
        guard let row = try await service.event(id: id) else {
            throw Problem(.notFound, status: .notFound, detail: "no event has ID \(id)")
        }
        return try Response.json(try await render([row], user: row.user, role: role, request: request)[0])
    }

    /// `GET /v1/users/{userId}/export`: every event of the user, oldest first, with values, as
    /// JSON lines, then, for each shard that holds them, a line with a signed checkpoint that
    /// covers them; for readers, recorded in the access log.
    func export(_ request: Request, context: BasicRequestContext) async throws -> Response {
        guard try tokens.role(of: request) == .reader else {
            throw Problem(.forbidden, status: .forbidden, detail: "only the reader token may export a user's personal data")
        }
        let user = try Self.user(context)
        let rows = try await service.completeHistory(user: user)
        var body = ByteBuffer()
        for event in try await render(rows, user: user, role: .reader, request: request) {
            event.writeJSON(into: &body)
            body.writeInteger(UInt8(ascii: "\n"))
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        for shard in Set(rows.map { $0.id.fields(in: service.layout).shard }).sorted() {
            guard let checkpoint = try await service.coveringCheckpoint(shard: shard) else { continue }
            body.writeBytes(try encoder.encode(ExportedCheckpoint(checkpoint: checkpoint)))
            body.writeInteger(UInt8(ascii: "\n"))
        }
        return Response(status: .ok, headers: [.contentType: "application/x-ndjson"], body: ResponseBody(byteBuffer: body))
    }

    /// `DELETE /v1/users/{userId}/personal-data`: destroys the user's data keys and answers the
    /// event that records it; for the admin token.
    func erase(_ request: Request, context: BasicRequestContext) async throws -> Response {
        try requireAdmin(request, to: "erase personal data")
        let user = try Self.user(context)
        let row = try await service.erase(user: user, requestedBy: tokens.identity(of: .admin))
        return try Response.json(try Self.render(row, values: nil, service: service), headers: [.location: "/v1/events/\(row.id)"])
    }

    /// `GET /v1/users/{userId}/access-log`: who was shown the user's values; for the admin token.
    func accessLog(_ request: Request, context: BasicRequestContext) async throws -> Response {
        try requireAdmin(request, to: "read the access log")
        let user = try Self.user(context)
        var limit = AuditLimits.defaultPageSize
        if let text = request.uri.queryParameters["limit"] {
            guard let number = Int(text), (1...AuditLimits.maxPageSize).contains(number) else {
                throw Problem(.invalidParameter, status: .badRequest, detail: "limit must be a whole number from 1 to \(AuditLimits.maxPageSize)")
            }
            limit = number
        }
        let entries = try await service.accessLog(user: user, limit: limit)
        return try Response.json(AuditAccessLog(entries: entries.map {
            AuditAccessLogEntry(recordedAt: RFC3339.format(unixMilliseconds: $0.recordedAt), reader: $0.reader, userId: $0.user, request: $0.request, events: $0.events)
        }))
    }

    /// The newest signed checkpoint of a shard's hash chain; any token may read it (it holds no personal data).
    func checkpoint(_ request: Request, context: BasicRequestContext) async throws -> Response {
        _ = try tokens.role(of: request)
        let shard = try shardID(context)
        guard let checkpoint = try await service.latestCheckpoint(shard: shard) else {
            throw Problem(.notFound, status: .notFound, detail: "no checkpoint of shard \(shard) was signed yet")
        }
        return try Response.json(checkpoint)
    }

    /// `GET /v1/users/{userId}/fields`: the latest event of each field the user changed; for
    /// readers with values, recorded in the access log.
    func fields(_ request: Request, context: BasicRequestContext) async throws -> Response {
        let role = try tokens.role(of: request)
        let user = try Self.user(context)
        let rows = try await service.latestOfEachField(user: user)
        return try Response.json(AuditLatestFields(events: try await render(rows, user: user, role: role, request: request)))
    }

    /// `GET /v1/caller`: the role and identity of the caller's token, so that a console shows
    /// what that token may do.
    func caller(_ request: Request) throws -> Response {
        let role = try tokens.role(of: request)
        return try Response.json(AuditCaller(role: role.rawValue, identity: tokens.identity(of: role)))
    }

    /// `GET /v1/shards`: every shard of the current map at a glance (``ShardStatus``); any token.
    /// A shard that cannot be read is listed with the reason, and the others still are.
    func shardList(_ request: Request) async throws -> Response {
        _ = try tokens.role(of: request)
        let map = service.shardMap.current
        let service = service
        let states = await withTaskGroup(of: AuditShardState.self) { group in
            for shard in map.shards.map(\.id) {
                group.addTask {
                    do throws(AuditServiceError) {
                        let status = try await service.shardStatus(shard: shard)
                        let checkpoint = status.checkpoint.map {
                            AuditShardState.Checkpoint(
                                rows: $0.rows, lastId: $0.lastID, signedAt: RFC3339.format(unixMilliseconds: $0.signedAtMilliseconds),
                                signatureValid: status.checkpointSigned ?? false, reached: status.checkpointReached ?? false
                            )
                        }
                        return AuditShardState(
                            shard: shard, rows: status.head.rows, lastId: status.head.lastID, head: AuditCheckpoint.hex(status.head.hash),
                            checkpoint: checkpoint, problem: status.problem, error: nil
                        )
                    } catch {
                        return AuditShardState(shard: shard, rows: nil, lastId: nil, head: nil, checkpoint: nil, problem: nil, error: error.message)
                    }
                }
            }
            var states: [AuditShardState] = []
            for await state in group { states.append(state) }
            return states.sorted { $0.shard < $1.shard }
        }
        return try Response.json(AuditShardList(shardMapVersion: map.version, shards: states))
    }

    /// `POST /v1/shards/{shardId}/verification`: recomputes the shard's whole chain and checks its
    /// head and checkpoints, as `stamp audit verify` does; reader and admin tokens. One runs on a
    /// server at a time: another meanwhile is answered 503.
    func verification(_ request: Request, context: BasicRequestContext) async throws -> Response {
        guard try tokens.role(of: request) != .writer else {
            throw Problem(.forbidden, status: .forbidden, detail: "only the reader and admin tokens may verify a shard")
        }
        let shard = try shardID(context)
        guard verifications.enter() else {
            throw Problem.unavailable("another shard verification runs on this server; try again when it is done", retryAfterMilliseconds: 2000)
        }
        defer { verifications.leave() }
        let verification = try await service.verify(shard: shard)
        let problem = verification.problem.map { AuditShardVerification.Problem(kind: $0.kind.rawValue, position: $0.position, id: $0.id, detail: $0.detail) }
        let milliseconds = verification.duration.components.seconds * 1000 + verification.duration.components.attoseconds / 1_000_000_000_000_000
        return try Response.json(AuditShardVerification(
            shard: shard, verified: problem == nil, rows: verification.rows, checkpoints: verification.checkpoints, problem: problem, durationMs: milliseconds
        ))
    }

    /// The shard a path's `shardId` names, which the current map must list.
    func shardID(_ context: BasicRequestContext) throws(Problem) -> Int {
        let text = context.parameters.get("shardId") ?? ""
        guard let shard = Int(text), service.shardMap.current.shards.contains(where: { $0.id == shard }) else {
            throw Problem(.unknownShard, status: .notFound, detail: "the shard map has no shard \(text.prefix(20))")
        }
        return shard
    }

    private func requireAdmin(_ request: Request, to action: String) throws {
        guard try tokens.role(of: request) == .admin else {
            throw Problem(.forbidden, status: .forbidden, detail: "only the admin token may \(action)")
        }
    }

    /// Events as the API shows them to `role`: with values for readers, once the access log holds
    /// that they were returned.
    func render(_ rows: [AuditRow], user: String, role: AuditTokens.Role, request: Request) async throws(AuditServiceError) -> [AuditEvent] {
        guard role == .reader, !rows.isEmpty else {
            return try rows.map { row throws(AuditServiceError) in try Self.render(row, values: nil, service: service) }
        }
        let access = AccessContext(reader: tokens.identity(of: role), request: "\(request.method) \(request.uri)")
        let values = try await service.values(of: rows, user: user, for: access)
        return try zip(rows, values).map { row, values throws(AuditServiceError) in try Self.render(row, values: values, service: service) }
    }

    static func render(_ row: AuditRow, values: EventValues?, service: AuditService<C>) throws(AuditServiceError) -> AuditEvent {
        let fields = row.id.fields(in: service.layout)
        var shown: AuditEvent.Values?
        var erased = false
        switch values {
        case .opened(let before, let after): shown = AuditEvent.Values(before: before, after: after)
        case .erased: erased = true
        case nil: break
        }
        return AuditEvent(
            id: row.id, userId: row.user, field: row.field, actor: row.actor, reason: row.reason, shard: fields.shard,
            recordedAt: RFC3339.format(unixMilliseconds: fields.unixMilliseconds), values: shown, erased: erased
        )
    }

    static func user(_ context: BasicRequestContext) throws -> String {
        try user(path: context.parameters.get("userId") ?? "")
    }

    /// The user a path segment names, checked.
    static func user(path raw: some StringProtocol) throws(Problem) -> String {
        // Path segments arrive percent-encoded (`alice%40example` for `alice@example`).
        let user = raw.utf8.contains(UInt8(ascii: "%")) ? raw.removingPercentEncoding ?? String(raw) : String(raw)
        try check { () throws(AuditInputError) in try AuditLimits.validate(user: user) }
        return user
    }

    /// Runs an input check, turning its error into a 4xx problem.
    static func check(_ body: () throws(AuditInputError) -> Void) throws(Problem) {
        do {
            try body()
        } catch {
            let type: ProblemType = switch error.code {
            case .invalidUser: .invalidUser
            case .invalidField: .invalidField
            case .valueTooLarge: .valueTooLarge
            case .invalidIdempotencyKey: .invalidIdempotencyKey
            case .invalidEvent, .invalidConfiguration, .sealedValueUnreadable: .invalidEvent
            }
            throw Problem(type, status: .badRequest, detail: error.message)
        }
    }

    /// Where a body failed to decode, without any of its values.
    static func describe(_ error: DecodingError) -> String {
        switch error {
        case .keyNotFound(let key, _): return "\(key.stringValue) is missing"
        case .typeMismatch(_, let context), .valueNotFound(_, let context):
            return "\(context.codingPath.map(\.stringValue).joined(separator: ".")) has the wrong type"
        case .dataCorrupted: return "the body is not valid JSON"
        @unknown default: return "the body does not decode"
        }
    }
}

/// `POST /v1/users/{userId}/events`, the audit server's hot path: answered on the event loop (an
/// ``EventLoopRoute``), with no task of its own for the common write (see
/// ``AuditService/record(user:idempotencyKey:event:completion:)``). The router's route for the
/// same path calls ``write(headers:user:body:completion:)`` too.
struct AuditWriteRoute<C: Clock<Duration>>: EventLoopRoute {
    let service: AuditService<C>
    let tokens: AuditTokens

    var label: String { "/v1/users/:userId/events" }

    func matches(method: HTTPRequest.Method, path: Substring) -> Bool {
        method == .post && Self.user(inPath: path) != nil
    }

    /// The user segment of `/v1/users/{userId}/events`, or `nil` for another path.
    static func user(inPath path: Substring) -> Substring? {
        let prefix = "/v1/users/", suffix = "/events"
        guard path.hasPrefix(prefix), path.hasSuffix(suffix), path.utf8.count > prefix.utf8.count + suffix.utf8.count else { return nil }
        let user = path.dropFirst(prefix.utf8.count).dropLast(suffix.utf8.count)
        return user.utf8.contains(UInt8(ascii: "/")) ? nil : user
    }

    func answer(_ request: EventLoopRequest, body: ByteBuffer, eventLoop: any EventLoop) -> EventLoopAnswer {
        let promise = eventLoop.makePromise(of: DirectResponse.self)
        write(headers: request.headers, user: Self.user(inPath: request.path) ?? "", body: body) { promise.succeed($0) }
        return .later(promise.futureResult)
    }

    /// Checks a write request, records it, and calls `completion` with the answer: 201 with the
    /// stored event, or a problem.
    func write(headers: some HeaderValues, user rawUser: some StringProtocol, body: ByteBuffer, completion: @escaping @Sendable (DirectResponse) -> Void) {
        let user: String, key: String, event: AuditEventInput
        do throws(Problem) {
            guard try tokens.role(authorization: headers[.authorization]) == .writer else {
                throw Problem(.forbidden, status: .forbidden, detail: "only the writer token may record changes")
            }
            user = try AuditRoutes<C>.user(path: rawUser)
            guard let presented = headers[AuditHeaders.idempotencyKey] else {
                throw Problem(.invalidIdempotencyKey, status: .badRequest, detail: "an Idempotency-Key header is required, so that retries store nothing twice")
            }
            key = presented
            try AuditRoutes<C>.check { () throws(AuditInputError) in try AuditLimits.validate(idempotencyKey: key) }
            guard let type = headers[.contentType], type.lowercased().hasPrefix("application/json") else {
                throw Problem(.unsupportedMediaType, status: .unsupportedMediaType, detail: "send the event as application/json")
            }
            event = try Self.decode(body)
            try AuditRoutes<C>.check { () throws(AuditInputError) in try AuditLimits.validate(event) }
        } catch {
            completion(error.directResponse)
            return
        }
        let service = service
        service.record(user: user, idempotencyKey: key, event: event) { result in
            do throws(AuditServiceError) {
                let (row, replayed) = try result.get()
                var headers: HTTPFields = [.location: "/v1/events/\(row.id)"]
                if replayed { headers[AuditHeaders.replayed] = "true" }
                var document = ByteBufferAllocator().buffer(capacity: 256 + row.user.utf8.count + row.field.utf8.count + row.actor.utf8.count + row.reason.utf8.count)
                try AuditRoutes<C>.render(row, values: nil, service: service).writeJSON(into: &document)
                completion(.json(document: document, status: .created, headers: headers))
            } catch {
                completion(Problem(error).directResponse)
            }
        }
    }

    static func decode(_ body: ByteBuffer) throws(Problem) -> AuditEventInput {
        do {
            let written = try JSONDecoder().decode(AuditEventWrite.self, from: Data(buffer: body))
            return AuditEventInput(field: written.field, before: written.before, after: written.after, actor: written.actor, reason: written.reason ?? "")
        } catch let error as DecodingError {
            throw Problem(.invalidEvent, status: .badRequest, detail: "the body must be a JSON object with string members field and actor, before and after as strings or null, and an optional string reason (\(AuditRoutes<C>.describe(error)))")
        } catch {
            throw Problem(.invalidEvent, status: .badRequest, detail: "the body is not JSON")
        }
    }
}

extension Problem {
    /// The problem that answers a service error: the status and type the audit API documents.
    init(_ error: AuditServiceError) {
        switch error.code {
        case .noID, .shardNotOpen, .databaseUnavailable, .userOrderContended, .shardBusy, .shardMapStale, .erasureInProgress:
            self = .unavailable(error.message, retryAfterMilliseconds: 1000)
        case .idempotencyKeyReused:
            self.init(.idempotencyKeyReused, status: .unprocessableContent, detail: error.message)
        case .unknownShard:
            self.init(.unknownShard, status: .notFound, detail: error.message)
        case .databaseRefused, .sealedValueUnreadable, .invalidConfiguration:
            self.init(.internalError, status: .internalServerError, detail: error.message)
        }
    }
}
