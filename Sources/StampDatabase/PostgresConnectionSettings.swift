import Logging
import PostgresNIO

/// One PostgreSQL database as every connection to it is made: a ``PostgresURL`` with its password
/// and its TLS settings resolved.
///
/// The password is the URL's, else one from ``PostgresPasswordSource`` (`PGPASSWORD`, the password
/// file). TLS follows the URL's `sslmode`: none for `disable`; for `require`, TLS without checking
/// the server's certificate; for `verify-full`, a certificate signed by a trusted authority (those
/// of `sslrootcert`, read here, else the system's) for the URL's host, a name or an IP address.
/// Both stores open their connection pools from ``clientConfiguration`` and call
/// ``checkConnection(logger:)`` before their first use, because a pool only reports that its
/// connections keep failing, not why; a server that is down or busy is left to the pool, which
/// waits for it as before.
public struct PostgresConnectionSettings: Sendable {
    /// The database, for messages: its ``PostgresURL/description`` hides the password.
    public let url: PostgresURL
    /// The password sent, if any, and where it came from.
    let credential: (password: String, origin: PostgresPasswordSource.Origin)?
    /// The TLS settings, `nil` for `sslmode=disable`.
    let tls: TLSConfiguration?

    /// Resolves `url`'s password (from `passwords` when the URL has none) and TLS settings.
    ///
    /// - Throws: ``DatabaseError`` `invalid-configuration` when the password file or the
    ///   `sslrootcert` file cannot be used.
    public init(url: PostgresURL, passwords: PostgresPasswordSource = .process) throws(DatabaseError) {
        self.url = url
        credential = try passwords.password(for: url)
        switch url.sslMode {
        case .disable:
            tls = nil
        case .require:
            var tls = TLSConfiguration.makeClientConfiguration()
            tls.certificateVerification = .none
            self.tls = tls
        case .verifyFull:
            var tls = TLSConfiguration.makeClientConfiguration()
            tls.certificateVerification = .fullVerification
            if let path = url.sslRootCertificate {
                do {
                    tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(path))
                } catch {
                    throw DatabaseError(
                        .invalidConfiguration,
                        "sslrootcert names \(path), which cannot be read as PEM certificates",
                        cause: error
                    )
                }
            }
            self.tls = tls
        }
    }

    /// The configuration of a connection pool to this database.
    public var clientConfiguration: PostgresClient.Configuration {
        PostgresClient.Configuration(
            host: url.host, port: url.port, username: url.username, password: credential?.password, database: url.database,
            tls: tls.map { .require($0) } ?? .disable
        )
    }

    /// Opens one connection as the pool would and closes it, so that a connection the server
    /// refuses for its TLS or its credentials, which no retry mends, says why.
    ///
    /// A server that cannot be reached or takes no more clients is only logged (at debug level):
    /// the pool retries those.
    ///
    /// - Throws: ``DatabaseError``: `tls-failed` when the server offers no TLS that `sslmode` asks
    ///   for or its certificate is not trusted; `authentication-failed` when it refuses the user or
    ///   the password (the message names where the password came from).
    public func checkConnection(logger: Logger) async throws(DatabaseError) {
        let connection: PostgresConnection
        do {
            let configuration = PostgresConnection.Configuration(
                host: url.host, port: url.port, username: url.username, password: credential?.password, database: url.database,
                tls: try tls.map { .require(try NIOSSLContext(configuration: $0)) } ?? .disable
            )
            connection = try await PostgresConnection.connect(configuration: configuration, id: 0, logger: logger)
        } catch {
            let explained = explain(error)
            guard explained.code != .unavailable else {
                logger.debug("a first connection to PostgreSQL failed; the pool tries again", metadata: ["stamp.error": "\(explained.message)"])
                return
            }
            throw explained
        }
        try? await connection.close()
    }

    /// The error a failed connection attempt means, in words that say what to correct.
    func explain(_ error: any Error) -> DatabaseError {
        let target = "PostgreSQL at \(url.description)"
        let underlying = (error as? PSQLError)?.underlying ?? error
        if let error = error as? PSQLError, error.code == .sslUnsupported {
            return DatabaseError(.tlsFailed, "\(target) does not offer TLS, which sslmode=\(url.sslMode.rawValue) asks for", cause: error)
        }
        if underlying is NIOSSLError || underlying is NIOSSLExtraError || underlying is BoringSSLError {
            let detail = "\(underlying)"
            let reason: String
            if detail.contains("CERTIFICATE_VERIFY_FAILED") {
                let trusted = url.sslRootCertificate.map { "the certificate authorities of sslrootcert (\($0))" } ?? "the system's certificate authorities"
                reason = "the server's certificate is not signed by \(trusted)"
            } else if underlying as? NIOSSLExtraError == .failedToValidateHostname {
                reason = "the server's certificate is not for the host \(url.host)"
            } else {
                reason = detail
            }
            return DatabaseError(.tlsFailed, "the TLS handshake with \(target) failed: \(reason)", cause: error)
        }
        if let error = error as? PSQLError, let sqlState = error.serverInfo?[.sqlState], sqlState.hasPrefix("28") {
            let sent = credential.map { "the password from \($0.origin)" } ?? "no password (set PGPASSWORD or a line in the password file, PGPASSFILE or ~/.pgpass)"
            return DatabaseError(
                .authenticationFailed,
                "\(target) refused the user \(url.username) with \(sent): \(error.serverInfo?[.message] ?? "SQLSTATE \(sqlState)")",
                cause: error
            )
        }
        if let error = error as? PSQLError, error.code == .authMechanismRequiresPassword {
            return DatabaseError(
                .authenticationFailed,
                "\(target) asks the user \(url.username) for a password: set PGPASSWORD or a line in the password file (PGPASSFILE or ~/.pgpass)",
                cause: error
            )
        }
        return DatabaseError(.unavailable, "could not connect to \(target): \(String(reflecting: underlying))", cause: error)
    }
}
