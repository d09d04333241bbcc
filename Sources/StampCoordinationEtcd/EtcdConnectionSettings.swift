import NIOSSL
import StampCoordination

/// One etcd cluster as every request to it is made: an ``EtcdLocation`` with its user's password
/// and its TLS settings resolved.
public struct EtcdConnectionSettings: Sendable {
    /// The cluster, for messages: its description holds no password.
    public let location: EtcdLocation
    /// The user and the password sent to authenticate, and where the password came from.
    let credential: (username: String, password: String, origin: EtcdPasswordSource.Origin)?
    /// The TLS settings, `nil` for plain HTTP.
    let tls: TLSConfiguration?
    /// How long one request to one member may take before the next member is tried (default 2 s).
    /// A member cut off from the majority holds requests rather than failing them.
    public var requestTimeout: Duration

    /// Resolves `location`'s password (from `passwords`, when it names a user) and TLS settings.
    ///
    /// - Throws: ``CoordinationError`` `invalid-configuration` when the user has no password or the
    ///   password file or the `cacert` file cannot be used.
    public init(location: EtcdLocation, passwords: EtcdPasswordSource = .process, requestTimeout: Duration = .seconds(2)) throws(CoordinationError) {
        self.location = location
        self.requestTimeout = requestTimeout
        if let username = location.username {
            guard let (password, origin) = try passwords.password() else {
                throw CoordinationError(
                    .invalidConfiguration,
                    "the etcd user \(username) needs a password: set \(EtcdPasswordSource.passwordVariable) or \(EtcdPasswordSource.passwordFileVariable)"
                )
            }
            credential = (username, password, origin)
        } else {
            credential = nil
        }
        guard location.usesTLS else {
            tls = nil
            return
        }
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.certificateVerification = .fullVerification
        if let path = location.caFile {
            do {
                tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(path))
            } catch {
                throw CoordinationError(.invalidConfiguration, "cacert names \(path), which cannot be read as PEM certificates", cause: error)
            }
        }
        self.tls = tls
    }

    /// Reads an `etcd://` or `etcds://` location and resolves its settings, as a store would.
    public init(parsing text: String, passwords: EtcdPasswordSource = .process) throws(CoordinationError) {
        try self.init(location: EtcdLocation(parsing: text), passwords: passwords)
    }
}
