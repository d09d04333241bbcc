// swift-tools-version:6.1
import PackageDescription

/// The root package's identity: SwiftPM names a path dependency after its folder, which is the
/// checkout's name, not the package's.
let stampIdentity = Context.packageDirectory.split(separator: "/").dropLast().last.map { $0.lowercased() } ?? "stamp"

let package = Package(
    name: "StampBenchmarks",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(path: ".."),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.10.0"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/ordo-one/benchmark.git", from: "1.29.0", traits: ["MallocInterposer"]),
    ],
    targets: [
        // The baseline of scripts/bench-serve: a bare Hummingbird counter endpoint.
        .executableTarget(
            name: "BareHummingbird",
            dependencies: [.product(name: "Hummingbird", package: "hummingbird")],
            path: "Sources/BareHummingbird"
        ),
        // The baseline of scripts/bench-serve without a framework: a SwiftNIO channel handler answering a counter.
        .executableTarget(
            name: "PlainNIO",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            path: "Sources/PlainNIO"
        ),
        // The fixed-rate (open-loop) client of scripts/bench-serve, on StampLoadTesting's open loop and pipelined client.
        .executableTarget(
            name: "FixedRateLoad",
            dependencies: [
                .product(name: "StampCore", package: stampIdentity),
                .product(name: "StampLoadTesting", package: stampIdentity),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            path: "Sources/FixedRateLoad"
        ),
        .executableTarget(
            name: "GeneratorBenchmarks",
            dependencies: [
                .product(name: "StampCore", package: stampIdentity),
                .product(name: "Benchmark", package: "benchmark"),
            ],
            path: "Benchmarks/GeneratorBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
    ]
)
