import Crypto
import Hummingbird
import StampAPI
import StampHTTP
import StampWebConsole

/// The bearer token that callers of a node's API must send, when the node is given one.
///
/// Every path but `/health/*`, `/metrics` and the console's page and assets (`/ui`,
/// `/ui/assets/*`, which hold no data) needs `Authorization: Bearer <token>`; without it the node
/// answers 401. Only the token's SHA-256 digest is kept, and digests are compared in constant time.
public struct NodeToken: Sendable {
    /// The fewest characters a token may have.
    public static let minimumLength = 16

    private let digest: SHA256Digest

    /// A token of at least ``minimumLength`` characters, or `nil` for a shorter one.
    public init?(_ text: String) {
        guard text.count >= Self.minimumLength else { return nil }
        digest = SHA256.hash(data: Array(text.utf8))
    }

    /// Whether a request to `path` with this `Authorization` header may go on.
    func admits(path: Substring, authorization: String?) -> Bool {
        if path.hasPrefix("/health/") || path == "/metrics" || path == "/ui" || WebConsole.isAssetPath(path) { return true }
        guard let header = authorization, header.utf8.count > 7, header.prefix(7).lowercased() == "bearer " else { return false }
        return SHA256.hash(data: Array(header.utf8.dropFirst(7))) == digest
    }

    /// The answer to a request without the token.
    static let refusal = Problem(.unauthorized, status: .unauthorized, detail: "this node's API needs its bearer token", headers: [.wwwAuthenticate: #"Bearer realm="stamp""#])
}

/// Refuses, with 401, router requests that ``NodeToken`` does not admit.
struct NodeTokenMiddleware<Context: RequestContext>: RouterMiddleware {
    let token: NodeToken

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard token.admits(path: Substring(request.uri.path), authorization: request.headers[.authorization]) else { throw NodeToken.refusal }
        return try await next(request, context)
    }
}
