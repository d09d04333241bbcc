import AsyncHTTPClient
import Foundation

/// A three-member etcd cluster on loopback ports in a folder of its own, for one run; deleted with the folder.
public struct ThrowawayEtcdCluster: Sendable {
    /// The members' client addresses, `127.0.0.1:PORT`, in member order.
    public let endpoints: [String]

    /// How many members the cluster has: the smallest that survives losing one.
    public static let memberCount = 3

    /// The coordination store location of the cluster, under `prefix`.
    public func storeLocation(prefix: String = "stamp") -> String {
        "etcd://\(endpoints.joined(separator: ","))/\(prefix)"
    }

    /// Starts the members in `folder/etcd` with the installed `etcd` and waits until each one is
    /// healthy (the cluster has a leader); the supervisor stops them with the run's other processes.
    ///
    /// A heartbeat of 200 ms (etcd's default: 100) and an election timeout of 2 s keep the leader in
    /// place while the demo loads the machine; etcd's shortest lease is then 3 s, well under the
    /// nodes' default TTL. etcd needs its ports on its command line, so each is chosen by binding port 0 and closing the
    /// socket; a member that fails to start (another process took its port first) fails the start.
    public static func start(in folder: URL, supervisor: ProcessSupervisor, http: HTTPClient) async throws -> ThrowawayEtcdCluster {
        guard let etcd = ExecutableSearch.find("etcd", extraDirectories: ExecutableSearch.systemDirectories) else {
            throw LoadTestingError(.toolMissing, "etcd was not found on PATH, /usr/sbin or /sbin; install it (Debian: apt-get install etcd-server)")
        }
        let directory = folder.appendingPathComponent("etcd")
        do {
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        } catch {
            throw LoadTestingError(.setupFailed, "cannot create the etcd folder", cause: error)
        }
        var ports: [(client: Int, peer: Int)] = []
        for _ in 0..<memberCount {
            let client = try LoopbackListener()
            let peer = try LoopbackListener()
            ports.append((client.port, peer.port))
            client.close()
            peer.close()
        }
        let names = (0..<memberCount).map { "member-\($0)" }
        let initialCluster = zip(names, ports).map { "\($0)=http://127.0.0.1:\($1.peer)" }.joined(separator: ",")
        let token = "stamp-demo-\(UUID().uuidString)"
        let members = try zip(names, ports).map { name, port in
            try supervisor.start(ChildProcess.Launch(
                name: "etcd-\(name)",
                executable: etcd,
                arguments: [
                    "--name", name,
                    "--data-dir", directory.appendingPathComponent(name).path,
                    "--listen-client-urls", "http://127.0.0.1:\(port.client)",
                    "--advertise-client-urls", "http://127.0.0.1:\(port.client)",
                    "--listen-peer-urls", "http://127.0.0.1:\(port.peer)",
                    "--initial-advertise-peer-urls", "http://127.0.0.1:\(port.peer)",
                    "--initial-cluster", initialCluster,
                    "--initial-cluster-state", "new",
                    "--initial-cluster-token", token,
                    "--logger", "zap",
                    "--log-level", "warn",
                    "--heartbeat-interval", "200",
                    "--election-timeout", "2000",
                ],
                directory: directory.path,
                log: directory.appendingPathComponent("\(name).log").path
            ))
        }
        for (member, port) in zip(members, ports) {
            try await Readiness.waitUntilReady(member, url: "http://127.0.0.1:\(port.client)/health", http: http)
        }
        return ThrowawayEtcdCluster(endpoints: ports.map { "127.0.0.1:\($0.client)" })
    }
}
