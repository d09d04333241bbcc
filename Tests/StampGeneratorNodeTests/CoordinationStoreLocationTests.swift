import StampCoordination
import StampGeneratorNode
import Testing

/// `--store`: which reader each location goes to; each reader's own rules are its own tests'.
@Suite("Coordination store locations")
struct CoordinationStoreLocationTests {
    @Test("sqlite: and postgres:// locations are database locations, etcd:// and etcds:// ones etcd locations")
    func readsEachKind() throws {
        let file = try CoordinationStoreLocation(parsing: "sqlite:/var/lib/stamp/coordination.sqlite")
        #expect(file == .database(.sqlite(path: "/var/lib/stamp/coordination.sqlite")))
        #expect(file.text == "sqlite:/var/lib/stamp/coordination.sqlite")
        let server = try CoordinationStoreLocation(parsing: "postgres://stamp@db.internal/stamp")
        #expect(server == .database(.postgres(url: "postgres://stamp@db.internal/stamp")))

        for (text, written) in [
            ("etcd://10.0.0.1:2379,10.0.0.2:2379/stamp", "etcd://10.0.0.1:2379,10.0.0.2:2379/stamp"),
            ("etcds://stamp@etcd.internal?cacert=/etc/stamp/ca.pem", "etcds://stamp@etcd.internal:2379/stamp?cacert=/etc/stamp/ca.pem"),
        ] {
            let cluster = try CoordinationStoreLocation(parsing: text)
            guard case .etcd = cluster else {
                Issue.record("\(text) is not read as an etcd location")
                continue
            }
            #expect(cluster.text == written)
        }
    }

    @Test(
        "other text is an invalid location, named by every form, and never repeated",
        arguments: ["MARKER-7f3a.sqlite", "mysql://u:MARKER-7f3a@h/d", "etcd://u:MARKER-7f3a@h:2379", "etcd://MARKER-7f3a:0"]
    )
    func refusesOtherText(text: String) {
        let error = #expect(throws: CoordinationError.self) {
            try CoordinationStoreLocation(parsing: text)
        }
        #expect(error?.code == .invalidLocation)
        #expect(error?.message.contains("etcd://") == true)
        #expect(error?.message.contains("MARKER") == false)
    }
}
