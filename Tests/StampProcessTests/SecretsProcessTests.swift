import Foundation
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
}
