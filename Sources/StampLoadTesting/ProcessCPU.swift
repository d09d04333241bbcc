import Foundation
import StampCore

/// The CPU time processes have used, read from `/proc/PID/stat` (user and system time together).
public enum ProcessCPU {
    /// The CPU time process `pid` has used so far, or `nil` when it cannot be read (the process ended).
    public static func time(of pid: pid_t) -> Duration? {
        guard let data = FileManager.default.contents(atPath: "/proc/\(pid)/stat") else { return nil }
        return time(inStat: String(decoding: data, as: UTF8.self))
    }

    /// The CPU time this process has used so far.
    public static var ownTime: Duration? { time(of: getpid()) }

    /// The CPU time the calling thread has used so far.
    public static var threadTime: Duration {
        var time = timespec()
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &time)
        return .seconds(time.tv_sec) + .nanoseconds(time.tv_nsec)
    }

    /// User plus system time in a `/proc/PID/stat` line, whose fields 14 and 15 count clock ticks.
    static func time(inStat line: String, ticksPerSecond: Int = ProcessCPU.ticksPerSecond) -> Duration? {
        // The command (field 2) is in parentheses and may hold spaces; the fields after it start at 3.
        guard let end = line.lastIndex(of: ")") else { return nil }
        let fields = line[line.index(after: end)...].split(separator: " ")
        guard fields.count > 12, let user = Int64(fields[11]), let system = Int64(fields[12]), ticksPerSecond > 0 else { return nil }
        return .nanoseconds((user + system) * 1_000_000_000 / Int64(ticksPerSecond))
    }

    static let ticksPerSecond = sysconf(Int32(_SC_CLK_TCK))

    /// The cores of this machine that processes may run on.
    public static var machineCores: Int { ProcessInfo.processInfo.activeProcessorCount }
}

/// How much CPU each part of a run took while load was driven, in cores (CPU seconds per second).
public struct CPUShares: Sendable, Equatable {
    /// This process: the driver of the run's load.
    public var driver: Double
    /// The part of ``driver`` that drove the audit traffic: its event loop's thread.
    public var auditTraffic: Double
    /// The load balancer, when there is one.
    public var balancer: Double?
    /// Every audit server together.
    public var auditServers: Double
    /// Every generator node together.
    public var generators: Double
    /// The cores of the machine.
    public var machineCores: Int

    public init(driver: Double, auditTraffic: Double, balancer: Double?, auditServers: Double, generators: Double, machineCores: Int) {
        self.driver = driver
        self.auditTraffic = auditTraffic
        self.balancer = balancer
        self.auditServers = auditServers
        self.generators = generators
        self.machineCores = machineCores
    }

    /// The CPU times of processes at one instant, to be compared with a later sample.
    public struct Sample: Sendable {
        let driver: Duration
        let auditTraffic: Duration
        let balancer: Duration?
        let auditServers: Duration
        let generators: Duration
    }

    /// The CPU times now of this process, `balancer`, the audit servers and the generators, with
    /// `auditTraffic`, the CPU time so far of the thread that drives the audit traffic.
    public static func sample(auditTraffic: Duration, balancer: pid_t?, auditServers: [pid_t], generators: [pid_t]) -> Sample {
        func total(_ pids: [pid_t]) -> Duration { pids.compactMap(ProcessCPU.time(of:)).reduce(.zero, +) }
        return Sample(
            driver: ProcessCPU.ownTime ?? .zero,
            auditTraffic: auditTraffic,
            balancer: balancer.flatMap(ProcessCPU.time(of:)),
            auditServers: total(auditServers),
            generators: total(generators)
        )
    }

    /// The shares from `before` to `after`, `elapsed` apart.
    public init(from before: Sample, to after: Sample, elapsed: Duration, machineCores: Int = ProcessCPU.machineCores) {
        let seconds = max(elapsed.secondsValue, 0.001)
        func cores(_ start: Duration, _ end: Duration) -> Double { max(0, (end - start).secondsValue) / seconds }
        self.init(
            driver: cores(before.driver, after.driver),
            auditTraffic: cores(before.auditTraffic, after.auditTraffic),
            balancer: before.balancer.flatMap { start in after.balancer.map { cores(start, $0) } },
            auditServers: cores(before.auditServers, after.auditServers),
            generators: cores(before.generators, after.generators),
            machineCores: machineCores
        )
    }

    /// `driver 0.31 cores (15 % of the machine; audit traffic 0.12), balancer 0.05, audit servers 1.10, generators 0.12`.
    public var text: String {
        let share = Int((driver / Double(max(machineCores, 1)) * 100).rounded())
        let balancing = balancer.map { String(format: "balancer %.2f", $0) } ?? "no balancer"
        return String(format: "driver %.2f cores (%d %% of the machine; audit traffic %.2f), ", driver, share, auditTraffic) + balancing
            + String(format: ", audit servers %.2f, generators %.2f", auditServers, generators)
    }
}
