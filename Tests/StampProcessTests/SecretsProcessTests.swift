import Foundation
import StampLoadTesting
import Testing

/// The real binary never takes a database password from its command line, and reaches PostgreSQL over TLS.
@Suite("Secrets and TLS of the stamp binary", .serialized)
struct SecretsProcessTests {
    static let postgresURL = ProcessInfo.processInfo.environment["STAMP_TEST_POSTGRES_PROCESS_URL"]
    static let certificateAuthority = ProcessInfo.processInfo.environment["STAMP_TEST_POSTGRES_CA"]

    /// A folder of its own for one test, deleted by the caller.
    static func directory() throws -> URL {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("stamp-process-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        return directory
    }

    @Test("stamp serve refuses a --store URL with a password, naming PGPASSWORD and PGPASSFILE, and never prints the password")
    func passwordInStoreIsRefused() async throws {
        let directory = try Self.directory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let node = try StampProcess(serve: ["--store", "postgres://stamp:MARKER-7f3a@127.0.0.1:5432/stamp"], directory: directory)
        let termination = await node.process.waitForExit()
        await node.output.waitForEnd()
        let output = node.output.contents
        #expect(termination != .exited(0), "\(output)")
        #expect(output.contains("must not hold a password"), "\(output)")
        #expect(output.contains("PGPASSWORD") && output.contains("PGPASSFILE"), "\(output)")
        #expect(!output.contains("MARKER"), "\(output)")
    }

    @Test(
        "stamp serve on a PostgreSQL store over verify-full issues IDs",
        .enabled(if: postgresURL != nil && certificateAuthority != nil, "set STAMP_TEST_POSTGRES_PROCESS_URL and STAMP_TEST_POSTGRES_CA (scripts/test does)")
    )
    func verifiedStore() async throws {
        let directory = try Self.directory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let store = "\(Self.postgresURL!)?sslmode=verify-full&sslrootcert=\(Self.certificateAuthority!)"
        let node = try StampProcess(serve: ["--store", store], directory: directory)
        defer { node.stop(signal: SIGKILL) }
        try await node.waitUntilReady()
        let (data, status) = try await HTTP.get("\(node.baseURL)/v1/ids?count=3")
        #expect(status == 200, "\(String(decoding: data, as: UTF8.self))")
    }

    /// Runs `stamp ARGUMENTS` in `directory` with `environment` added, and waits for it to end.
    static func run(_ arguments: [String], environment: [String: String], directory: URL) async throws -> (ChildProcess.Termination, String) {
        let process = try ChildProcess.start(ChildProcess.Launch(
            name: "stamp \(arguments.first ?? "")", executable: StampProcess.binary.path, arguments: arguments, environment: environment, directory: directory.path
        ))
        let termination = await process.waitForExit()
        await process.output.waitForEnd()
        return (termination, process.output.contents)
    }

    @Test("stamp audit rotate-key takes both master keys from the environment only, and may run again")
    func rotateKey() async throws {
        let directory = try Self.directory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let map = directory.appendingPathComponent("shard-map.json").path
        try #"{"version": 1, "slots": 4, "shards": [{"id": 0, "database": "sqlite:shard-0.sqlite", "state": "active"}], "assignments": [{"slots": "0-3", "shard": 0}]}"#.write(toFile: map, atomically: true, encoding: .utf8)
        let (_, old) = try await Self.run(["audit", "key"], environment: [:], directory: directory)
        let (_, new) = try await Self.run(["audit", "key"], environment: [:], directory: directory)
        let keys = ["STAMP_AUDIT_OLD_DATA_KEY": old.trimmingCharacters(in: .whitespacesAndNewlines), "STAMP_AUDIT_NEW_DATA_KEY": new.trimmingCharacters(in: .whitespacesAndNewlines)]

        let (refused, refusal) = try await Self.run(["audit", "rotate-key", "--shard-map", map], environment: ["STAMP_AUDIT_OLD_DATA_KEY": keys["STAMP_AUDIT_OLD_DATA_KEY"]!], directory: directory)
        #expect(refused != .exited(0))
        #expect(refusal.contains("STAMP_AUDIT_NEW_DATA_KEY"), "\(refusal)")
        for _ in 0..<2 {
            let (termination, output) = try await Self.run(["audit", "rotate-key", "--shard-map", map], environment: keys, directory: directory)
            #expect(termination == .exited(0), "\(output)")
            // The shard keeps the old master key, wrapped by the new one, for the rows sealed with it.
            #expect(output.contains("shard 0: 0 of 1 data keys re-wrapped"), "\(output)")
        }
    }
}
