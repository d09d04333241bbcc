import StampCoordination
@testable import StampCoordinationEtcd
import Testing

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

@Suite("etcd store locations and credentials")
struct EtcdLocationTests {
    @Test("endpoints, ports, prefix, user and TLS are read, and written back in full")
    func readsEveryPart() throws {
        let plain = try EtcdLocation(parsing: "etcd://10.0.0.1:2379,10.0.0.2,[fd00::3]:12379")
        #expect(plain.endpoints == [
            EtcdLocation.Endpoint(host: "10.0.0.1", port: 2379),
            EtcdLocation.Endpoint(host: "10.0.0.2", port: EtcdLocation.defaultPort),
            EtcdLocation.Endpoint(host: "fd00::3", port: 12379),
        ])
        #expect(plain.prefix == EtcdLocation.defaultPrefix)
        #expect(plain.username == nil)
        #expect(!plain.usesTLS)
        #expect(plain.description == "etcd://10.0.0.1:2379,10.0.0.2:2379,[fd00::3]:12379/stamp")

        let secured = try EtcdLocation(parsing: "etcds://stamp-node@etcd-a.internal:2379,etcd-b.internal:2379/clusters/eu-1/?cacert=/etc/stamp/etcd%20ca.pem")
        #expect(secured.endpoints.map(\.host) == ["etcd-a.internal", "etcd-b.internal"])
        #expect(secured.prefix == "clusters/eu-1")
        #expect(secured.username == "stamp-node")
        #expect(secured.usesTLS)
        #expect(secured.caFile == "/etc/stamp/etcd ca.pem")
        #expect(try EtcdLocation(parsing: secured.description) == secured)
        #expect(try EtcdLocation(parsing: "etcd://127.0.0.1:2379/").prefix == EtcdLocation.defaultPrefix)
    }

    @Test(
        "malformed locations are invalid, and the refusal never repeats the text",
        arguments: [
            "etcd:/MARKER-7f3a", "http://MARKER-7f3a:2379", "etcd://", "etcd://MARKER-7f3a:0", "etcd://MARKER-7f3a:99999",
            "etcd://MARKER-7f3a:2379,,h:2379", "etcd://MARKER-7f3a:port", "etcd://[::1:2379", "etcd://h:2379/MARKER-7f3a//x",
            "etcd://h:2379/MARKER 7f3a", "etcd://h:2379?cacert=/MARKER-7f3a.pem", "etcds://h:2379?MARKER-7f3a=1", "etcd://h:2379#MARKER-7f3a",
            "etcd://@h:2379",
        ]
    )
    func refusesMalformed(text: String) {
        let error = #expect(throws: CoordinationError.self) {
            try EtcdLocation(parsing: text)
        }
        #expect(error?.code == .invalidLocation)
        #expect(error?.message.contains("etcd://[USER@]HOST[:PORT]") == true)
        #expect(error?.message.contains("MARKER") == false)
    }

    @Test("a password in the location is refused, naming where it goes instead, without the password")
    func refusesPasswords() {
        let error = #expect(throws: CoordinationError.self) {
            try EtcdLocation(parsing: "etcd://stamp:MARKER-7f3a@h:2379")
        }
        #expect(error?.code == .invalidLocation)
        #expect(error?.message.contains("STAMP_ETCD_PASSWORD") == true)
        #expect(error?.message.contains("MARKER") == false)
    }

    @Test("a user's password comes from STAMP_ETCD_PASSWORD, else from the file STAMP_ETCD_PASSWORD_FILE names")
    func passwordSources() throws {
        let location = try EtcdLocation(parsing: "etcd://stamp@127.0.0.1:2379")
        let fromVariable = try EtcdPasswordSource(environment: ["STAMP_ETCD_PASSWORD": "from-variable", "STAMP_ETCD_PASSWORD_FILE": "/nonexistent"]).password()
        #expect(fromVariable?.password == "from-variable")
        #expect(fromVariable?.origin == .environment)

        let file = FileManager.default.temporaryDirectory.appendingPathComponent("stamp-etcd-password-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: file) }
        #expect(FileManager.default.createFile(atPath: file.path, contents: Data("from-file\n".utf8), attributes: [.posixPermissions: 0o600]))
        let passwords = EtcdPasswordSource(environment: ["STAMP_ETCD_PASSWORD_FILE": file.path])
        let fromFile = try passwords.password()
        #expect(fromFile?.password == "from-file")
        #expect(fromFile?.origin == .passwordFile(path: file.path))
        _ = try EtcdConnectionSettings(location: location, passwords: passwords)

        try FileManager.default.setAttributes([.posixPermissions: 0o644], ofItemAtPath: file.path)
        let open = #expect(throws: CoordinationError.self) { try passwords.password() }
        #expect(open?.code == .invalidConfiguration)
        #expect(open?.message.contains("chmod 600") == true)
    }

    @Test("a user without a password, or a CA file that holds no certificate, is an invalid configuration")
    func unusableSettings() throws {
        let missing = #expect(throws: CoordinationError.self) {
            try EtcdConnectionSettings(location: try EtcdLocation(parsing: "etcd://stamp@127.0.0.1:2379"), passwords: EtcdPasswordSource(environment: [:]))
        }
        #expect(missing?.code == .invalidConfiguration)
        #expect(missing?.message.contains("STAMP_ETCD_PASSWORD_FILE") == true)
        // No user, no password needed.
        _ = try EtcdConnectionSettings(location: try EtcdLocation(parsing: "etcd://127.0.0.1:2379"), passwords: EtcdPasswordSource(environment: [:]))

        let file = FileManager.default.temporaryDirectory.appendingPathComponent("stamp-etcd-ca-\(UUID().uuidString).pem")
        defer { try? FileManager.default.removeItem(at: file) }
        #expect(FileManager.default.createFile(atPath: file.path, contents: Data("not a certificate".utf8)))
        let unreadable = #expect(throws: CoordinationError.self) {
            try EtcdConnectionSettings(location: try EtcdLocation(parsing: "etcds://127.0.0.1:2379?cacert=\(file.path)"), passwords: EtcdPasswordSource(environment: [:]))
        }
        #expect(unreadable?.code == .invalidConfiguration)
        #expect(unreadable?.message.contains("cacert") == true)
    }
}

@Suite("etcd store clock")
struct EtcdStoreClockTests {
    @Test("the Date header is read as Unix seconds, and anything else as none")
    func readsDateHeaders() {
        #expect(HTTPDate.unixSecond(of: "Sun, 06 Nov 1994 08:49:37 GMT") == 784_111_777)
        #expect(HTTPDate.unixSecond(of: "Wed, 02 Dec 2026 02:30:22 GMT") == 1_796_178_622)
        #expect(HTTPDate.unixSecond(of: "Thu, 29 Feb 2024 00:00:00 GMT") == 1_709_164_800)
        for text in ["", "Sunday, 06-Nov-94 08:49:37 GMT", "Sun, 06 Nov 1994 08:49:37 UTC", "Sun, 06 Foo 1994 08:49:37 GMT", "Sun, 06 Nov 1994 25:49:37 GMT"] {
            #expect(HTTPDate.unixSecond(of: text) == nil, "\(text)")
        }
    }

    @Test("the store's now is this machine's clock, moved into the member's second when it lies outside it")
    func storeNowStaysInTheMembersSecond() {
        #expect(EtcdCoordinationStore.storeNow(wall: 1_000_500, memberSecond: 1_000) == 1_000_500)
        #expect(EtcdCoordinationStore.storeNow(wall: 1_003_200, memberSecond: 1_000) == 1_000_999)
        #expect(EtcdCoordinationStore.storeNow(wall: 998_000, memberSecond: 1_000) == 1_000_000)
        #expect(EtcdCoordinationStore.storeNow(wall: 998_000, memberSecond: nil) == 998_000)
    }
}
