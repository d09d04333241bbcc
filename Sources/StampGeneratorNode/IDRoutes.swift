import Foundation
import Hummingbird
import NIOCore
import StampAPI
import StampCore
import StampCoordination
import StampHTTP

/// The ID endpoints: `GET /v1/ids`, `GET /v1/ids/{id}` and `GET /v1/cluster`.
struct IDRoutes<C: Clock<Duration>>: Sendable where C.Instant: Sendable {
    let node: GeneratorNode<C>
    let wallClock: any WallClock
    let knowsShard: (@Sendable (Int) async -> Bool)?

    /// The representations `GET /v1/ids` can answer with.
    enum Representation {
        case json, text, binary
    }

    func add(to router: Router<BasicRequestContext>) {
        router.get("/v1/ids") { request, _ in try await issue(request) }
        router.get("/v1/ids/:id") { _, context in try decode(context.parameters.get("id") ?? "") }
        router.get("/v1/cluster") { _, _ in try await cluster() }
    }

    private var layout: IDLayout { node.configuration.layout }

    func issue(_ request: Request) async throws -> Response {
        let query = request.uri.queryParameters
        let shard = try Self.boundedInteger(query["shard"], name: "shard", default: 0, range: 0...layout.maxShard)
        if let knowsShard, await !knowsShard(shard) {
            throw Problem(.unknownShard, status: .badRequest, detail: "shard \(shard) is not in the shard map")
        }
        let count = try Self.boundedInteger(query["count"], name: "count", default: 1, range: 1...node.configuration.maxCount)
        var after: StampID?
        if let text = query["after"] {
            do {
                after = try StampID(decimal: text)
            } catch {
                throw Problem(.invalidParameter, status: .badRequest, detail: "after: \(error)")
            }
        }
        let representation = try Self.negotiate(request.headers[.accept])

        let ids: IssuedIDs
        do {
            ids = try node.issue(shard: shard, count: count, after: after)
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
            throw Problem.unavailable("refused: this node holds no valid lease", retryAfterMilliseconds: refusal.retryAfterMilliseconds)
        }

        var buffer = ByteBufferAllocator().buffer(capacity: representation == .binary ? ids.count * 8 : ids.count * 22 + 32)
        let contentType: String
        switch representation {
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
        return Response(status: .ok, headers: [.contentType: contentType, .cacheControl: "no-store"], body: ResponseBody(byteBuffer: buffer))
    }

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

    /// Reads an optional query parameter of 1 to 9 ASCII digits within `range`.
    static func boundedInteger(_ text: Substring?, name: String, default value: Int, range: ClosedRange<Int>) throws -> Int {
        guard let text else { return value }
        guard !text.isEmpty, text.utf8.count <= 9, text.utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }), let number = Int(text), range.contains(number) else {
            let shown = text.count > 20 ? text.prefix(20) + "…" : text
            throw Problem(.invalidParameter, status: .badRequest, detail: "\(name) must be a whole number from \(range.lowerBound) to \(range.upperBound); got '\(shown)'")
        }
        return number
    }

    /// Picks the representation from an `Accept` header: the acceptable type with the highest
    /// quality, JSON when the header is absent or allows anything.
    static func negotiate(_ accept: String?) throws -> Representation {
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
        case "/v1/ids", "/v1/cluster": return "GET"
        default:
            let segments = path.split(separator: "/", omittingEmptySubsequences: false)
            return segments.count == 4 && segments[1] == "v1" && segments[2] == "ids" && !segments[3].isEmpty ? "GET" : nil
        }
    }
}
