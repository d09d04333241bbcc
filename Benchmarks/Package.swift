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
        .package(url: "https://github.com/ordo-one/benchmark.git", from: "1.29.0", traits: ["MallocInterposer"]),
    ],
    targets: [
        // The baseline of scripts/bench-serve: a bare Hummingbird counter endpoint.
        .executableTarget(
            name: "BareHummingbird",
            dependencies: [.product(name: "Hummingbird", package: "hummingbird")],
            path: "Sources/BareHummingbird"
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
