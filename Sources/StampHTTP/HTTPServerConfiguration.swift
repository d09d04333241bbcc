import Foundation
import Hummingbird
import HummingbirdCore
import Logging
import Metrics
import NIOCore
import StampCore

/// How an HTTP server listens and what it accepts.
public struct HTTPServerConfiguration: Sendable {
    /// Address to bind (default `127.0.0.1`).
    public var host: String
    /// Port to bind; 0 binds a free one (see ``portFile`` and ``ListeningAddress``).
    public var port: Int
    /// Connections idle this long are closed (default 60 s).
    public var idleTimeout: Duration
    /// Largest size of one header field and of all header fields together (default 16 KiB).
    public var maxHeaderSize: Int
    /// Largest request body accepted (default 4 KiB, for an API that takes no bodies).
    public var maxBodySize: Int
    /// A file the server writes the port it bound to once it listens, replacing it atomically (default none).
    public var portFile: String?

    public init(host: String = "127.0.0.1", port: Int, idleTimeout: Duration = .seconds(60), maxHeaderSize: Int = 16 * 1024, maxBodySize: Int = 4 * 1024, portFile: String? = nil) {
        self.host = host
        self.port = port
        self.idleTimeout = idleTimeout
        self.maxHeaderSize = maxHeaderSize
        self.maxBodySize = maxBodySize
        self.portFile = portFile
    }
}

extension HTTPServerConfiguration {
    /// What a server does once it listens (Hummingbird's `onServerRunning`): writes the bound port
    /// to ``portFile``, logs it at notice level, and tells `listening`.
    func announceListening(to listening: ListeningAddress? = nil, logger: Logger) -> @Sendable (any Channel) async -> Void {
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

extension HTTPServerConfiguration {
    /// The HTTP/1 channel settings these bounds make: idle timeout and header limits.
    public var http1: HTTP1Channel.Configuration {
        HTTP1Channel.Configuration(
            idleTimeout: .nanoseconds(idleTimeout.wholeNanoseconds),
            httpDecoderConfiguration: .init(maxHeaderFieldSize: maxHeaderSize, maxHeaderListSize: maxHeaderSize, maxHeaderFieldCount: 100)
        )
    }
}

extension HTTPServerConfiguration {
    /// The Hummingbird application that serves `router` at this address with these bounds, and
    /// tells `listening` (and the port file) where it listens once it does.
    ///
    /// - Parameters:
    ///   - eventLoopRoutes: Routes answered in the channel pipeline ahead of the router (see
    ///     ``EventLoopRoute``), first match first; every other request goes to `router`.
    ///   - metricsFactory: Where the event-loop routes' requests are timed.
    public func application<Context: RequestContext>(
        router: Router<Context>,
        eventLoopRoutes: [any EventLoopRoute] = [],
        serverName: String,
        listening: ListeningAddress? = nil,
        metricsFactory: any MetricsFactory = MetricsSystem.factory,
        logger: Logger
    ) -> Application<RouterResponder<Context>> {
        let configuration = http1
        let server: HTTPServerBuilder
        if eventLoopRoutes.isEmpty {
            server = .http1(configuration: configuration)
        } else {
            let timers = RequestTimers(factory: metricsFactory)
            server = HTTPServerBuilder { responder in
                RoutingHTTP1Channel(responder: responder, configuration: configuration, routes: eventLoopRoutes, maxBodySize: maxBodySize, serverName: serverName, timers: timers)
            }
        }
        return Application(
            router: router,
            server: server,
            configuration: ApplicationConfiguration(address: .hostname(host, port: port), serverName: serverName),
            onServerRunning: announceListening(to: listening, logger: logger),
            logger: logger
        )
    }
}
