import Synchronization

/// A child process's output as it arrives, so that a caller waits for a line the process prints
/// instead of sleeping or polling.
public final class OutputWatcher: Sendable {
    private struct Waiter {
        let needle: [UInt8]
        let continuation: CheckedContinuation<Bool, Never>
    }

    private struct State {
        var bytes: [UInt8] = []
        var ended = false
        var nextWaiter = 0
        var waiters: [Int: Waiter] = [:]
        var endWaiters: [CheckedContinuation<Void, Never>] = []
    }

    private let state = Mutex(State())

    init() {}

    /// Everything read so far.
    public var contents: String { state.withLock { String(decoding: $0.bytes, as: UTF8.self) } }

    /// The last `lines` lines read so far.
    public func tail(lines: Int = 30) -> String {
        contents.split(separator: "\n", omittingEmptySubsequences: false).suffix(lines).joined(separator: "\n")
    }

    /// Waits until the output contains `needle`; `false` when the output ends first or the task is cancelled.
    public func waitFor(_ needle: String) async -> Bool {
        let needle = Array(needle.utf8)
        let id = state.withLock { state in
            defer { state.nextWaiter += 1 }
            return state.nextWaiter
        }
        return await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let answer: Bool? = state.withLock { state in
                    if Self.find(needle, in: state.bytes, from: 0) { return true }
                    if state.ended || Task.isCancelled { return false }
                    state.waiters[id] = Waiter(needle: needle, continuation: continuation)
                    return nil
                }
                if let answer { continuation.resume(returning: answer) }
            }
        } onCancel: {
            state.withLock { $0.waiters.removeValue(forKey: id) }?.continuation.resume(returning: false)
        }
    }

    /// Waits until the output has ended.
    public func waitForEnd() async {
        await withCheckedContinuation { continuation in
            let ended = state.withLock { state in
                if !state.ended { state.endWaiters.append(continuation) }
                return state.ended
            }
            if ended { continuation.resume() }
        }
    }

    /// Adds a chunk, answering the waiters whose text it completes.
    func append(_ chunk: some Collection<UInt8>) {
        let ready = state.withLock { state -> [CheckedContinuation<Bool, Never>] in
            let previousCount = state.bytes.count
            state.bytes.append(contentsOf: chunk)
            var ready: [CheckedContinuation<Bool, Never>] = []
            for (id, waiter) in state.waiters where Self.find(waiter.needle, in: state.bytes, from: max(0, previousCount - waiter.needle.count + 1)) {
                state.waiters.removeValue(forKey: id)
                ready.append(waiter.continuation)
            }
            return ready
        }
        ready.forEach { $0.resume(returning: true) }
    }

    /// Marks the output ended, answering every waiter still waiting.
    func finish() {
        let (waiters, endWaiters) = state.withLock { state in
            state.ended = true
            defer {
                state.waiters = [:]
                state.endWaiters = []
            }
            return (Array(state.waiters.values), state.endWaiters)
        }
        waiters.forEach { $0.continuation.resume(returning: false) }
        endWaiters.forEach { $0.resume() }
    }

    /// Whether `needle` starts somewhere in `bytes` at or after `start`.
    private static func find(_ needle: [UInt8], in bytes: [UInt8], from start: Int) -> Bool {
        guard !needle.isEmpty else { return true }
        guard bytes.count >= needle.count else { return false }
        var index = start
        while index <= bytes.count - needle.count {
            if bytes[index] == needle[0], bytes[index..<(index + needle.count)].elementsEqual(needle) { return true }
            index += 1
        }
        return false
    }
}
