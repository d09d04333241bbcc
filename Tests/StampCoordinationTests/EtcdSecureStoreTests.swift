import StampCoordination
import StampCoordinationEtcd
import StampCore
import StampDatabaseTesting
import Testing

/// The etcd store over TLS as an authenticated user, on the member scripts/test starts for it.
@Suite(
    "etcd coordination store over TLS with a user",
    .enabled(if: TestSecureEtcd.environment != nil, "STAMP_TEST_ETCD_SECURE_ENDPOINT, STAMP_TEST_ETCD_CA or STAMP_TEST_ETCD_SECURE_PASSWORD is not set; scripts/test sets them")
)
struct EtcdSecureStoreTests {
    static let ttl = Duration.seconds(10)

    @Test("with the CA and the password from the environment, the store claims, renews and releases")
    func worksOverTLSAsTheUser() async throws {
        let member = try #require(TestSecureEtcd.environment)
        let settings = try EtcdConnectionSettings(location: try member.freshLocation(), passwords: EtcdPasswordSource(environment: ["STAMP_ETCD_PASSWORD": member.password]))
        try await running([EtcdCoordinationStore(settings: settings, logger: silentLogger)], preparing: .default) { stores in
            let store = stores[0]
            let held = try #require(try await store.claim(owner: "owner", address: "http://10.0.0.5:7400", ttl: Self.ttl, nodeCount: 2))
            let renewed = try #require(try await store.renew(node: held.node, owner: "owner", ttl: Self.ttl, reservedUntilUnixMilliseconds: 42))
            #expect(renewed.reservedUntilUnixMilliseconds == 42)
            #expect(try await store.liveLeases() == [renewed])
            try await store.release(node: held.node, owner: "owner")
            let leases = try await store.liveLeases()
            #expect(leases.isEmpty)
        }
    }

    @Test("a wrong password is refused at prepare, naming where it came from and never showing it")
    func wrongPassword() async throws {
        let member = try #require(TestSecureEtcd.environment)
        let settings = try EtcdConnectionSettings(location: try member.freshLocation(), passwords: EtcdPasswordSource(environment: ["STAMP_ETCD_PASSWORD": "MARKER-wrong-7f3a"]))
        try await running([EtcdCoordinationStore(settings: settings, logger: silentLogger)], preparing: nil) { stores in
            let error = await #expect(throws: CoordinationError.self) {
                try await stores[0].prepare(layout: .default)
            }
            #expect(error?.code == .unavailable)
            #expect(error?.message.contains("refused the user stamp with the password from STAMP_ETCD_PASSWORD") == true)
            #expect(error.map { "\($0)" }?.contains("MARKER") == false)
        }
    }

    @Test("a member whose certificate another authority signed is refused, saying so")
    func untrustedCertificate() async throws {
        let member = try #require(TestSecureEtcd.environment)
        try await TestPostgresServer.withOtherCertificateAuthority { otherAuthority in
            let settings = try EtcdConnectionSettings(
                location: try member.freshLocation(certificateAuthority: otherAuthority),
                passwords: EtcdPasswordSource(environment: ["STAMP_ETCD_PASSWORD": member.password])
            )
            try await running([EtcdCoordinationStore(settings: settings, logger: silentLogger)], preparing: nil) { stores in
                let error = await #expect(throws: CoordinationError.self) {
                    try await stores[0].prepare(layout: .default)
                }
                #expect(error?.code == .unavailable)
                #expect(error?.message.contains("certificate is not signed by a trusted authority") == true, "\(error.map { "\($0)" } ?? "")")
            }
        }
    }
}
