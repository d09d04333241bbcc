import Foundation
import Hummingbird
import HummingbirdCore
import NIOCore
import StampAPI
import StampCore
import StampCoordination
import StampHTTP
import StampWebConsole

/// Whether the shard map lists a shard, for refusing IDs of shards it does not.
public struct ShardCheck: Sendable {
    /// Answers from the map in memory, without waiting.
    let known: @Sendable (Int) -> Bool
    /// Answers after reading the map again, for a shard ``known`` does not list (it may be in a
    /// version newer than the last poll saw).
    let refreshed: @Sendable (Int) async -> Bool

    public init(known: @escaping @Sendable (Int) -> Bool, refreshed: @escaping @Sendable (Int) async -> Bool) {
        self.known = known
        self.refreshed = refreshed
    }
}

/// The ID endpoints: `GET /v1/ids`, `GET /v1/ids/{id}` and `GET /v1/cluster`.
struct IDRoutes<C: Clock<Duration>>: Sendable where C.Instant: Sendable {
    let node: GeneratorNode<C>
    let wallClock: any WallClock
    let shards: ShardCheck?

    func add(to router: Router<BasicRequestContext>) {
        // The router's middleware checks the token on this path.
        let issuing = IssueRoute(node: node, shards: shards, token: nil)
        router.get("/v1/ids") { request, _ in try await issuing.respond(to: request) }
        router.get("/v1/ids/:id") { _, context in try decode(context.parameters.get("id") ?? "") }
        router.get("/v1/cluster") { _, _ in try await cluster() }
    }

    private var layout: IDLayout { node.configuration.layout }

    func decode(_ text: String) throws -> Response {
        let id: StampID
        do {
            id = try StampID(parsing: text)
        } catch {
            throw Problem(.invalidID, status: .badRequest, detail: error.description)
        }
        let fields = id.fields(in: layout)
        let inFuture = fields.unixMilliseconds > wallClock.unixMilliseconds() + node.configuration.maxLeadMilliseconds
        return try Response.json(DecodedID(
            id: id, text: id.text, time: RFC3339.format(unixMilliseconds: fields.unixMilliseconds), unixMilliseconds: fields.unixMilliseconds,
            sequence: fields.sequence, shard: fields.shard, node: fields.node, timeInFuture: inFuture
        ))
    }

    func cluster() async throws -> Response {
        let leases: [NodeLease]
        do {
            leases = try await node.liveLeases()
        } catch {
            throw Problem.unavailable("the coordination store cannot be read", retryAfterMilliseconds: 1000)
        }
        let readiness = node.readiness()
        return try Response.json(ClusterStatus(
            layout: layout.description, idsPerMillisecond: layout.idsPerMillisecond, maxLeadMilliseconds: node.configuration.maxLeadMilliseconds,
            node: readiness.node, ready: readiness.isReady,
            nodes: leases.map { ClusterStatus.Member(node: $0.node, address: $0.address, expiresAt: RFC3339.format(unixMilliseconds: $0.expiresAtUnixMilliseconds)) }
        ))
    }
}

/// `GET /v1/ids`, answered on the event loop (an ``EventLoopRoute``) and, for requests it passes on,
/// by the router: both parse, issue and encode with the same functions.
struct IssueRoute<C: Clock<Duration>>: EventLoopRoute where C.Instant: Sendable {
    let node: GeneratorNode<C>
    let shards: ShardCheck?
    /// The token requests answered on the event loop must carry; `nil` for none.
    let token: NodeToken?

    /// The representations `GET /v1/ids` can answer with.
    enum Representation {
        case json, text, binary
    }

    /// What a request asks for.
    struct Parameters {
        let shard: Int
        let count: Int
        let after: StampID?
        let representation: Representation
    }

    private var layout: IDLayout { node.configuration.layout }

    var label: String { "/v1/ids" }

    func matches(method: HTTPRequest.Method, path: Substring) -> Bool {
        method == .get && path == "/v1/ids"
    }

    func answer(_ request: EventLoopRequest, body: ByteBuffer, eventLoop: any EventLoop) -> EventLoopAnswer {
        if let token, !token.admits(path: Substring(label), authorization: request.headers[.authorization]) {
            return .now(NodeToken.refusal.directResponse)
        }
        do throws(Problem) {
            let parameters = try parse(URI(request.target).queryParameters, accept: request.headers[.accept])
            // A shard the map in memory does not list needs the file read again: the router waits for that.
            if let shards, !shards.known(parameters.shard) { return .passOn }
            return .now(try issue(parameters))
        } catch {
            return .now(error.directResponse)
        }
    }

    /// The router's answer, for requests ``answer(_:body:eventLoop:)`` passed on.
    func respond(to request: Request) async throws -> Response {
        let parameters = try parse(request.uri.queryParameters, accept: request.headers[.accept])
        if let shards, !shards.known(parameters.shard), await !shards.refreshed(parameters.shard) {
            throw Problem(.unknownShard, status: .badRequest, detail: "shard \(parameters.shard) is not in the shard map")
        }
        return Response(try issue(parameters))
    }

    func parse(_ query: FlatDictionary<Substring, Substring>, accept: String?) throws(Problem) -> Parameters {
        let shard = try Self.boundedInteger(query["shard"], name: "shard", default: 0, range: 0...layout.maxShard)
        let count = try Self.boundedInteger(query["count"], name: "count", default: 1, range: 1...node.configuration.maxCount)
        var after: StampID?
        if let text = query["after"] {
            do {
                after = try StampID(decimal: text)
            } catch {
                throw Problem(.invalidParameter, status: .badRequest, detail: "after: \(error)")
            }
        }
        return Parameters(shard: shard, count: count, after: after, representation: try Self.negotiate(accept))
    }

    func issue(_ parameters: Parameters) throws(Problem) -> DirectResponse {
        let ids: IssuedIDs
        do {
            ids = try node.issue(shard: parameters.shard, count: parameters.count, after: parameters.after)
        } catch let error as GeneratorError {
            switch error.code {
            case .afterTooFarAhead:
                throw Problem(.afterTooFarAhead, status: .conflict, detail: "after is further ahead of this node's clock than the maximum lead of \(node.configuration.maxLeadMilliseconds) ms; ask another node or retry later")
            case .shardOutOfRange, .countOutOfRange, .nodeOutOfRange, .invalidArgument:
                throw Problem(.invalidParameter, status: .badRequest, detail: error.message)
            case .leadExceeded, .reservationExhausted, .clockBeforeEpoch, .layoutExhausted:
                throw Problem.unavailable("refused: \(error.message)", retryAfterMilliseconds: error.retryAfterMilliseconds)
            }
        } catch let refusal as IssueRefusal {
            throw Problem.unavailable("refused: \(refusal.message)", retryAfterMilliseconds: refusal.retryAfterMilliseconds)
        } catch {
            throw Problem(.internalError, status: .internalServerError, detail: "internal error")
        }

        var buffer = ByteBufferAllocator().buffer(capacity: parameters.representation == .binary ? ids.count * 8 : ids.count * 22 + 32)
        let contentType: String
        switch parameters.representation {
        case .json:
            contentType = "application/json"
            IDBatch.writeJSON(ids: ids, node: ids[0].fields(in: layout).node, into: &buffer)
        case .text:
            contentType = "text/plain; charset=utf-8"
            for id in ids {
                buffer.writeDecimal(id.rawValue)
                buffer.writeInteger(UInt8(ascii: "\n"))
            }
        case .binary:
            contentType = "application/octet-stream"
            for id in ids {
                buffer.writeInteger(id.rawValue, endianness: .big)
            }
        }
        return DirectResponse(status: .ok, headers: [.contentType: contentType, .cacheControl: "no-store"], body: buffer)
    }

    /// Reads an optional query parameter of 1 to 9 ASCII digits within `range`.
    static func boundedInteger(_ text: Substring?, name: String, default value: Int, range: ClosedRange<Int>) throws(Problem) -> Int {
        guard let text else { return value }
        guard !text.isEmpty, text.utf8.count <= 9, text.utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }), let number = Int(text), range.contains(number) else {
            let shown = text.count > 20 ? text.prefix(20) + "…" : text
            throw Problem(.invalidParameter, status: .badRequest, detail: "\(name) must be a whole number from \(range.lowerBound) to \(range.upperBound); got '\(shown)'")
        }
        return number
    }

    /// Picks the representation from an `Accept` header: the acceptable type with the highest
    /// quality, JSON when the header is absent or allows anything.
    static func negotiate(_ accept: String?) throws(Problem) -> Representation {
        guard let accept, !accept.isEmpty else { return .json }
        var best: (Representation, Double)?
        for range in accept.split(separator: ",") {
            let parts = range.split(separator: ";").map { $0.trimmingCharacters(in: .whitespaces).lowercased() }
            guard let type = parts.first else { continue }
            var quality = 1.0
            for parameter in parts.dropFirst() where parameter.hasPrefix("q=") {
                quality = Double(parameter.dropFirst(2)) ?? 0
            }
            guard quality > 0 else { continue }
            let representation: Representation? = switch type {
            case "application/json", "application/*", "*/*": .json
            case "text/plain", "text/*": .text
            case "application/octet-stream": .binary
            default: nil
            }
            if let representation, quality > (best?.1 ?? 0) { best = (representation, quality) }
        }
        guard let best else {
            throw Problem(.notAcceptable, status: .notAcceptable, detail: "IDs are served as application/json, text/plain or application/octet-stream")
        }
        return best.0
    }
}

/// The generator node's paths.
enum GeneratorPaths {
    /// The methods of a path (all GET), or `nil` for a path the node does not serve.
    static func allowedMethods(_ path: String) -> String? {
        if OperationalRoutes.paths.contains(path) { return "GET" }
        switch path {
        case "/v1/ids", "/v1/cluster", "/v1/cluster/nodes", "/v1/node", "/ui": return "GET"
        default:
            if WebConsole.isAssetPath(path) { return "GET" }
            let segments = path.split(separator: "/", omittingEmptySubsequences: false)
            return segments.count == 4 && segments[1] == "v1" && segments[2] == "ids" && !segments[3].isEmpty ? "GET" : nil
        }
    }
}
