// swift-tools-version:6.1
import PackageDescription

let package = Package(
    name: "stamp",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "stamp", targets: ["stamp"]),
        .library(name: "StampCore", targets: ["StampCore"]),
        .library(name: "StampCoordination", targets: ["StampCoordination"]),
        .library(name: "StampDatabase", targets: ["StampDatabase"]),
        .library(name: "StampCoordinationSQLite", targets: ["StampCoordinationSQLite"]),
        .library(name: "StampCoordinationPostgres", targets: ["StampCoordinationPostgres"]),
        .library(name: "StampCoordinationEtcd", targets: ["StampCoordinationEtcd"]),
        .library(name: "StampAPI", targets: ["StampAPI"]),
        .library(name: "StampHTTP", targets: ["StampHTTP"]),
        .library(name: "StampWebConsole", targets: ["StampWebConsole"]),
        .library(name: "StampGeneratorNode", targets: ["StampGeneratorNode"]),
        .library(name: "StampTesting", targets: ["StampTesting"]),
        .library(name: "StampClient", targets: ["StampClient"]),
        .library(name: "StampShardMap", targets: ["StampShardMap"]),
        .library(name: "StampAudit", targets: ["StampAudit"]),
        .library(name: "StampAuditStore", targets: ["StampAuditStore"]),
        .library(name: "StampAuditService", targets: ["StampAuditService"]),
        .library(name: "StampAuditServer", targets: ["StampAuditServer"]),
        .library(name: "StampLoadTesting", targets: ["StampLoadTesting"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.5.0"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.80.0"),
        .package(url: "https://github.com/apple/swift-nio-extras.git", from: "1.25.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.1.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.6.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.10.0"),
        .package(url: "https://github.com/vapor/postgres-nio.git", from: "1.25.0"),
        .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.10.0"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.20.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.27.0"),
        .package(url: "https://github.com/apple/swift-crypto.git", "3.9.0"..<"5.0.0"),
        .package(url: "https://github.com/hummingbird-project/swift-mustache.git", from: "2.0.0"),
        .package(url: "https://github.com/apple/swift-http-types.git", from: "1.0.0"),
    ],
    targets: [
        // The pure core: layout, ID value, generator and clock rules. No I/O, no server.
        .target(name: "StampCore"),
        // The coordination protocol: the store interface and the lease keeper's state machine. No I/O.
        .target(
            name: "StampCoordination",
            dependencies: ["StampCore"]
        ),
        // Database plumbing in one place: locations (`sqlite:PATH`, `postgres://...`), PostgreSQL URLs,
        // and the opening and lending of SQLite connections.
        .target(
            name: "StampDatabase",
            dependencies: [
                "StampCore",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // Coordination store on an embedded SQLite file (the default).
        .target(
            name: "StampCoordinationSQLite",
            dependencies: [
                "StampCore", "StampCoordination", "StampDatabase",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // Coordination store on PostgreSQL, for nodes on several machines.
        .target(
            name: "StampCoordinationPostgres",
            dependencies: [
                "StampCore", "StampCoordination", "StampDatabase",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // Coordination store on an etcd cluster, through its v3 JSON gateway, for nodes that must survive losing any one machine.
        .target(
            name: "StampCoordinationEtcd",
            dependencies: [
                "StampCore", "StampCoordination",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // The wire types of both HTTP APIs as Codable values: what the servers encode and clients decode. No server.
        .target(
            name: "StampAPI",
            dependencies: [
                "StampCore",
                .product(name: "NIOCore", package: "swift-nio"),
            ]
        ),
        // What both servers share on Hummingbird: problems, middlewares, server configuration, operational routes.
        .target(
            name: "StampHTTP",
            dependencies: [
                "StampAPI", "StampCore",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
                .product(name: "NIOHTTPTypesHTTP1", package: "swift-nio-extras"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
            ]
        ),
        // What the servers' web consoles share: HTML pages from mustache templates with strict security
        // headers, the shared layout and stylesheet, and the route of the static assets.
        .target(
            name: "StampWebConsole",
            dependencies: [
                "StampHTTP",
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Mustache", package: "swift-mustache"),
                .product(name: "NIOCore", package: "swift-nio"),
            ]
        ),
        // The generator node: lease keeping service, HTTP API, and the server composed from its configuration.
        .target(
            name: "StampGeneratorNode",
            dependencies: [
                "StampCore", "StampCoordination", "StampAPI", "StampHTTP", "StampDatabase", "StampCoordinationSQLite", "StampCoordinationPostgres", "StampCoordinationEtcd", "StampShardMap",
                "StampWebConsole",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            resources: [.copy("openapi.yaml")]
        ),
        // The library application servers link: retries, failover, discovery and prefetch over HTTP.
        .target(
            name: "StampClient",
            dependencies: [
                "StampCore", "StampAPI",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        // The shard map: users to shards, shards to databases; read from a file and followed as it changes.
        .target(
            name: "StampShardMap",
            dependencies: [
                "StampCore", "StampDatabase",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        // The audit log's rules: rows, the store interface, group commit, sealing of personal data. No I/O.
        .target(
            name: "StampAudit",
            dependencies: [
                "StampCore",
                .product(name: "Crypto", package: "swift-crypto"),
            ]
        ),
        // Audit stores on SQLite (the embedded default) and PostgreSQL.
        .target(
            name: "StampAuditStore",
            dependencies: [
                "StampCore", "StampAudit", "StampDatabase",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // The audit service without HTTP: writes through StampClient into the shards of the shard map.
        .target(
            name: "StampAuditService",
            dependencies: [
                "StampCore", "StampAudit", "StampAuditStore", "StampShardMap", "StampClient", "StampDatabase",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        // The audit service's HTTP API on Hummingbird, and its web console, the audit viewer.
        .target(
            name: "StampAuditServer",
            dependencies: [
                "StampCore", "StampAPI", "StampHTTP", "StampAudit", "StampAuditService", "StampShardMap", "StampClient",
                "StampWebConsole",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            resources: [.copy("openapi.yaml")]
        ),
        // The demo and the load driver: open-loop scheduling, a lean pipelined HTTP/1.1 client,
        // recording and reports, the process supervisor, the throwaway PostgreSQL cluster and
        // HAProxy's configuration.
        .target(
            name: "StampLoadTesting",
            dependencies: [
                "StampCore", "StampDatabase", "StampClient", "StampAudit", "StampShardMap",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        // Manual clocks, in-memory fakes and a fault-injecting TCP proxy that every test target reuses.
        .target(
            name: "StampTesting",
            dependencies: [
                "StampCore", "StampCoordination",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),
        // Fresh PostgreSQL databases for the store tests; apart from StampTesting, so that tests
        // without a database build no database driver.
        .target(
            name: "StampDatabaseTesting",
            dependencies: [
                "StampDatabase",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .executableTarget(
            name: "stamp",
            dependencies: [
                "StampCore", "StampCoordination", "StampDatabase", "StampCoordinationSQLite", "StampCoordinationPostgres", "StampHTTP", "StampGeneratorNode", "StampClient",
                "StampShardMap", "StampAudit", "StampAuditStore", "StampAuditService", "StampAuditServer", "StampLoadTesting",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Hummingbird", package: "hummingbird"),
            ]
        ),
        .testTarget(name: "StampCoreTests", dependencies: ["StampCore", "StampTesting"]),
        .testTarget(
            name: "StampDatabaseTests",
            dependencies: [
                "StampCore", "StampDatabase", "StampDatabaseTesting",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "GRDB", package: "GRDB.swift"),
            ]
        ),
        .testTarget(
            name: "StampAPITests",
            dependencies: [
                "StampAPI", "StampCore",
                .product(name: "NIOCore", package: "swift-nio"),
            ]
        ),
        .testTarget(
            name: "StampHTTPTests",
            dependencies: [
                "StampHTTP", "StampAPI",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "MetricsTestKit", package: "swift-metrics"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),
        .testTarget(
            name: "StampWebConsoleTests",
            dependencies: [
                "StampWebConsole",
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTesting", package: "hummingbird"),
            ]
        ),
        .testTarget(
            name: "StampCoordinationTests",
            dependencies: [
                "StampCore", "StampCoordination", "StampCoordinationSQLite", "StampCoordinationPostgres", "StampCoordinationEtcd", "StampTesting",
                "StampDatabase", "StampDatabaseTesting",
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .testTarget(
            name: "StampGeneratorNodeTests",
            dependencies: [
                "StampCore", "StampCoordination", "StampAPI", "StampHTTP", "StampGeneratorNode", "StampTesting", "StampWebConsole",
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "MetricsTestKit", package: "swift-metrics"),
            ]
        ),
        .testTarget(
            name: "StampClientTests",
            dependencies: [
                "StampClient", "StampCore", "StampCoordination", "StampHTTP", "StampGeneratorNode", "StampTesting",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "MetricsTestKit", package: "swift-metrics"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),
        .testTarget(
            name: "StampAuditTests",
            dependencies: [
                "StampCore", "StampAPI", "StampHTTP", "StampShardMap", "StampAudit", "StampAuditStore", "StampAuditService", "StampAuditServer", "StampClient", "StampTesting",
                "StampDatabase", "StampDatabaseTesting", "StampWebConsole",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "MetricsTestKit", package: "swift-metrics"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),
        .testTarget(
            name: "StampLoadTestingTests",
            dependencies: [
                "StampLoadTesting", "StampCore", "StampTesting",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
            ]
        ),
        // Tests of the built `stamp` binary: real processes on loopback.
        .testTarget(name: "StampProcessTests", dependencies: ["StampCore", "StampLoadTesting", "stamp"]),
    ]
)
