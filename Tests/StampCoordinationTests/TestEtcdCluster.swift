#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import StampCoordinationEtcd

/// The etcd cluster that `STAMP_TEST_ETCD_ENDPOINTS` names (`HOST:PORT,HOST:PORT,...`), which
/// scripts/test starts: three members on loopback.
struct TestEtcdCluster: Sendable {
    /// The members' client addresses, as an etcd location writes them.
    let endpoints: String

    /// The cluster of this run, `nil` when the variable is not set.
    static let environment: TestEtcdCluster? = ProcessInfo.processInfo.environment["STAMP_TEST_ETCD_ENDPOINTS"]
        .flatMap { $0.isEmpty ? nil : TestEtcdCluster(endpoints: $0) }

    /// A location under a prefix no other test uses, so that each test starts from empty keys.
    func freshLocation() throws -> EtcdLocation {
        try EtcdLocation(parsing: "etcd://\(endpoints)/stamp-tests/\(UUID().uuidString.lowercased())")
    }
}

/// The etcd member with TLS and authentication that scripts/test starts: its endpoint
/// (`STAMP_TEST_ETCD_SECURE_ENDPOINT`), the certificate authority that signed its certificate
/// (`STAMP_TEST_ETCD_CA`), and the password (`STAMP_TEST_ETCD_SECURE_PASSWORD`) of the user `stamp`,
/// who may use the keys under `stamp-secure/` only.
struct TestSecureEtcd: Sendable {
    let endpoint: String
    let certificateAuthority: String
    let password: String

    /// The member of this run, `nil` when the variables are not all set.
    static let environment: TestSecureEtcd? = {
        let variables = ProcessInfo.processInfo.environment
        guard let endpoint = variables["STAMP_TEST_ETCD_SECURE_ENDPOINT"], let authority = variables["STAMP_TEST_ETCD_CA"],
              let password = variables["STAMP_TEST_ETCD_SECURE_PASSWORD"]
        else { return nil }
        return TestSecureEtcd(endpoint: endpoint, certificateAuthority: authority, password: password)
    }()

    /// A location as the user `stamp`, over TLS that trusts `certificateAuthority`, under a fresh prefix.
    func freshLocation(certificateAuthority: String? = nil) throws -> EtcdLocation {
        try EtcdLocation(parsing: "etcds://stamp@\(endpoint)/stamp-secure/\(UUID().uuidString.lowercased())?cacert=\(certificateAuthority ?? self.certificateAuthority)")
    }
}
