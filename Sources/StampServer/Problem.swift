import Hummingbird
import NIOCore

/// An RFC 9457 problem: every error the HTTP API returns, as `application/problem+json`.
public struct Problem: HTTPResponseError, Sendable {
    /// Stable problem types; the `type` member is `urn:stamp:problem:<raw value>`.
    public enum Kind: String, Sendable {
        case invalidParameter = "invalid-parameter"
        case invalidID = "invalid-id"
        case notAcceptable = "not-acceptable"
        case afterTooFarAhead = "after-too-far-ahead"
        case unavailable
        case notFound = "not-found"
        case methodNotAllowed = "method-not-allowed"
        case bodyTooLarge = "body-too-large"
        case httpError = "http-error"
        case internalError = "internal-error"
    }

    public let kind: Kind
    public let status: HTTPResponse.Status
    /// A human-readable explanation, safe to show.
    public let detail: String
    /// For 503: seconds after which to try again.
    public let retryAfterSeconds: Int64?

    public init(_ kind: Kind, status: HTTPResponse.Status, detail: String, retryAfterSeconds: Int64? = nil) {
        self.kind = kind
        self.status = status
        self.detail = detail
        self.retryAfterSeconds = retryAfterSeconds
    }

    /// A 503 refusal that tells clients when to come back.
    static func unavailable(_ detail: String, retryAfterMilliseconds: Int64?) -> Problem {
        let seconds = max(1, ((retryAfterMilliseconds ?? 1000) + 999) / 1000)
        return Problem(.unavailable, status: .serviceUnavailable, detail: detail, retryAfterSeconds: seconds)
    }

    public func response(from request: Request, context: some RequestContext) throws -> Response {
        var headers: HTTPFields = [.contentType: "application/problem+json", .cacheControl: "no-store"]
        if let retryAfterSeconds { headers[.retryAfter] = String(retryAfterSeconds) }
        if kind == .methodNotAllowed { headers[.allow] = "GET" }
        let json = #"{"type":"urn:stamp:problem:\#(kind.rawValue)","title":\#(JSONText.quote(status.reasonPhrase)),"status":\#(status.code),"detail":\#(JSONText.quote(detail))}"#
        return Response(status: status, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(string: json)))
    }
}

/// Turns every error that escapes a handler into a problem response, so that no error reaches
/// the client in another shape.
struct ProblemMiddleware<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let problem as Problem {
            throw problem
        } catch let error as HTTPError {
            switch error.status {
            case .notFound where Self.isKnownPath(request.uri.path):
                throw Problem(.methodNotAllowed, status: .methodNotAllowed, detail: "\(request.method) is not allowed on \(request.uri.path); use GET")
            case .notFound: throw Problem(.notFound, status: .notFound, detail: "no resource at \(request.uri.path)")
            case .methodNotAllowed: throw Problem(.methodNotAllowed, status: .methodNotAllowed, detail: "\(request.method) is not allowed on \(request.uri.path)")
            case .contentTooLarge: throw Problem(.bodyTooLarge, status: .contentTooLarge, detail: "the request body is too large")
            default: throw Problem(.httpError, status: error.status, detail: error.body ?? error.status.reasonPhrase)
            }
        } catch {
            context.logger.error("request failed", metadata: ["stamp.error": "\(String(reflecting: type(of: error)))"])
            throw Problem(.internalError, status: .internalServerError, detail: "internal error")
        }
    }
}

extension ProblemMiddleware {
    /// The paths the API serves, all with GET only.
    static func isKnownPath(_ path: String) -> Bool {
        switch path {
        case "/v1/ids", "/v1/cluster", "/health/live", "/health/ready", "/metrics", "/openapi.yaml": return true
        default:
            let segments = path.split(separator: "/", omittingEmptySubsequences: false)
            return segments.count == 4 && segments[1] == "v1" && segments[2] == "ids" && !segments[3].isEmpty
        }
    }
}

/// Rejects request bodies above a limit before any handler runs. The API takes no bodies, so
/// a small limit costs nothing and bounds what a client can make the node buffer.
struct BodyLimitMiddleware<Context: RequestContext>: RouterMiddleware {
    let maxBodySize: Int

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
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
enum JSONText {
    /// A JSON string literal for `text`.
    static func quote(_ text: String) -> String {
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
