import Foundation
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import Synchronization

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
    /// A file the server writes the port it bound to once it listens, replacing it atomically (default none).
    public var portFile: String?

    public init(host: String = "127.0.0.1", port: Int = 7400, idleTimeout: Duration = .seconds(60), maxHeaderSize: Int = 16 * 1024, maxBodySize: Int = 4 * 1024, portFile: String? = nil) {
        self.host = host
        self.port = port
        self.idleTimeout = idleTimeout
        self.maxHeaderSize = maxHeaderSize
        self.maxBodySize = maxBodySize
        self.portFile = portFile
    }
}

extension ServerConfiguration {
    /// What a server does once it listens (Hummingbird's `onServerRunning`): writes the bound port
    /// to ``portFile``, logs it at notice level, and tells `listening`.
    public func announceListening(to listening: ListeningAddress? = nil, logger: Logger) -> @Sendable (any Channel) async -> Void {
        let host = host
        let portFile = portFile
        return { channel in
            guard let port = channel.localAddress?.port else {
                logger.error("the server's socket has no port")
                return
            }
            let bound = ListeningAddress.Bound(host: host, port: port)
            if let portFile {
                do {
                    try Data("\(port)\n".utf8).write(to: URL(fileURLWithPath: portFile), options: .atomic)
                } catch {
                    logger.error("could not write the port file", metadata: ["stamp.port_file": "\(portFile)", "stamp.error": "\(error)"])
                }
            }
            logger.notice("listening", metadata: ["stamp.listen": "\(bound.url)", "stamp.port": "\(port)"])
            listening?.bind(bound)
        }
    }
}

/// Where an HTTP server listens, known once it has bound its port (port 0 binds a free one).
///
/// The server calls ``bind(_:)`` when it listens; anything that needs the address (a generator
/// node advertising itself, a test) awaits ``value()``.
public final class ListeningAddress: Sendable {
    /// A host and the port bound on it.
    public struct Bound: Sendable, Hashable {
        public let host: String
        public let port: Int

        public init(host: String, port: Int) {
            self.host = host
            self.port = port
        }

        /// The server's base URL, `http://host:port`.
        public var url: String { "http://\(host):\(port)" }
    }

    private struct State {
        var bound: Bound?
        var waiters: [Int: CheckedContinuation<Bound?, Never>] = [:]
        var nextWaiter = 0
    }

    private let state = Mutex(State())

    public init() {}

    /// Records where the server listens and wakes every waiter; only the first call counts.
    public func bind(_ bound: Bound) {
        let waiters = state.withLock { state -> [CheckedContinuation<Bound?, Never>] in
            guard state.bound == nil else { return [] }
            state.bound = bound
            defer { state.waiters = [:] }
            return Array(state.waiters.values)
        }
        waiters.forEach { $0.resume(returning: bound) }
    }

    /// The address once the server listens, or `nil` when the waiting task is cancelled first.
    public func value() async -> Bound? {
        let waiter = state.withLock { state in
            defer { state.nextWaiter += 1 }
            return state.nextWaiter
        }
        return await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let answer: Bound?? = state.withLock { state in
                    if let bound = state.bound { return .some(bound) }
                    if Task.isCancelled { return .some(nil) }
                    state.waiters[waiter] = continuation
                    return nil
                }
                if let answer { continuation.resume(returning: answer) }
            }
        } onCancel: {
            state.withLock { $0.waiters.removeValue(forKey: waiter) }?.resume(returning: nil)
        }
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
