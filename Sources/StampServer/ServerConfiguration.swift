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
