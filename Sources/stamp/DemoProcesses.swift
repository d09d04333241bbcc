import ArgumentParser
import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import ServiceLifecycle
import StampAudit
import StampLoadBalancer
import StampShardMap
import Synchronization

/// The processes the demo started, and how to stop them all.
final class ChildProcesses: Sendable {
    private let state = Mutex<(children: [ChildProcess], afterwards: [@Sendable () async -> Void])>(([], []))

    /// This program, which the demo starts again for each node and server.
    static var stampExecutable: String {
        (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? Bundle.main.executablePath ?? CommandLine.arguments[0]
    }

    /// Starts a process whose output goes to `log`; it is stopped by ``stopAll()``.
    func start(name: String, executable: String, arguments: [String], environment: [String: String] = [:], log: URL, directory: URL) throws -> ChildProcess {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        process.currentDirectoryURL = directory
        _ = FileManager.default.createFile(atPath: log.path, contents: nil)
        let handle = try FileHandle(forWritingTo: log)
        process.standardOutput = handle
        process.standardError = handle
        process.standardInput = FileHandle.nullDevice
        let child = ChildProcess(name: name, process: process, log: log)
        // Started under the lock, so that a stop that begins meanwhile cannot miss it.
        try state.withLock { state in
            try process.run()
            state.children.append(child)
        }
        try? handle.close()
        return child
    }

    /// Adds a step to run after every process has ended, such as stopping a database cluster.
    func afterwards(_ step: @escaping @Sendable () async -> Void) {
        state.withLock { $0.afterwards.append(step) }
    }

    /// Sends SIGTERM to every process, waits up to 10 s for them to end, then SIGKILLs the rest;
    /// then runs the steps added with ``afterwards(_:)``, last first.
    func stopAll() async {
        let (children, steps) = state.withLock { state in
            defer { state = ([], []) }
            return state
        }
        for child in children where child.isRunning {
            kill(child.process.processIdentifier, SIGTERM)
        }
        let clock = ContinuousClock()
        let deadline = clock.now.advanced(by: .seconds(10))
        // Polling: a process's end gives no async signal here; 50 ms is short next to a server's shutdown.
        while children.contains(where: \.isRunning), clock.now < deadline {
            do {
                try await Task.sleep(for: .milliseconds(50))
            } catch {
                break
            }
        }
        for child in children where child.isRunning {
            printError("\(child.name) did not stop within 10 s of SIGTERM; killing it")
            kill(child.process.processIdentifier, SIGKILL)
            child.process.waitUntilExit()
        }
        for step in steps.reversed() {
            await step()
        }
    }
}

/// One started process and its log.
final class ChildProcess: @unchecked Sendable {
    let name: String
    /// `Process` is safe to query from any thread once it runs.
    let process: Process
    let log: URL

    init(name: String, process: Process, log: URL) {
        self.name = name
        self.process = process
        self.log = log
    }

    var isRunning: Bool { process.isRunning }

    var exitStatus: Int32 { process.isRunning ? 0 : process.terminationStatus }

    /// The last lines of the log.
    func logTail(lines: Int = 30) -> String {
        let text = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
        return text.split(separator: "\n", omittingEmptySubsequences: false).suffix(lines).joined(separator: "\n")
    }
}

/// Short-lived tools: initdb, pg_ctl, psql.
///
/// They are started with `posix_spawn`, not `Process`: Foundation learns that a process ended when
/// a socket the process inherits closes, and `pg_ctl start` leaves the server running with it open.
enum ToolRun {
    /// Runs `executable` to its end with its output appended to `log`; fails with the log's end unless it exits with 0.
    static func run(_ executable: String, _ arguments: [String], log: URL, directory: URL? = nil) async throws {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, log.path, O_WRONLY | O_CREAT | O_APPEND, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        // The demo ignores SIGINT and SIGTERM (it handles them through a dispatch source); tools get the defaults back.
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var defaults = sigset_t()
        sigemptyset(&defaults)
        sigaddset(&defaults, SIGINT)
        sigaddset(&defaults, SIGTERM)
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGDEF))
        // `env -C` starts the tool in `directory` (posix_spawn's own chdir action is not visible from Swift).
        let command = directory.map { ["/usr/bin/env", "-C", $0.path, executable] } ?? [executable]
        let argv = (command + arguments).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var pid: pid_t = 0
        let spawned = posix_spawn(&pid, command[0], &actions, &attributes, argv, environ)
        guard spawned == 0 else { throw DemoError("cannot run \(executable): \(String(cString: strerror(spawned)))") }
        let child = pid
        let status: Int32 = await withCheckedContinuation { finished in
            // waitpid blocks, so it waits on a thread of its own rather than on one of the concurrency pool.
            Thread.detachNewThread {
                var status: Int32 = 0
                while waitpid(child, &status, 0) == -1, errno == EINTR {}
                finished.resume(returning: status)
            }
        }
        // Exited normally with 0: no terminating signal in the low 7 bits, exit code 0 in the next 8.
        guard status & 0x7f == 0, (status >> 8) & 0xff == 0 else {
            let tail = ((try? String(contentsOf: log, encoding: .utf8)) ?? "").split(separator: "\n").suffix(20).joined(separator: "\n")
            throw DemoError("\(URL(fileURLWithPath: executable).lastPathComponent) failed (wait status \(status)); the end of \(log.path):\n\(tail)")
        }
    }
}

/// PostgreSQL's command-line tools, as `scripts/test` finds them.
enum PostgresTools {
    /// The directory of `initdb` on PATH, else the newest /usr/lib/postgresql/*/bin.
    static func directory() -> String? {
        if let initdb = ExecutableSearch.find("initdb", extraDirectories: []) {
            return URL(fileURLWithPath: initdb).resolvingSymlinksInPath().deletingLastPathComponent().path
        }
        let versions = (try? FileManager.default.contentsOfDirectory(atPath: "/usr/lib/postgresql")) ?? []
        return versions.sorted { $0.compare($1, options: .numeric) == .orderedDescending }
            .map { "/usr/lib/postgresql/\($0)/bin" }
            .first { FileManager.default.isExecutableFile(atPath: "\($0)/initdb") }
    }

    /// A tool from that directory, else from PATH.
    static func tool(_ name: String) throws -> String {
        if let directory = directory(), FileManager.default.isExecutableFile(atPath: "\(directory)/\(name)") {
            return "\(directory)/\(name)"
        }
        if let found = ExecutableSearch.find(name, extraDirectories: []) { return found }
        throw DemoError("PostgreSQL's \(name) was not found on PATH or in /usr/lib/postgresql/*/bin; install PostgreSQL")
    }

    /// `server` with its database replaced by `database`.
    static func url(_ server: String, database: String) throws -> String {
        guard var components = URLComponents(string: server) else { throw DemoError("the PostgreSQL URL is not a URL") }
        components.path = "/\(database)"
        guard let url = components.string else { throw DemoError("the PostgreSQL URL is not a URL") }
        return url
    }
}

/// A PostgreSQL cluster in the demo's folder on a free loopback port, deleted with the folder.
struct ThrowawayCluster: Sendable {
    let url: String

    /// Creates and starts the cluster; it is stopped after the demo's processes.
    static func start(in folder: URL, processes: ChildProcesses) async throws -> ThrowawayCluster {
        let initdb = try PostgresTools.tool("initdb")
        let pgCtl = try PostgresTools.tool("pg_ctl")
        let directory = folder.appendingPathComponent("postgres")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let log = directory.appendingPathComponent("setup.log")
        let prefix = try ownerPrefix(handingOver: directory)
        @Sendable func asOwner(_ tool: String, _ arguments: [String]) async throws {
            let command = prefix + [tool] + arguments
            try await ToolRun.run(command[0], Array(command.dropFirst()), log: log, directory: directory)
        }
        let data = directory.appendingPathComponent("data").path
        let port = try FreePort.next()
        try await asOwner(initdb, ["-D", data, "--auth=trust", "-U", "postgres", "--no-sync", "--encoding=UTF8", "--locale=C"])
        processes.afterwards {
            try? await asOwner(pgCtl, ["-D", data, "stop", "-m", "immediate"])
        }
        // Durability is pointless for a cluster that is deleted afterwards.
        try await asOwner(pgCtl, [
            "-D", data, "-l", directory.appendingPathComponent("postgres.log").path, "-w", "-t", "60",
            "-o", "-k \(directory.path) -h 127.0.0.1 -p \(port) -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300",
            "start",
        ])
        return ThrowawayCluster(url: "postgres://postgres@127.0.0.1:\(port)/postgres")
    }

    /// What runs a command as the cluster's owner. PostgreSQL refuses to run as root, so root hands
    /// the cluster's folder to the postgres user and runs the tools through runuser.
    private static func ownerPrefix(handingOver directory: URL) throws -> [String] {
        guard geteuid() == 0 else { return [] }
        guard let owner = getpwnam("postgres") else { throw DemoError("running as root, the PostgreSQL cluster needs a user named postgres") }
        guard let runuser = ExecutableSearch.find("runuser", extraDirectories: ["/usr/sbin", "/sbin"]) else { throw DemoError("running as root, starting PostgreSQL needs runuser") }
        guard chown(directory.path, owner.pointee.pw_uid, owner.pointee.pw_gid) == 0 else { throw DemoError("cannot hand \(directory.path) to the postgres user") }
        return [runuser, "-u", "postgres", "--"]
    }
}

/// HAProxy or nginx, when installed, in front of the audit servers.
struct ExternalBalancer: Sendable {
    let name: String
    let executable: String

    /// HAProxy, else nginx, from PATH or the system binary folders; `nil` when neither is installed.
    static func find() -> ExternalBalancer? {
        for name in ["haproxy", "nginx"] {
            if let executable = ExecutableSearch.find(name, extraDirectories: ["/usr/sbin", "/sbin"]) {
                return ExternalBalancer(name: name, executable: executable)
            }
        }
        return nil
    }

    /// Writes its configuration in `folder` and starts it in the foreground, round-robin over `backends`.
    func start(port: Int, backends: [Int], folder: URL, logs: URL, processes: ChildProcesses) throws -> ChildProcess {
        let directory = folder.appendingPathComponent(name)
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let configuration = directory.appendingPathComponent("\(name).conf")
        let arguments: [String]
        if name == "haproxy" {
            try """
            global
                maxconn 20000
            defaults
                mode http
                option http-keep-alive
                timeout connect 2s
                timeout client 60s
                timeout server 60s
            frontend audit
                bind 127.0.0.1:\(port)
                default_backend audit_servers
            backend audit_servers
                balance roundrobin
            \(backends.enumerated().map { "    server audit-\($0.offset) 127.0.0.1:\($0.element)" }.joined(separator: "\n"))

            """.write(to: configuration, atomically: true, encoding: .utf8)
            arguments = ["-db", "-f", configuration.path]
        } else {
            let path = directory.path
            try """
            daemon off;
            pid \(path)/nginx.pid;
            error_log \(path)/error.log warn;
            worker_processes 2;
            events { worker_connections 8192; }
            http {
                access_log off;
                client_body_temp_path \(path)/body;
                proxy_temp_path \(path)/proxy;
                fastcgi_temp_path \(path)/fastcgi;
                uwsgi_temp_path \(path)/uwsgi;
                scgi_temp_path \(path)/scgi;
                upstream audit_servers {
            \(backends.map { "        server 127.0.0.1:\($0);" }.joined(separator: "\n"))
                    keepalive 256;
                }
                server {
                    listen 127.0.0.1:\(port);
                    location / {
                        proxy_pass http://audit_servers;
                        proxy_http_version 1.1;
                        proxy_set_header Connection "";
                        proxy_set_header Host $host;
                    }
                }
            }

            """.write(to: configuration, atomically: true, encoding: .utf8)
            arguments = ["-p", "\(path)/", "-e", "\(path)/error.log", "-c", configuration.path]
        }
        return try processes.start(name: name, executable: executable, arguments: arguments, log: logs.appendingPathComponent("\(name).log"), directory: directory)
    }
}

/// Finds programs on PATH.
enum ExecutableSearch {
    static func find(_ name: String, extraDirectories: [String]) -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
        let directories = path.split(separator: ":").map(String.init) + extraDirectories
        return directories.map { "\($0)/\(name)" }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }
}

/// The demo's temporary folder.
enum DemoFolder {
    /// A new folder under the temporary directory, which other users may pass through (the
    /// PostgreSQL cluster runs as the postgres user) but not list.
    static func make() throws -> URL {
        var template = Array(FileManager.default.temporaryDirectory.appendingPathComponent("stamp-demo-XXXXXX").path.utf8CString)
        let made = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) != nil }
        guard made else { throw DemoError("mkdtemp failed: \(String(cString: strerror(errno)))") }
        let path = String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        chmod(path, 0o711)
        return URL(fileURLWithPath: path)
    }
}

/// Free loopback ports, found by binding port 0.
enum FreePort {
    static func next() throws -> Int {
        let socket = Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard socket >= 0 else { throw DemoError("cannot open a socket to find a free port") }
        defer { close(socket) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(socket, $0, length) == 0 && getsockname(socket, $0, &length) == 0 }
        }
        guard bound else { throw DemoError("no free loopback port") }
        return Int(UInt16(bigEndian: address.sin_port))
    }
}
