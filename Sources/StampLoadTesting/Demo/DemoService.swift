import Foundation
import Logging
import ServiceLifecycle
import Synchronization

/// How a demo run ended.
public enum DemoOutcome: Sendable {
    /// Every check passed.
    case passed(DemoReport)
    /// The run completed, and a check or a request failed.
    case failedChecks(DemoReport)
    /// The topology could not be set up or broke down.
    case failed(String)
    /// Graceful shutdown (SIGINT, SIGTERM) stopped the run.
    case interrupted

    /// Whether the load ran and was checked, whatever the checks found.
    var ranToTheEnd: Bool {
        switch self {
        case .passed, .failedChecks: true
        case .failed, .interrupted: false
        }
    }
}

/// The demo as a service: runs until done, or until graceful shutdown cancels it; either way every
/// process it started is stopped, and its folder deleted (unless kept), before ``run()`` returns.
///
/// With ``DemoConfiguration/keepFolder``, a run that got to its checks leaves the servers running
/// until graceful shutdown, and tells where their web consoles are and which tokens they need.
public final class DemoService: Service, Sendable {
    public let configuration: DemoConfiguration
    private let logger: Logger
    private let output: RunOutput
    private let result = Mutex<DemoOutcome?>(nil)

    /// `output` hears where the run's folder is, each part of the topology as it starts, the
    /// progress line once a second and the first failure of each kind.
    public init(configuration: DemoConfiguration, logger: Logger, output: RunOutput) {
        self.configuration = configuration
        self.logger = logger
        self.output = output
    }

    /// How the run ended; `nil` until ``run()`` returns.
    public var outcome: DemoOutcome? { result.withLock { $0 } }

    public func run() async throws {
        let folder: URL
        do {
            folder = try DemoFolder.make()
        } catch {
            result.withLock { $0 = .failed("cannot create a temporary folder: \(error)") }
            return
        }
        let supervisor = ProcessSupervisor(logger: logger)
        let topology = DemoTopology(configuration: configuration, folder: folder, supervisor: supervisor, logger: logger, output: output)
        let outcome: DemoOutcome
        do {
            outcome = try await cancelWhenGracefulShutdown {
                try await topology.run()
            }
        } catch {
            outcome = Task.isShuttingDownGracefully || error is CancellationError ? .interrupted : .failed("\(error)")
        }
        if configuration.keepFolder, outcome.ranToTheEnd {
            // The servers keep running, for their consoles, until graceful shutdown.
            topology.announceConsoles()
            try? await gracefulShutdown()
        }
        await supervisor.stopAll()
        if configuration.keepFolder {
            output.note("kept the folder \(folder.path)")
        } else {
            try? FileManager.default.removeItem(at: folder)
        }
        result.withLock { $0 = outcome }
    }
}

/// The demo's temporary folder.
enum DemoFolder {
    /// A new folder under the temporary directory, which other users may pass through (the
    /// PostgreSQL cluster runs as the postgres user) but not list.
    static func make() throws(LoadTestingError) -> URL {
        var template = Array(FileManager.default.temporaryDirectory.appendingPathComponent("stamp-demo-XXXXXX").path.utf8CString)
        let made = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) != nil }
        guard made else { throw LoadTestingError(.setupFailed, "mkdtemp failed: \(String(cString: strerror(errno)))") }
        let path = String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        chmod(path, 0o711)
        return URL(fileURLWithPath: path)
    }
}
