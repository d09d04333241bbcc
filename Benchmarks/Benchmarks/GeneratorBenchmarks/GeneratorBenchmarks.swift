import Benchmark
import Dispatch
import StampCore

/// A layout whose 22-bit sequence (4,194,304 IDs per millisecond) never caps the rate, so that the
/// generator's own cost per call shows. The default layout is capped at 4,096,000 IDs/s by design;
/// its sustained rate is what `stamp bench` measures (it waits out refusals and checks every ID).
let wideLayout = try! IDLayout(parsing: "time=41,sequence=22,shard=0,node=0,epoch=2025-01-01T00:00:00Z")

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .throughput, .instructions, .mallocCountTotal],
        scalingFactor: .mega,
        maxDuration: .seconds(3),
        maxIterations: 20
    )

    Benchmark("next(shard:), 1 thread, 22-bit sequence") { benchmark in
        let generator = try IDGenerator(layout: wideLayout, node: 0)
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            blackHole(try generator.next(shard: 0))
        }
    }

    Benchmark("next(shard:), 2 threads, 22-bit sequence") { benchmark in
        let generator = try IDGenerator(layout: wideLayout, node: 0)
        let perThread = benchmark.scaledIterations.count / 2
        benchmark.startMeasurement()
        DispatchQueue.concurrentPerform(iterations: 2) { _ in
            for _ in 0..<perThread {
                blackHole(try! generator.next(shard: 0))
            }
        }
    }

    Benchmark("next(shard:count: 1000), 22-bit sequence", configuration: .init(scalingFactor: .kilo)) { benchmark in
        let generator = try IDGenerator(layout: wideLayout, node: 0)
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            try generator.next(shard: 0, count: 1000) { ids in blackHole(ids.last) }
        }
    }
}
