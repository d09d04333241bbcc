import Foundation
import Hummingbird
import NIOCore
import StampAPI

/// An RFC 9457 problem: every error the HTTP APIs return, as `application/problem+json`.
public struct Problem: HTTPResponseError, Sendable {
    /// The stable type, the document's `type` member.
    public let type: ProblemType
    public let status: HTTPResponse.Status
    /// A human-readable explanation, safe to show.
    public let detail: String
    /// For 503: seconds after which to try again.
    public let retryAfterSeconds: Int64?
    /// Extra headers, such as `Allow` on a 405 or `WWW-Authenticate` on a 401.
    public let headers: HTTPFields

    public init(_ type: ProblemType, status: HTTPResponse.Status, detail: String, retryAfterSeconds: Int64? = nil, headers: HTTPFields = [:]) {
        self.type = type
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

    /// The problem document this problem answers with.
    public var details: ProblemDetails {
        ProblemDetails(type: type, title: status.reasonPhrase, status: Int(status.code), detail: detail)
    }

    public func response(from request: Request, context: some RequestContext) throws -> Response {
        Response(directResponse)
    }

    /// The `application/problem+json` answer of this problem.
    public var directResponse: DirectResponse {
        var headers: HTTPFields = [.contentType: "application/problem+json", .cacheControl: "no-store"]
        if let retryAfterSeconds { headers[.retryAfter] = String(retryAfterSeconds) }
        headers.append(contentsOf: self.headers)
        // Encoding four strings and an integer cannot fail.
        return DirectResponse(status: status, headers: headers, body: ByteBuffer(data: try! APIEncoding.encoder.encode(details)))
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
