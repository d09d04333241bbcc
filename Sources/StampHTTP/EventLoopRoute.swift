import Hummingbird
import NIOCore
import NIOHTTP1

/// A route answered on the connection's event loop, ahead of Hummingbird's router: no task, no
/// router, no middleware and no conversion to swift-http-types between the request NIO parsed and
/// its answer.
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
    func answer(_ request: EventLoopRequest, body: ByteBuffer, eventLoop: any EventLoop) -> EventLoopAnswer
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

/// A request as an ``EventLoopRoute`` sees it: the head NIO's HTTP/1 decoder parsed, read in place.
public struct EventLoopRequest: Sendable {
    /// The head as parsed, which a request passed on to the router keeps unchanged.
    let head: HTTPRequestHead
    /// The path of the request target, without its query.
    public let path: Substring

    init(head: HTTPRequestHead) {
        self.head = head
        let target = head.uri
        path = target.utf8.firstIndex(of: UInt8(ascii: "?")).map { target[..<$0] } ?? target[...]
    }

    /// The request target as sent: path and query.
    public var target: String { head.uri }

    /// The request's header fields.
    public var headers: Headers { Headers(fields: head.headers) }

    /// The header fields of an ``EventLoopRequest``.
    public struct Headers: HeaderValues, Sendable {
        let fields: HTTPHeaders

        /// The value of the fields named `name` (compared ignoring case), joined with ", " when
        /// there are several, as swift-http-types' `HTTPFields` answers; `nil` when there is none.
        public subscript(_ name: HTTPFields.Element.Name) -> String? {
            let wanted = name.canonicalName.utf8
            var value: String?
            for field in fields where field.name.utf8.count == wanted.count && zip(field.name.utf8, wanted).allSatisfy({ ($0 >= 65 && $0 <= 90 ? $0 | 0x20 : $0) == $1 }) {
                value = value.map { "\($0), \(field.value)" } ?? field.value
            }
            return value
        }
    }
}

/// Header values by name, from a router's request (`HTTPFields`) or an ``EventLoopRequest``, so
/// that one function reads a request's headers on either path.
public protocol HeaderValues {
    /// The value of the fields named `name`, or `nil` when there is none.
    subscript(_ name: HTTPFields.Element.Name) -> String? { get }
}

extension HTTPFields: HeaderValues {}

extension Response {
    /// The same answer for Hummingbird's router.
    public init(_ direct: DirectResponse) {
        self.init(status: direct.status, headers: direct.headers, body: ResponseBody(byteBuffer: direct.body))
    }
}
