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
