import AsyncHTTPClient
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Logging
import NIOCore
import NIOHTTP1
import StampCoordination
import Synchronization

/// Requests to etcd's v3 JSON gateway, failing over between the members of the location.
///
/// Each request goes to the member that answered last, and on to the next one in the location's
/// order when that member cannot be reached, times out or says it is unavailable (no leader, a
/// member cut off from the majority): every request the store sends is safe to repeat. A request
/// its caller gives up on (cancels) while a member has not answered makes the next request start
/// with the member after that one, so that a caller whose own deadline is shorter than the request
/// timeout still moves on from a member that holds requests. With a user,
/// the client authenticates first and again whenever etcd says the token is no longer valid.
final class EtcdGatewayClient: Sendable {
    private let settings: EtcdConnectionSettings
    private let http: HTTPClient
    private let logger: Logger
    /// The member tried first, and the authentication token while one is held.
    private let state = Mutex<(preferred: Int, token: String?)>((0, nil))

    init(settings: EtcdConnectionSettings, logger: Logger) {
        self.settings = settings
        self.logger = logger
        var configuration = HTTPClient.Configuration()
        configuration.tlsConfiguration = settings.tls
        configuration.redirectConfiguration = .disallow
        // A member that refuses connections (stopped, restarting) is passed over at once for the
        // next one: trying the members in turn is this client's retry. Retrying to connect to the
        // same member would hold each request for the whole connect timeout.
        configuration.connectionPool.retryConnectionEstablishment = false
        // The request's deadline ends with the answer's head; the read timeout bounds its body.
        configuration.timeout = HTTPClient.Configuration.Timeout(connect: TimeAmount(settings.requestTimeout), read: TimeAmount(settings.requestTimeout))
        http = HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: configuration)
    }

    /// Closes the connections; later requests fail.
    func shutdown() async {
        try? await http.shutdown()
    }

    func range(_ request: EtcdRangeRequest) async throws(EtcdGatewayError) -> EtcdRangeResponse {
        try await call("/v3/kv/range", request).answer
    }

    /// Reads keys as ``range(_:)`` does, with the answering member's clock: the Unix second of its
    /// `Date` header, `nil` when the answer had none.
    func rangeWithDate(_ request: EtcdRangeRequest) async throws(EtcdGatewayError) -> (answer: EtcdRangeResponse, unixSecond: Int64?) {
        try await call("/v3/kv/range", request)
    }

    func transaction(_ request: EtcdTransactionRequest) async throws(EtcdGatewayError) -> EtcdTransactionResponse {
        try await call("/v3/kv/txn", request).answer
    }

    /// Grants a lease of `ttl` rounded up to whole seconds (etcd's unit), and returns its ID.
    func grantLease(ttl: Duration) async throws(EtcdGatewayError) -> Int64 {
        let seconds = max(1, (ttl.wholeMilliseconds + 999) / 1000)
        let lease: EtcdLease = try await call("/v3/lease/grant", EtcdLeaseGrantRequest(ttl: EtcdInt64(seconds))).answer
        guard let id = lease.id?.value, id != 0 else { throw EtcdGatewayError(.malformedAnswer, "etcd granted a lease without an ID") }
        return id
    }

    /// Renews lease `id` once and returns the seconds it now lasts: 0 when it no longer exists.
    func keepLeaseAlive(_ id: Int64) async throws(EtcdGatewayError) -> Int64 {
        let answer: EtcdStreamedLease = try await call("/v3/lease/keepalive", EtcdLeaseRequest(id: EtcdInt64(id))).answer
        return answer.result?.ttl?.value ?? 0
    }

    /// Revokes lease `id`, deleting the keys bound to it; a lease that no longer exists is no failure.
    func revokeLease(_ id: Int64) async throws(EtcdGatewayError) {
        do {
            let _: (answer: EtcdLease, unixSecond: Int64?) = try await call("/v3/lease/revoke", EtcdLeaseRequest(id: EtcdInt64(id)))
        } catch where error.code == .refused && error.grpcCode == GRPCCode.notFound {
            return
        }
    }

    /// gRPC status codes that etcd's answers carry.
    enum GRPCCode {
        static let invalidArgument = 3
        static let deadlineExceeded = 4
        static let notFound = 5
        static let permissionDenied = 7
        static let unavailable = 14
        static let unauthenticated = 16
    }

    /// Sends `request` to `path`, trying every member once from the preferred one, and decodes the
    /// answer; with the Unix second of the answer's `Date` header.
    private func call<Request: Encodable, Answer: Decodable>(_ path: String, _ request: Request) async throws(EtcdGatewayError) -> (answer: Answer, unixSecond: Int64?) {
        let body: ByteBuffer
        do {
            body = ByteBuffer(bytes: try JSONEncoder().encode(request))
        } catch {
            throw EtcdGatewayError(.malformedAnswer, "a request to etcd could not be encoded", cause: error)
        }
        let endpoints = settings.location.endpoints
        let first = state.withLock { $0.preferred }
        var failures: [String] = []
        var lastFailure: EtcdGatewayError?
        for step in 0..<endpoints.count {
            let index = (first + step) % endpoints.count
            do {
                let answer: (answer: Answer, unixSecond: Int64?) = try await call(path, body: body, endpoint: endpoints[index])
                state.withLock { $0.preferred = index }
                return answer
            } catch where error.isMemberFailure {
                if Task.isCancelled {
                    // The caller gave up waiting (a renewal's deadline, shorter than the request
                    // timeout): this member did not answer in time, so the next call starts with
                    // the one after it, rather than waiting on it again.
                    state.withLock { if $0.preferred == index { $0.preferred = (index + 1) % endpoints.count } }
                    throw EtcdGatewayError(.unreachable, "the request to etcd was given up while \(endpoints[index]) had not answered", cause: error)
                }
                logger.debug("an etcd member failed; trying the next", metadata: ["stamp.etcd.endpoint": "\(endpoints[index])", "stamp.error": "\(error.message)"])
                failures.append("\(endpoints[index]): \(error.message)")
                lastFailure = error
            }
        }
        throw EtcdGatewayError(.unreachable, "no etcd member answered (\(failures.joined(separator: "; ")))", cause: lastFailure)
    }

    /// Sends `body` to one member, authenticating first (and once more on an expired token) when the location has a user.
    private func call<Answer: Decodable>(_ path: String, body: ByteBuffer, endpoint: EtcdLocation.Endpoint) async throws(EtcdGatewayError) -> (answer: Answer, unixSecond: Int64?) {
        guard let credential = settings.credential else {
            return try await send(path, body: body, endpoint: endpoint, token: nil)
        }
        let held = state.withLock { $0.token }
        let token: String
        if let held {
            token = held
        } else {
            token = try await authenticate(credential, endpoint: endpoint)
        }
        do {
            return try await send(path, body: body, endpoint: endpoint, token: token)
        } catch where error.code == .refused && error.grpcCode == GRPCCode.unauthenticated && held != nil {
            // Simple tokens expire after a while without use, and with a restart of the member.
            state.withLock { if $0.token == token { $0.token = nil } }
            let renewed = try await authenticate(credential, endpoint: endpoint)
            return try await send(path, body: body, endpoint: endpoint, token: renewed)
        }
    }

    private func authenticate(_ credential: (username: String, password: String, origin: EtcdPasswordSource.Origin), endpoint: EtcdLocation.Endpoint) async throws(EtcdGatewayError) -> String {
        let body: ByteBuffer
        do {
            body = ByteBuffer(bytes: try JSONEncoder().encode(EtcdAuthenticateRequest(name: credential.username, password: credential.password)))
        } catch {
            throw EtcdGatewayError(.malformedAnswer, "the authentication request could not be encoded", cause: error)
        }
        let answer: EtcdAuthenticateResponse
        do {
            answer = try await send("/v3/auth/authenticate", body: body, endpoint: endpoint, token: nil).answer
        } catch where error.code == .refused && [GRPCCode.invalidArgument, GRPCCode.permissionDenied, GRPCCode.unauthenticated].contains(error.grpcCode) {
            throw EtcdGatewayError(
                .authenticationFailed,
                "etcd refused the user \(credential.username) with the password from \(credential.origin): \(error.message)",
                cause: error
            )
        }
        guard let token = answer.token, !token.isEmpty else {
            throw EtcdGatewayError(.authenticationFailed, "etcd gave no token to the user \(credential.username): is authentication enabled?")
        }
        state.withLock { $0.token = token }
        return token
    }

    /// One HTTP request to one member, and its answer decoded with the Unix second of its `Date`
    /// header, or its refusal as an error.
    private func send<Answer: Decodable>(_ path: String, body: ByteBuffer, endpoint: EtcdLocation.Endpoint, token: String?) async throws(EtcdGatewayError) -> (answer: Answer, unixSecond: Int64?) {
        var request = HTTPClientRequest(url: settings.location.baseURL(of: endpoint) + path)
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        if let token { request.headers.add(name: "Authorization", value: token) }
        request.body = .bytes(body)
        let status: UInt
        let answer: ByteBuffer
        let date: String?
        do {
            let response = try await http.execute(request, timeout: TimeAmount(settings.requestTimeout))
            status = response.status.code
            date = response.headers.first(name: "date")
            answer = try await response.body.collect(upTo: Self.answerLimit)
        } catch {
            throw EtcdGatewayError(.unreachable, Self.describe(error), cause: error)
        }
        let bytes = Data(answer.readableBytesView)
        if let refusal = try? JSONDecoder().decode(EtcdGatewayRefusal.self, from: bytes) {
            throw EtcdGatewayError(.refused, "etcd refused the request: \(refusal.message) (gRPC code \(refusal.code))", grpcCode: refusal.code)
        }
        guard status == 200 else {
            throw EtcdGatewayError(.unreachable, "the etcd gateway answered HTTP \(status)")
        }
        do {
            return (try JSONDecoder().decode(Answer.self, from: bytes), date.flatMap(HTTPDate.unixSecond(of:)))
        } catch {
            throw EtcdGatewayError(.malformedAnswer, "etcd's answer to \(path) could not be read", cause: error)
        }
    }

    /// The largest answer read: a range of every node key of a cluster is far smaller.
    private static let answerLimit = 4 << 20

    /// A transport failure in words: a refused connection, a timeout, a TLS failure.
    private static func describe(_ error: any Error) -> String {
        if let error = error as? HTTPClientError {
            switch error {
            case .deadlineExceeded, .readTimeout, .connectTimeout: return "no answer in time"
            case .remoteConnectionClosed: return "the member closed the connection"
            default: break
            }
        }
        let text = String(describing: error)
        if text.contains("CERTIFICATE_VERIFY_FAILED") { return "the member's certificate is not signed by a trusted authority (cacert)" }
        if text.contains("failedToValidateHostname") { return "the member's certificate is not for its address" }
        if text.contains("connectionRefused") || text.contains("Connection refused") { return "connection refused" }
        return text
    }
}

/// A failed request to etcd.
struct EtcdGatewayError: Error, Sendable {
    enum Code: String, Sendable {
        /// The member could not be reached, did not answer in time, or no member answered.
        case unreachable
        /// The member answered with a gRPC error (see ``grpcCode``).
        case refused
        /// The member refused the user or its password.
        case authenticationFailed = "authentication-failed"
        /// An answer that is not what the gateway writes.
        case malformedAnswer = "malformed-answer"
    }

    let code: Code
    /// What failed, safe to show: never a password or a token.
    let message: String
    /// The gRPC status code of a refusal.
    let grpcCode: Int?
    let cause: (any Error & Sendable)?

    init(_ code: Code, _ message: String, grpcCode: Int? = nil, cause: (any Error & Sendable)? = nil) {
        self.code = code
        self.message = message
        self.grpcCode = grpcCode
        self.cause = cause
    }

    /// Whether another member may answer where this one failed.
    var isMemberFailure: Bool {
        switch code {
        case .unreachable: true
        case .refused: grpcCode == EtcdGatewayClient.GRPCCode.unavailable || grpcCode == EtcdGatewayClient.GRPCCode.deadlineExceeded
        case .authenticationFailed, .malformedAnswer: false
        }
    }
}
