import Foundation
import StampDatabase

/// PostgreSQL's command-line tools, found as `scripts/test` finds them.
public enum PostgresTools {
    /// The directory of `initdb` on PATH, else the newest /usr/lib/postgresql/*/bin.
    static func directory() -> String? {
        if let initdb = ExecutableSearch.find("initdb") {
            return URL(fileURLWithPath: initdb).resolvingSymlinksInPath().deletingLastPathComponent().path
        }
        let versions = (try? FileManager.default.contentsOfDirectory(atPath: "/usr/lib/postgresql")) ?? []
        return versions.sorted { $0.compare($1, options: .numeric) == .orderedDescending }
            .map { "/usr/lib/postgresql/\($0)/bin" }
            .first { FileManager.default.isExecutableFile(atPath: "\($0)/initdb") }
    }

    /// A tool from that directory, else from PATH.
    public static func tool(_ name: String) throws(LoadTestingError) -> String {
        if let directory = directory(), FileManager.default.isExecutableFile(atPath: "\(directory)/\(name)") {
            return "\(directory)/\(name)"
        }
        if let found = ExecutableSearch.find(name) { return found }
        throw LoadTestingError(.toolMissing, "PostgreSQL's \(name) was not found on PATH or in /usr/lib/postgresql/*/bin; install PostgreSQL")
    }

    /// `server` with its database replaced by `database`.
    public static func url(_ server: String, database: String) throws(LoadTestingError) -> String {
        do {
            var url = try PostgresURL(parsing: server)
            url.database = database
            return url.text
        } catch {
            throw LoadTestingError(.setupFailed, "the PostgreSQL URL: \(error.message)", cause: error)
        }
    }
}

/// A PostgreSQL cluster in a folder of its own on a loopback port, for one run; deleted with the folder.
public struct ThrowawayCluster: Sendable {
    /// The `postgres` database of the cluster's superuser `postgres`.
    public let url: String

    /// How many ports are tried before giving up, when another process takes the chosen one first.
    static let portAttempts = 5

    /// Creates and starts the cluster in `folder/postgres`; the supervisor stops it after its processes.
    ///
    /// PostgreSQL needs its port on its command line and cannot take over a listening socket, so a
    /// port is chosen by binding port 0 and closing the socket, and when another process takes the
    /// port before PostgreSQL binds it, the start is tried again on a newly chosen port.
    public static func start(in folder: URL, supervisor: ProcessSupervisor) async throws(LoadTestingError) -> ThrowawayCluster {
        let initdb = try PostgresTools.tool("initdb")
        let pgCtl = try PostgresTools.tool("pg_ctl")
        let directory = folder.appendingPathComponent("postgres")
        do {
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        } catch {
            throw LoadTestingError(.setupFailed, "cannot create the PostgreSQL folder", cause: error)
        }
        let setupLog = directory.appendingPathComponent("setup.log").path
        let serverLog = directory.appendingPathComponent("postgres.log").path
        let prefix = try ownerPrefix(handingOver: directory)
        @Sendable func asOwner(_ tool: String, _ arguments: [String]) async throws(LoadTestingError) {
            let command = prefix + [tool] + arguments
            try await ChildProcess.run(ChildProcess.Launch(name: URL(fileURLWithPath: tool).lastPathComponent, executable: command[0], arguments: Array(command.dropFirst()), directory: directory.path, log: setupLog))
        }
        let data = directory.appendingPathComponent("data").path
        try await asOwner(initdb, ["-D", data, "--auth=trust", "-U", "postgres", "--no-sync", "--encoding=UTF8", "--locale=C"])
        supervisor.afterwards {
            try? await asOwner(pgCtl, ["-D", data, "stop", "-m", "immediate"])
        }
        var attempt = 1
        while true {
            let listener = try LoopbackListener()
            let port = listener.port
            listener.close()
            let logged = (try? FileManager.default.attributesOfItem(atPath: serverLog)[.size] as? Int) ?? 0
            do {
                // Durability is pointless for a cluster that is deleted afterwards.
                try await asOwner(pgCtl, [
                    "-D", data, "-l", serverLog, "-w", "-t", "60",
                    "-o", "-k \(directory.path) -h 127.0.0.1 -p \(port) -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300",
                    "start",
                ])
                return ThrowawayCluster(url: PostgresURL(username: "postgres", host: "127.0.0.1", port: port, database: "postgres").text)
            } catch {
                let serverOutput = FileManager.default.contents(atPath: serverLog).map { String(decoding: $0.dropFirst(logged), as: UTF8.self) } ?? ""
                guard attempt < portAttempts, serverOutput.contains("Address already in use") else { throw error }
                attempt += 1
            }
        }
    }

    /// What runs a command as the cluster's owner. PostgreSQL refuses to run as root, so root hands
    /// the cluster's folder to the postgres user and runs the tools through runuser.
    private static func ownerPrefix(handingOver directory: URL) throws(LoadTestingError) -> [String] {
        guard geteuid() == 0 else { return [] }
        guard let owner = getpwnam("postgres") else { throw LoadTestingError(.toolMissing, "running as root, the PostgreSQL cluster needs a user named postgres") }
        guard let runuser = ExecutableSearch.find("runuser", extraDirectories: ExecutableSearch.systemDirectories) else {
            throw LoadTestingError(.toolMissing, "running as root, starting PostgreSQL needs runuser")
        }
        guard chown(directory.path, owner.pointee.pw_uid, owner.pointee.pw_gid) == 0 else {
            throw LoadTestingError(.setupFailed, "cannot hand the PostgreSQL folder to the postgres user")
        }
        return [runuser, "-u", "postgres", "--"]
    }
}
