import Foundation
import Synchronization

/// Where the demo's web consoles are, told to the operator when `--keep` leaves the servers
/// running after the run.
final class DemoConsoles: Sendable {
    /// One console: what it is, its URL, and the variable of the tokens file holding the token it asks for.
    struct Console: Sendable, Equatable {
        let name: String
        let url: String
        let token: String
    }

    private let started = Mutex<(generators: [String], auditServers: [String])>(([], []))

    /// Records the base URLs of the generator nodes once they are ready.
    func generatorsStarted(_ urls: [String]) {
        started.withLock { $0.generators = urls }
    }

    /// Records the base URLs of the audit servers once they are ready.
    func auditServersStarted(_ urls: [String]) {
        started.withLock { $0.auditServers = urls }
    }

    /// The consoles of the servers started so far.
    var consoles: [Console] {
        let (generators, auditServers) = started.withLock { $0 }
        var consoles: [Console] = []
        if let generator = generators.first {
            consoles.append(Console(name: "cluster console", url: "\(generator)/ui", token: "STAMP_TOKEN"))
        }
        // Every audit server serves the viewer; the reader token shows values, the admin token erases.
        if let auditServer = auditServers.first {
            consoles.append(Console(name: "audit viewer", url: "\(auditServer)/ui", token: "STAMP_AUDIT_READER_TOKEN"))
        }
        return consoles
    }

    /// Writes `tokens` (variable and value) to `file`, readable by its owner only, one `NAME=value` a line.
    static func writeTokens(_ tokens: [(String, String)], to file: URL) throws {
        let text = tokens.map { "\($0.0)=\($0.1)\n" }.joined()
        guard FileManager.default.createFile(atPath: file.path, contents: Data(text.utf8), attributes: [.posixPermissions: 0o600]) else {
            throw LoadTestingError(.setupFailed, "cannot write \(file.path)")
        }
    }
}
