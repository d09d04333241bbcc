import AsyncHTTPClient
import Foundation
import NIOCore
import StampAPI

/// Asks another node of the cluster for its ``NodeStatus`` (`GET {address}/v1/node`), for the
/// answer of `GET /v1/cluster/nodes`.
public struct PeerStatusSource: Sendable {
    /// Asks the node at `address` (its advertised URL), sending `authorization` as the request's
    /// `Authorization` header; throws ``PeerStatusError`` saying why there is no answer.
    let fetch: @Sendable (_ address: String, _ authorization: String?) async throws(PeerStatusError) -> NodeStatus

    public init(_ fetch: @escaping @Sendable (_ address: String, _ authorization: String?) async throws(PeerStatusError) -> NodeStatus) {
        self.fetch = fetch
    }

    /// Asks over HTTP with AsyncHTTPClient's shared client, giving up after `timeout`.
    ///
    /// The caller's `Authorization` header goes to the addresses the coordination store lists, as
    /// a ``StampClient`` sends its token to the nodes `/v1/cluster` lists: whoever can write the
    /// store is trusted with the cluster's token either way.
    public static func http(timeout: Duration = .seconds(1)) -> PeerStatusSource {
        PeerStatusSource { address, authorization throws(PeerStatusError) in
            guard let base = URL(string: address), ["http", "https"].contains(base.scheme?.lowercased() ?? ""), base.host != nil else {
                throw PeerStatusError("advertises no HTTP address")
            }
            var request = HTTPClientRequest(url: address.hasSuffix("/") ? "\(address)v1/node" : "\(address)/v1/node")
            request.headers.add(name: "Accept", value: "application/json")
            if let authorization { request.headers.add(name: "Authorization", value: authorization) }
            let status: UInt
            let body: ByteBuffer
            do {
                let response = try await HTTPClient.shared.execute(request, timeout: TimeAmount(timeout))
                status = response.status.code
                body = try await response.body.collect(upTo: 64 * 1024)
            } catch let error as HTTPClientError where error == .deadlineExceeded || error == .readTimeout || error == .connectTimeout {
                throw PeerStatusError("did not answer within \(timeout)")
            } catch {
                throw PeerStatusError("could not be reached")
            }
            guard status == 200 else { throw PeerStatusError("answered \(status) to GET /v1/node") }
            do {
                return try JSONDecoder().decode(NodeStatus.self, from: Data(buffer: body))
            } catch {
                throw PeerStatusError("answered GET /v1/node with no node status")
            }
        }
    }
}

/// Why another node's status is missing, safe to show.
public struct PeerStatusError: Error, Sendable, Equatable, CustomStringConvertible {
    public let description: String

    public init(_ description: String) {
        self.description = description
    }
}
