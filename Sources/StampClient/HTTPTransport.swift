import AsyncHTTPClient
import Foundation
import NIOCore
import StampAPI
import StampCore

/// The transport over HTTP/1.1 with keep-alive connections pooled per node, on async-http-client.
///
/// IDs are fetched as `application/octet-stream` (8 bytes big-endian each), the cheapest form to read.
public final class HTTPTransport: StampTransport {
    private let client: HTTPClient
    private let requestTimeout: TimeAmount
    private let authorization: String?

    /// Makes a transport keeping up to `connectionsPerNode` connections open to each node.
    ///
    /// - Parameters:
    ///   - connectionsPerNode: Most connections to one node.
    ///   - requestTimeout: A backstop after which the HTTP client gives up by itself; the client's
    ///     attempt timeout normally ends an attempt sooner.
    ///   - token: The nodes' bearer token, sent with every request; `nil` for none.
    public init(connectionsPerNode: Int = 8, requestTimeout: Duration = .seconds(30), token: String? = nil) {
        var configuration = HTTPClient.Configuration()
        configuration.connectionPool = HTTPClient.Configuration.ConnectionPool(idleTimeout: .seconds(50), concurrentHTTP1ConnectionsPerHostSoftLimit: max(1, connectionsPerNode))
        // A node that refuses connections must fail the attempt at once, so that the client fails over.
        configuration.connectionPool.retryConnectionEstablishment = false
        configuration.timeout.connect = TimeAmount(requestTimeout)
        configuration.httpVersion = .http1Only
        configuration.decompression = .disabled
        configuration.redirectConfiguration = .disallow
        client = HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: configuration)
        self.requestTimeout = TimeAmount(requestTimeout)
        authorization = token.map { "Bearer \($0)" }
    }

    public func fetchIDs(node: String, shard: Int, count: Int, after: StampID?) async throws(TransportFailure) -> [StampID] {
        var url = "\(node)/v1/ids?shard=\(shard)&count=\(count)"
        if let after { url += "&after=\(after.rawValue)" }
        var request = HTTPClientRequest(url: url)
        request.headers.add(name: "Accept", value: "application/octet-stream")
        let (status, body) = try await execute(request, limit: count * 8 + 64 * 1024)
        guard status == 200 else { throw Self.failure(status: status, body: body) }
        guard body.readableBytes == count * 8 else {
            throw TransportFailure(.invalidResponse, status: status, detail: "expected \(count * 8) bytes of IDs, got \(body.readableBytes)")
        }
        var reader = body
        var ids: [StampID] = []
        ids.reserveCapacity(count)
        while let raw = reader.readInteger(endianness: .big, as: Int64.self) {
            guard let id = StampID(rawValue: raw) else { throw TransportFailure(.invalidResponse, status: status, detail: "a negative ID") }
            ids.append(id)
        }
        return ids
    }

    public func fetchCluster(node: String) async throws(TransportFailure) -> [String] {
        var request = HTTPClientRequest(url: "\(node)/v1/cluster")
        request.headers.add(name: "Accept", value: "application/json")
        let (status, body) = try await execute(request, limit: 1 << 20)
        guard status == 200 else { throw Self.failure(status: status, body: body) }
        do {
            return try JSONDecoder().decode(ClusterStatus.self, from: Data(body.readableBytesView)).nodes.compactMap(\.address)
        } catch {
            throw TransportFailure(.invalidResponse, status: status, detail: "the cluster document could not be read")
        }
    }

    public func probe(node: String) async -> Bool {
        let request = HTTPClientRequest(url: "\(node)/health/ready")
        guard let (status, _) = try? await execute(request, limit: 64 * 1024) else { return false }
        return status == 200
    }

    public func shutdown() async {
        try? await client.shutdown()
    }

    private func execute(_ request: HTTPClientRequest, limit: Int) async throws(TransportFailure) -> (Int, ByteBuffer) {
        var request = request
        if let authorization { request.headers.add(name: "Authorization", value: authorization) }
        do {
            let response = try await client.execute(request, timeout: requestTimeout)
            let body = try await response.body.collect(upTo: limit)
            return (Int(response.status.code), body)
        } catch let error as HTTPClientError where error == .deadlineExceeded || error == .readTimeout || error == .connectTimeout {
            throw TransportFailure(.timeout, detail: "\(error)")
        } catch is CancellationError {
            throw TransportFailure(.connection, detail: "cancelled")
        } catch {
            throw TransportFailure(.connection, detail: "\(error)")
        }
    }

    /// Classifies a non-200 answer from its status and problem document.
    static func failure(status: Int, body: ByteBuffer) -> TransportFailure {
        let problem = try? JSONDecoder().decode(ProblemDetails.self, from: Data(body.readableBytesView))
        let detail = problem?.detail ?? "HTTP \(status)"
        switch status {
        case 503: return TransportFailure(.unavailable, status: status, detail: detail)
        case 409 where problem?.is(.afterTooFarAhead) == true: return TransportFailure(.afterTooFarAhead, status: status, detail: detail)
        case 500...599: return TransportFailure(.serverError, status: status, detail: detail)
        case 400...499: return TransportFailure(.invalidRequest, status: status, detail: detail)
        default: return TransportFailure(.invalidResponse, status: status, detail: detail)
        }
    }
}
