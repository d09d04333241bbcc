import Hummingbird
import HummingbirdCore
import NIOCore

/// How the HTTP server of a node listens and what it accepts.
public struct ServerConfiguration: Sendable {
    /// Address to bind (default `127.0.0.1`).
    public var host: String
    /// Port to bind (default 7400; 0 picks a free port).
    public var port: Int
    /// Connections idle this long are closed (default 60 s).
    public var idleTimeout: Duration
    /// Largest size of one header field and of all header fields together (default 16 KiB).
    public var maxHeaderSize: Int
    /// Largest request body accepted (default 4 KiB; the API takes no bodies).
    public var maxBodySize: Int

    public init(host: String = "127.0.0.1", port: Int = 7400, idleTimeout: Duration = .seconds(60), maxHeaderSize: Int = 16 * 1024, maxBodySize: Int = 4 * 1024) {
        self.host = host
        self.port = port
        self.idleTimeout = idleTimeout
        self.maxHeaderSize = maxHeaderSize
        self.maxBodySize = maxBodySize
    }
}

extension ServerConfiguration {
    /// The HTTP/1 channel settings these bounds make: idle timeout and header limits.
    public var http1: HTTP1Channel.Configuration {
        HTTP1Channel.Configuration(
            idleTimeout: TimeAmount.nanoseconds(Int64(idleTimeout.components.seconds) * 1_000_000_000 + idleTimeout.components.attoseconds / 1_000_000_000),
            httpDecoderConfiguration: .init(maxHeaderFieldSize: maxHeaderSize, maxHeaderListSize: maxHeaderSize, maxHeaderFieldCount: 100)
        )
    }
}

/// Answers shared by the servers' operational endpoints.
public enum OperationalResponses {
    /// A Prometheus text document.
    public static func metrics(_ text: String) -> Response {
        Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8", .cacheControl: "no-store"], body: ResponseBody(byteBuffer: ByteBuffer(string: text)))
    }

    /// An OpenAPI document, or a 500 problem when the build lacks it.
    public static func openAPI(_ text: String?) throws -> Response {
        guard let text else {
            throw Problem(.internalError, status: .internalServerError, detail: "the OpenAPI document is missing from this build")
        }
        return Response(status: .ok, headers: [.contentType: "application/yaml"], body: ResponseBody(byteBuffer: ByteBuffer(string: text)))
    }
}
