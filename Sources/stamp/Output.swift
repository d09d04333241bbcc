import Foundation
import StampLoadTesting
import Synchronization

/// Writes a line to standard error.
func printError(_ line: String) {
    FileHandle.standardError.write(Data((line + "\n").utf8))
}

/// Prints a run's notes and progress lines to standard error; on a terminal the progress line is
/// rewritten in place, and a note or the end starts a new line first.
final class ProgressPrinter: Sendable {
    private let terminal = isatty(STDERR_FILENO) == 1
    /// Whether a progress line has been written in place and not yet ended.
    private let lineOpen = Mutex(false)

    /// The output to hand to a run.
    var output: RunOutput {
        RunOutput(note: { self.note($0) }, progress: { self.progress($0) })
    }

    func note(_ line: String) {
        endLine()
        printError(line)
    }

    func progress(_ line: String) {
        guard terminal else { return printError(line) }
        lineOpen.withLock { open in
            FileHandle.standardError.write(Data("\r\(line)\u{1B}[K".utf8))
            open = true
        }
    }

    /// Ends a progress line written in place, if there is one.
    func endLine() {
        lineOpen.withLock { open in
            if open { FileHandle.standardError.write(Data("\n".utf8)) }
            open = false
        }
    }
}
