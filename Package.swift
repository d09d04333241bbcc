// swift-tools-version:6.1
import PackageDescription

let package = Package(
    name: "stamp",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "stamp", targets: ["stamp"]),
        .library(name: "StampCore", targets: ["StampCore"]),
        .library(name: "StampTesting", targets: ["StampTesting"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.5.0"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.80.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.1.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.6.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.10.0"),
        .package(url: "https://github.com/vapor/postgres-nio.git", from: "1.25.0"),
        .package(url: "https://github.com/vapor/sqlite-nio.git", from: "1.10.0"),
    ],
    targets: [
        // The pure core: layout, ID value, generator and clock rules. No I/O, no server.
        .target(name: "StampCore"),
        // Manual clocks and in-memory fakes that every test target reuses.
        .target(name: "StampTesting", dependencies: ["StampCore"]),
        .executableTarget(
            name: "stamp",
            dependencies: [
                "StampCore",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .testTarget(name: "StampCoreTests", dependencies: ["StampCore", "StampTesting"]),
    ]
)
