import Foundation
import Synchronization

/// A started process: its output as it arrives, its end, and how to stop it.
///
/// Processes are started with `posix_spawn`, not Foundation's `Process`: Foundation learns that a
/// process ended when a socket the process inherits closes, and `pg_ctl start` leaves the server
/// running with it open. Here a thread waits for the process itself, the child inherits no
/// descriptor but its standard input, output and error and those ``Launch/inheritedDescriptors``
/// names, and it gets the default actions of SIGINT, SIGTERM and SIGPIPE back (a service ignores
/// them to handle them itself).
public final class ChildProcess: Sendable {
    /// What to start, and where its output goes.
    public struct Launch: Sendable {
        /// Where standard error goes.
        public enum StandardError: Sendable {
            /// Into ``ChildProcess/output``, with standard output (a server's log).
            case withOutput
            /// Into ``ChildProcess/errorOutput`` of its own (a command whose report is on standard output).
            case apart
        }

        /// A name for messages and logs.
        public var name: String
        /// The program's path.
        public var executable: String
        public var arguments: [String]
        /// Variables added to (or replacing those of) this process's environment.
        public var environment: [String: String]
        /// The working directory; this process's when `nil`.
        public var directory: String?
        /// A file the output is appended to as it arrives, besides being kept in memory.
        public var log: String?
        public var standardError: StandardError
        /// Descriptors of this process that the child gets as 3, 4, ... (such as a listening socket).
        public var inheritedDescriptors: [Int32]

        public init(
            name: String,
            executable: String,
            arguments: [String],
            environment: [String: String] = [:],
            directory: String? = nil,
            log: String? = nil,
            standardError: StandardError = .withOutput,
            inheritedDescriptors: [Int32] = []
        ) {
            self.name = name
            self.executable = executable
            self.arguments = arguments
            self.environment = environment
            self.directory = directory
            self.log = log
            self.standardError = standardError
            self.inheritedDescriptors = inheritedDescriptors
        }
    }

    /// How a process ended.
    public enum Termination: Sendable, Equatable, CustomStringConvertible {
        /// It exited with this status.
        case exited(Int32)
        /// A signal ended it.
        case signalled(Int32)

        public var description: String {
            switch self {
            case .exited(let status): "exited with status \(status)"
            case .signalled(let signal): "ended by signal \(signal)"
            }
        }
    }

    private struct State {
        var termination: Termination?
        var waiters: [@Sendable (Termination) -> Void] = []
    }

    public let name: String
    public let processIdentifier: pid_t
    /// Standard output, and standard error unless it is read apart.
    public let output: OutputWatcher
    /// Standard error, when the launch reads it apart.
    public let errorOutput: OutputWatcher?
    /// The file the output is appended to, if any.
    public let log: String?
    private let state = Mutex(State())

    private init(name: String, processIdentifier: pid_t, output: OutputWatcher, errorOutput: OutputWatcher?, log: String?) {
        self.name = name
        self.processIdentifier = processIdentifier
        self.output = output
        self.errorOutput = errorOutput
        self.log = log
    }

    /// This program, as the kernel knows it: the executable that starts copies of itself.
    public static var currentExecutable: String {
        (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? Bundle.main.executablePath ?? CommandLine.arguments[0]
    }

    /// Starts a process; its output is read, and its end awaited, on threads of their own.
    public static func start(_ launch: Launch) throws(LoadTestingError) -> ChildProcess {
        let outputChannel = try OutputChannel(name: launch.name)
        let errorChannel = launch.standardError == .apart ? try OutputChannel(name: launch.name) : nil
        // Copies above the range the child's descriptors are moved to, so that no move overwrites a source.
        var inherited: [Int32] = []
        defer {
            outputChannel.closeWritingEnd()
            errorChannel?.closeWritingEnd()
            inherited.forEach { _ = close($0) }
        }
        for descriptor in launch.inheritedDescriptors {
            let copy = fcntl(descriptor, F_DUPFD_CLOEXEC, 3 + Int32(launch.inheritedDescriptors.count))
            guard copy >= 0 else {
                outputChannel.closeReadingEnd()
                errorChannel?.closeReadingEnd()
                throw LoadTestingError(.processFailed, "cannot pass descriptor \(descriptor) to \(launch.name): \(String(cString: strerror(errno)))")
            }
            inherited.append(copy)
        }

        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, outputChannel.writingEnd, 1)
        posix_spawn_file_actions_adddup2(&actions, errorChannel?.writingEnd ?? outputChannel.writingEnd, 2)
        for (index, descriptor) in inherited.enumerated() {
            posix_spawn_file_actions_adddup2(&actions, descriptor, 3 + Int32(index))
        }
        SpawnExtensions.closeDescriptors(from: 3 + Int32(inherited.count), in: &actions)
        if let directory = launch.directory {
            guard SpawnExtensions.changeDirectory(to: directory, in: &actions) else {
                outputChannel.closeReadingEnd()
                errorChannel?.closeReadingEnd()
                throw LoadTestingError(.processFailed, "cannot start \(launch.name) in a directory: this C library has no posix_spawn_file_actions_addchdir_np")
            }
        }

        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for signal in [SIGINT, SIGTERM, SIGPIPE] { sigaddset(&defaults, signal) }
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        var noneBlocked = sigset_t()
        sigemptyset(&noneBlocked)
        posix_spawnattr_setsigmask(&attributes, &noneBlocked)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK))

        let environment = ProcessInfo.processInfo.environment.merging(launch.environment) { $1 }.map { "\($0.key)=\($0.value)" }
        let argv = ([launch.executable] + launch.arguments).map { strdup($0) } + [nil]
        let envp = environment.map { strdup($0) } + [nil]
        defer {
            argv.forEach { free($0) }
            envp.forEach { free($0) }
        }
        var pid: pid_t = 0
        let spawned = posix_spawn(&pid, launch.executable, &actions, &attributes, argv, envp)
        guard spawned == 0 else {
            outputChannel.closeReadingEnd()
            errorChannel?.closeReadingEnd()
            throw LoadTestingError(.processFailed, "cannot start \(launch.name) (\(launch.executable)): \(String(cString: strerror(spawned)))")
        }

        let child = ChildProcess(name: launch.name, processIdentifier: pid, output: OutputWatcher(), errorOutput: errorChannel.map { _ in OutputWatcher() }, log: launch.log)
        outputChannel.startReading(into: child.output, log: launch.log)
        if let errorChannel, let errorOutput = child.errorOutput { errorChannel.startReading(into: errorOutput, log: launch.log) }
        Thread.detachNewThread { child.awaitEnd() }
        return child
    }

    /// Runs a short-lived program to its end and fails, with the end of its output, unless it exits with 0.
    public static func run(_ launch: Launch) async throws(LoadTestingError) {
        let child = try start(launch)
        let termination = await child.waitForExit()
        await child.output.waitForEnd()
        guard termination == .exited(0) else {
            throw LoadTestingError(.processFailed, "\(URL(fileURLWithPath: launch.executable).lastPathComponent) \(termination); its output ends:\n\(child.output.tail(lines: 20))")
        }
    }

    /// How the process ended; `nil` while it runs.
    public var termination: Termination? { state.withLock { $0.termination } }

    public var isRunning: Bool { termination == nil }

    /// Sends `signal` unless the process has ended (an ended process's ID may already be another's).
    public func send(_ signal: Int32) {
        state.withLock { state in
            if state.termination == nil { kill(processIdentifier, signal) }
        }
    }

    /// Waits until the process has ended.
    public func waitForExit() async -> Termination {
        await withCheckedContinuation { continuation in
            whenEnded { continuation.resume(returning: $0) }
        }
    }

    /// Blocks the calling thread until the process has ended, for callers that cannot suspend.
    @discardableResult
    public func waitUntilExit() -> Termination {
        let ended = DispatchSemaphore(value: 0)
        let result = Mutex<Termination?>(nil)
        whenEnded { termination in
            result.withLock { $0 = termination }
            ended.signal()
        }
        ended.wait()
        return result.withLock { $0! }
    }

    /// Sends `signal`, waits up to `grace` for the process to end, then sends SIGKILL.
    ///
    /// Returns how the process ended, and whether it had to be killed.
    @discardableResult
    public func stop(signal: Int32 = SIGTERM, grace: Duration = .seconds(10)) async -> (termination: Termination, killed: Bool) {
        send(signal)
        return await withTaskGroup(of: Termination?.self) { group in
            group.addTask { await self.waitForExit() }
            // A cancelled wait ends at once, which kills the process at once.
            group.addTask {
                try? await Task.sleep(for: grace)
                return nil
            }
            if let first = await group.next() ?? nil {
                group.cancelAll()
                return (first, false)
            }
            send(SIGKILL)
            while let next = await group.next() {
                if let termination = next { return (termination, true) }
            }
            return (await waitForExit(), true)
        }
    }

    private func whenEnded(_ body: @escaping @Sendable (Termination) -> Void) {
        let ended = state.withLock { state -> Termination? in
            if state.termination == nil { state.waiters.append(body) }
            return state.termination
        }
        if let ended { body(ended) }
    }

    /// Waits on this thread for the process to end; it is reaped under the lock that ``send(_:)``
    /// takes, so that no signal goes to a process ID the system may have reused.
    private func awaitEnd() {
        var info = siginfo_t()
        while waitid(P_PID, id_t(processIdentifier), &info, WEXITED | WNOWAIT) == -1, errno == EINTR {}
        let (termination, waiters) = state.withLock { state in
            var status: Int32 = 0
            while waitpid(processIdentifier, &status, 0) == -1, errno == EINTR {}
            // Exited normally: no terminating signal in the low 7 bits, the exit status in the next 8.
            let termination: Termination = status & 0x7f == 0 ? .exited((status >> 8) & 0xff) : .signalled(status & 0x7f)
            state.termination = termination
            defer { state.waiters = [] }
            return (termination, state.waiters)
        }
        waiters.forEach { $0(termination) }
    }
}

/// One of the child's output streams: a socket pair whose writing end the child gets, read here on a thread.
private struct OutputChannel {
    let readingEnd: Int32
    let writingEnd: Int32

    init(name: String) throws(LoadTestingError) {
        var ends: [Int32] = [0, 0]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &ends) == 0 else {
            throw LoadTestingError(.processFailed, "cannot make an output channel for \(name): \(String(cString: strerror(errno)))")
        }
        readingEnd = ends[0]
        writingEnd = ends[1]
    }

    func closeWritingEnd() { close(writingEnd) }
    func closeReadingEnd() { close(readingEnd) }

    /// Reads until every writer has closed, into `watcher` and appended to `log`.
    func startReading(into watcher: OutputWatcher, log: String?) {
        let readingEnd = self.readingEnd
        Thread.detachNewThread {
            let logFile = log.map { open($0, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644) } ?? -1
            var buffer = [UInt8](repeating: 0, count: 65_536)
            while true {
                let count = buffer.withUnsafeMutableBytes { read(readingEnd, $0.baseAddress, $0.count) }
                if count < 0, errno == EINTR { continue }
                guard count > 0 else { break }
                if logFile >= 0 {
                    _ = buffer.withUnsafeBytes { write(logFile, $0.baseAddress, count) }
                }
                watcher.append(buffer[..<count])
            }
            if logFile >= 0 { close(logFile) }
            close(readingEnd)
            watcher.finish()
        }
    }
}

/// The glibc extensions of `posix_spawn` that Swift does not import: looked up by name, as they are
/// declared only for `_GNU_SOURCE` code.
private enum SpawnExtensions {
    private typealias CloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>?, Int32) -> Int32
    private typealias ChangeDirectory = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>?, UnsafePointer<CChar>?) -> Int32

    private static let closeFrom: CloseFrom? = dlsym(nil, "posix_spawn_file_actions_addclosefrom_np").map { unsafeBitCast($0, to: CloseFrom.self) }
    private static let changeDirectory: ChangeDirectory? = dlsym(nil, "posix_spawn_file_actions_addchdir_np").map { unsafeBitCast($0, to: ChangeDirectory.self) }

    /// Closes every descriptor from `first` on in the child, where the C library can (glibc 2.34 and
    /// later); elsewhere the child still gets only what was opened close-on-exec, as this module opens everything.
    static func closeDescriptors(from first: Int32, in actions: inout posix_spawn_file_actions_t) {
        _ = closeFrom?(&actions, first)
    }

    /// Starts the child in `directory`; `false` when the C library cannot (before glibc 2.29).
    static func changeDirectory(to directory: String, in actions: inout posix_spawn_file_actions_t) -> Bool {
        guard let changeDirectory else { return false }
        return changeDirectory(&actions, directory) == 0
    }
}
