import Foundation
import Logging
import Synchronization

/// The processes a run started, and how to stop them all.
public final class ProcessSupervisor: Sendable {
    private struct State {
        var children: [ChildProcess] = []
        var afterwards: [@Sendable () async -> Void] = []
        var stopped = false
    }

    private let state = Mutex(State())
    private let logger: Logger

    public init(logger: Logger) {
        self.logger = logger
    }

    /// Starts a process that ``stopAll(grace:)`` stops; refused once that has begun.
    public func start(_ launch: ChildProcess.Launch) throws(LoadTestingError) -> ChildProcess {
        // Started under the lock, so that a stop that begins meanwhile cannot miss it.
        try state.withLock { (state) throws(LoadTestingError) -> ChildProcess in
            guard !state.stopped else { throw LoadTestingError(.processFailed, "not starting \(launch.name): the run is stopping") }
            let child = try ChildProcess.start(launch)
            state.children.append(child)
            return child
        }
    }

    /// Adds a step to run after every process has ended, such as stopping a database cluster.
    public func afterwards(_ step: @escaping @Sendable () async -> Void) {
        state.withLock { $0.afterwards.append(step) }
    }

    /// Sends SIGTERM to every process and waits up to `grace` for each to end, SIGKILLing those
    /// that do not; then runs the steps added with ``afterwards(_:)``, last first.
    public func stopAll(grace: Duration = .seconds(10)) async {
        let (children, steps) = state.withLock { state in
            state.stopped = true
            defer {
                state.children = []
                state.afterwards = []
            }
            return (state.children, state.afterwards)
        }
        await withTaskGroup(of: Void.self) { group in
            for child in children {
                group.addTask {
                    let (_, killed) = await child.stop(signal: SIGTERM, grace: grace)
                    if killed {
                        self.logger.warning("a process did not stop within its grace time after SIGTERM and was killed", metadata: ["stamp.process": "\(child.name)", "stamp.grace": "\(grace)"])
                    }
                }
            }
        }
        for step in steps.reversed() {
            await step()
        }
    }
}
