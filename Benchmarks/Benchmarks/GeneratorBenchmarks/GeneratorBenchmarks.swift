import Benchmark
import Dispatch
import StampCore

/// The default layout, and one whose 22-bit sequence does not cap the rate, so that the
/// generator's own cost shows.
let wideLayout = try! IDLayout(parsing: "time=41,sequence=22,shard=0,node=0,epoch=2025-01-01T00:00:00Z")

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .throughput, .instructions, .mallocCountTotal],
        scalingFactor: .mega,
        maxDuration: .seconds(3),
        maxIterations: 20
    )

    for (name, layout) in [("default layout", IDLayout.default), ("22-bit sequence", wideLayout)] {
        Benchmark("next(shard:), 1 thread, \(name)") { benchmark in
            let generator = try IDGenerator(layout: layout, node: 0)
            benchmark.startMeasurement()
            for _ in benchmark.scaledIterations {
                blackHole(try? generator.next(shard: 0))
            }
        }

        Benchmark("next(shard:), 2 threads, \(name)") { benchmark in
            let generator = try IDGenerator(layout: layout, node: 0)
            let perThread = benchmark.scaledIterations.count / 2
            benchmark.startMeasurement()
            DispatchQueue.concurrentPerform(iterations: 2) { _ in
                for _ in 0..<perThread {
                    blackHole(try? generator.next(shard: 0))
                }
            }
        }
    }

    Benchmark("next(shard:count: 1000), 22-bit sequence") { benchmark in
        let generator = try IDGenerator(layout: wideLayout, node: 0)
        benchmark.startMeasurement()
        for _ in 0..<(benchmark.scaledIterations.count / 1000) {
            try generator.next(shard: 0, count: 1000) { ids in blackHole(ids.last) }
        }
    }
}
