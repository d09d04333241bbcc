import Hummingbird
import NIOCore

/// An RFC 9457 problem: every error the HTTP API returns, as `application/problem+json`.
public struct Problem: HTTPResponseError, Sendable {
    /// A stable problem type; the `type` member is `urn:stamp:problem:<raw value>`. Services
    /// built on this module add their own.
    public struct Kind: RawRepresentable, Sendable, Hashable {
        public let rawValue: String
        public init(rawValue: String) { self.rawValue = rawValue }

        public static let invalidParameter = Kind(rawValue: "invalid-parameter")
        public static let invalidID = Kind(rawValue: "invalid-id")
        public static let notAcceptable = Kind(rawValue: "not-acceptable")
        public static let afterTooFarAhead = Kind(rawValue: "after-too-far-ahead")
        public static let unknownShard = Kind(rawValue: "unknown-shard")
        public static let unavailable = Kind(rawValue: "unavailable")
        public static let notFound = Kind(rawValue: "not-found")
        public static let methodNotAllowed = Kind(rawValue: "method-not-allowed")
        public static let bodyTooLarge = Kind(rawValue: "body-too-large")
        public static let httpError = Kind(rawValue: "http-error")
        public static let internalError = Kind(rawValue: "internal-error")
    }

    public let kind: Kind
    public let status: HTTPResponse.Status
    /// A human-readable explanation, safe to show.
    public let detail: String
    /// For 503: seconds after which to try again.
    public let retryAfterSeconds: Int64?
    /// Extra headers, such as `Allow` on a 405 or `WWW-Authenticate` on a 401.
    public let headers: HTTPFields

    public init(_ kind: Kind, status: HTTPResponse.Status, detail: String, retryAfterSeconds: Int64? = nil, headers: HTTPFields = [:]) {
        self.kind = kind
        self.status = status
        self.detail = detail
        self.retryAfterSeconds = retryAfterSeconds
        self.headers = headers
    }

    /// A 503 refusal that tells clients when to come back.
    public static func unavailable(_ detail: String, retryAfterMilliseconds: Int64?) -> Problem {
        let seconds = max(1, ((retryAfterMilliseconds ?? 1000) + 999) / 1000)
        return Problem(.unavailable, status: .serviceUnavailable, detail: detail, retryAfterSeconds: seconds)
    }

    public func response(from request: Request, context: some RequestContext) throws -> Response {
        var headers: HTTPFields = [.contentType: "application/problem+json", .cacheControl: "no-store"]
        if let retryAfterSeconds { headers[.retryAfter] = String(retryAfterSeconds) }
        headers.append(contentsOf: self.headers)
        let json = #"{"type":"urn:stamp:problem:\#(kind.rawValue)","title":\#(JSONText.quote(status.reasonPhrase)),"status":\#(status.code),"detail":\#(JSONText.quote(detail))}"#
        return Response(status: status, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(string: json)))
    }
}

/// Turns every error that escapes a handler into a problem response, so that no error reaches
/// the client in another shape.
public struct ProblemMiddleware<Context: RequestContext>: RouterMiddleware {
    /// The methods a path serves (the `Allow` header), or `nil` for a path the API does not have.
    let allowedMethods: @Sendable (String) -> String?

    public init(allowedMethods: @escaping @Sendable (String) -> String?) {
        self.allowedMethods = allowedMethods
    }

    public func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let problem as Problem {
            throw problem
        } catch let error as HTTPError {
            switch error.status {
            case .notFound, .methodNotAllowed:
                guard let allowed = allowedMethods(request.uri.path) else {
                    throw Problem(.notFound, status: .notFound, detail: "no resource at \(request.uri.path)")
                }
                throw Problem(.methodNotAllowed, status: .methodNotAllowed, detail: "\(request.method) is not allowed on \(request.uri.path); use \(allowed)", headers: [.allow: allowed])
            case .contentTooLarge: throw Problem(.bodyTooLarge, status: .contentTooLarge, detail: "the request body is too large")
            default: throw Problem(.httpError, status: error.status, detail: error.body ?? error.status.reasonPhrase)
            }
        } catch {
            context.logger.error("request failed", metadata: ["stamp.error": "\(String(reflecting: type(of: error)))"])
            throw Problem(.internalError, status: .internalServerError, detail: "internal error")
        }
    }
}

/// The generator node's paths.
enum GeneratorPaths {
    /// The methods of a path (all GET), or `nil` for a path the node does not serve.
    static func allowedMethods(_ path: String) -> String? {
        switch path {
        case "/v1/ids", "/v1/cluster", "/health/live", "/health/ready", "/metrics", "/openapi.yaml": return "GET"
        default:
            let segments = path.split(separator: "/", omittingEmptySubsequences: false)
            return segments.count == 4 && segments[1] == "v1" && segments[2] == "ids" && !segments[3].isEmpty ? "GET" : nil
        }
    }
}

/// Rejects request bodies above a limit before any handler runs, bounding what a client can
/// make the server buffer.
public struct BodyLimitMiddleware<Context: RequestContext>: RouterMiddleware {
    let maxBodySize: Int

    public init(maxBodySize: Int) {
        self.maxBodySize = maxBodySize
    }

    public func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        if let length = request.headers[.contentLength].flatMap({ Int($0) }), length > maxBodySize {
            throw Problem(.bodyTooLarge, status: .contentTooLarge, detail: "request bodies are limited to \(maxBodySize) bytes")
        }
        guard request.headers[.transferEncoding] != nil else { return try await next(request, context) }
        var request = request
        do {
            _ = try await request.collectBody(upTo: maxBodySize)
        } catch {
            throw Problem(.bodyTooLarge, status: .contentTooLarge, detail: "request bodies are limited to \(maxBodySize) bytes")
        }
        return try await next(request, context)
    }
}

/// Minimal JSON text helpers for the hand-written response bodies of the hot path.
public enum JSONText {
    /// A JSON string literal for `text`.
    public static func quote(_ text: String) -> String {
        var result = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": result += "\\\""
            case "\\": result += "\\\\"
            case "\n": result += "\\n"
            case "\r": result += "\\r"
            case "\t": result += "\\t"
            case _ where scalar.value < 0x20:
                let hex = String(scalar.value, radix: 16)
                result += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: result.unicodeScalars.append(scalar)
            }
        }
        return result + "\""
    }
}
