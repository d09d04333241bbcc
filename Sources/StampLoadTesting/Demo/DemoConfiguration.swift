import Logging
import NIOCore

/// What `stamp demo` runs: the topology is fixed (3 generators, 3 audit servers, 3 shards); the
/// load, the databases and the balancer are chosen here.
public struct DemoConfiguration: Sendable {
    /// Where the coordination store and the shards live.
    public enum Databases: Sendable, Equatable {
        /// SQLite files in the run's folder.
        case sqlite
        /// A PostgreSQL cluster started for the run with initdb and pg_ctl.
        case throwawayPostgres
        /// Databases on this PostgreSQL server, whose user may create databases
        /// (`stamp_demo_coordination` and `stamp_demo_shard_0...` are dropped and created).
        case postgresServer(url: String)
    }

    /// What spreads the requests over the audit servers.
    public enum Balancing: Sendable, Equatable {
        /// HAProxy when it is installed, else the driver itself, round-robin.
        case haproxyWhenInstalled
        /// The driver, round-robin, even when HAProxy is installed.
        case driver
    }

    /// How long load is driven.
    public var duration: Duration = .seconds(10)
    /// Audit writes per second, started on a fixed schedule (default 1,000: a quarter of what the
    /// demo sustains on 2 cores, release build, with p99 under 30 ms on an idle machine).
    public var rate = 1000
    /// Single-ID requests per second straight at the generator nodes, as an application server that
    /// is not the audit service makes them (through StampClient, the seed's policy, no prefetch, no
    /// coalescing); 0 makes none. At 250/s beside 500 writes/s (release, 2 cores) they cost the
    /// driver about 0.17 cores and the generators 0.11, and the writes' p99 stays under 10 ms.
    public var idRate = 250
    /// How many users the writes are spread over.
    public var users = 10_000
    /// The fraction of requests that are history reads, from 0 up to (not including) 1.
    public var readFraction = 0.1
    public var databases = Databases.sqlite
    /// Whether the coordination store is a three-member etcd cluster started for the run from the
    /// installed `etcd`, instead of a database of the shards' kind.
    public var etcdCoordination = false
    public var balancing = Balancing.haproxyWhenInstalled
    /// Whether the servers keep running after the run, for their consoles, until graceful shutdown,
    /// and the run's folder (logs, databases, the consoles' tokens) is kept.
    public var keepFolder = false
    /// The log level of the demo and of the processes it starts.
    public var logLevel = Logger.Level.notice
    /// The `stamp` program the nodes and servers run.
    public var stampExecutable = ChildProcess.currentExecutable

    public init() {}

    public static let generatorCount = 3
    public static let auditServerCount = 3
    public static let shardCount = 3
    /// Most requests of one kind (audit requests, ID requests) in flight at once; a request due past
    /// it is not started. Requests queue on the connections while all are busy, and a long queue
    /// only adds latency.
    public static let inFlightLimit = 1024
    /// Keep-alive connections the driver opens to each place audit requests go (the balancer, or
    /// each audit server). An audit server answers the requests of one connection one after
    /// another, so these bound how many writes the servers can commit together: at saturation 64
    /// sustained about two thirds of the rate that 256 did.
    public static let connectionsPerTarget = 256
    /// The driver starts the requests due at most once per this interval, together: at 1,500
    /// writes/s a 2 ms interval cost the driver about 15 % less CPU than 1 ms, and adds at most
    /// 2 ms to a request's latency, which counts from the request's own due instant.
    public static let wakeInterval = Duration.milliseconds(2)
    /// The client policy of the seed: per-attempt timeout, then up to 3 retries 1 s apart.
    public static let attemptTimeout = TimeAmount.seconds(2)
    public static let retries = 3
    public static let retryDelay = Duration.seconds(1)
}
