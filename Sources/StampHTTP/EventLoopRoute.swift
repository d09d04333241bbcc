import Hummingbird
import NIOCore

/// A route answered on the connection's event loop, ahead of Hummingbird's router: no task, no
/// router, no middleware between the parsed request and its answer.
///
/// A server lists its hot routes (``HTTPServerConfiguration/application(router:eventLoopRoutes:serverName:listening:logger:)``);
/// every request no route matches, or that a route passes on, reaches the router unchanged. The
/// server adds `Date`, `Server` and `Content-Length`, times the request in
/// `stamp_http_request_duration_seconds` under ``label``, and refuses bodies above the server's
/// limit with a 413 problem before the route sees them.
public protocol EventLoopRoute: Sendable {
    /// The route's name in the request metrics: the router path the same route has in Hummingbird
    /// (such as `/v1/users/:userId/events`).
    var label: String { get }

    /// Whether this route answers a request with this method and path (the path without its query).
    func matches(method: HTTPRequest.Method, path: Substring) -> Bool

    /// The answer to `request`, whose whole body is `body`; called on `eventLoop`, the connection's.
    func answer(_ request: HTTPRequest, body: ByteBuffer, eventLoop: any EventLoop) -> EventLoopAnswer
}

/// What an ``EventLoopRoute`` does with a request.
public enum EventLoopAnswer: Sendable {
    /// Answer now.
    case now(DirectResponse)
    /// Answer when the future completes; a failed future answers a 500 problem.
    case later(EventLoopFuture<DirectResponse>)
    /// Leave the request to Hummingbird's router, as if no route had matched.
    case passOn
}

/// A whole response: status, headers and body, written by the server in one go.
public struct DirectResponse: Sendable {
    public var status: HTTPResponse.Status
    public var headers: HTTPFields
    public var body: ByteBuffer

    public init(status: HTTPResponse.Status, headers: HTTPFields, body: ByteBuffer) {
        self.status = status
        self.headers = headers
        self.body = body
    }

    /// An `application/json` answer of a document already written, not to be cached.
    public static func json(document: ByteBuffer, status: HTTPResponse.Status = .ok, headers: HTTPFields = [:]) -> DirectResponse {
        var fields: HTTPFields = [.contentType: "application/json", .cacheControl: "no-store"]
        fields.append(contentsOf: headers)
        return DirectResponse(status: status, headers: fields, body: document)
    }
}

extension HTTPRequest {
    /// The path of the request target, without its query (empty when the request has no path).
    public var pathWithoutQuery: Substring {
        let target = path ?? ""
        guard let question = target.utf8.firstIndex(of: UInt8(ascii: "?")) else { return target[...] }
        return target[..<question]
    }
}

extension Response {
    /// The same answer for Hummingbird's router.
    public init(_ direct: DirectResponse) {
        self.init(status: direct.status, headers: direct.headers, body: ResponseBody(byteBuffer: direct.body))
    }
}
