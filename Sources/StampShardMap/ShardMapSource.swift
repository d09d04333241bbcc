import Foundation
import Logging
import ServiceLifecycle
import StampCore
import Synchronization

/// The shard map in use, read from a JSON file and re-read when the file changes.
///
/// The map only moves forward: a file whose version is below the one in use, or equal with
/// other content, is refused and logged, and the map in use stays. Before a new version is
/// published, `prepare` runs (an audit server opens the new shards' databases there), so no
/// reader ever sees a shard it cannot reach; `prepare` may run more than once for a version, so it
/// must be idempotent. Write new versions by renaming a complete file
/// over the old one, so that no reader sees half a document.
///
/// Run it as a `Service` to poll the file every `interval`; ``refreshIfChanged()`` also lets a
/// caller that meets an unknown shard check the file at once.
public final class ShardMapSource<C: Clock<Duration>>: Service, Sendable {
    public typealias Prepare = @Sendable (ShardMap) async throws -> Void

    /// The file the map is read from.
    public let path: String
    public let layout: IDLayout
    private let interval: Duration
    private let clock: C
    private let logger: Logger
    private let prepare: Prepare?
    private let state: Mutex<State>

    private struct State {
        var map: ShardMap
        var stamp: FileStamp?
    }

    /// What identifies one content of the file without reading it.
    struct FileStamp: Equatable {
        var inode: UInt64
        var size: Int64
        var modified: Date
    }

    /// Reads the map at `path`; throws when it cannot be read or is not valid for `layout`.
    public init(path: String, layout: IDLayout, interval: Duration = .seconds(1), clock: C, logger: Logger, prepare: Prepare? = nil) throws(ShardMapError) {
        self.path = path
        self.layout = layout
        self.interval = interval
        self.clock = clock
        self.logger = logger
        self.prepare = prepare
        let stamp = Self.stamp(of: path)
        let map = try Self.read(path: path, layout: layout)
        state = Mutex(State(map: map, stamp: stamp))
    }

    /// The map in use.
    public var current: ShardMap { state.withLock { $0.map } }

    /// Whether the map in use lists shard `id`, without copying the map (for the ID hot path).
    public func knows(shard id: Int) -> Bool {
        state.withLock { $0.map.knows(shard: id) }
    }

    /// Re-reads the file when its inode, size or modification time changed, and moves to a higher
    /// version after `prepare` succeeds. Returns the map in use afterwards.
    @discardableResult
    public func refreshIfChanged() async -> ShardMap {
        let stamp = Self.stamp(of: path)
        let (unchanged, inUse) = state.withLock { ($0.stamp == stamp && stamp != nil, $0.map) }
        if unchanged { return inUse }
        return await reload(stamp: stamp)
    }

    private func reload(stamp: FileStamp?) async -> ShardMap {
        let inUse = state.withLock { $0.map }
        let map: ShardMap
        do {
            map = try Self.read(path: path, layout: layout)
        } catch {
            logger.error("shard map refused", metadata: ["stamp.shard_map.path": "\(path)", "stamp.error": "\(error)"])
            state.withLock { $0.stamp = stamp }
            return inUse
        }
        if map == inUse {
            state.withLock { $0.stamp = stamp }
            return inUse
        }
        guard map.version > inUse.version else {
            logger.error("shard map refused", metadata: [
                "stamp.shard_map.path": "\(path)", "stamp.error": "version \(map.version) with other content than version \(inUse.version) in use; versions only rise",
            ])
            state.withLock { $0.stamp = stamp }
            return inUse
        }
        if let prepare {
            do {
                try await prepare(map)
            } catch {
                // The stamp stays old, so the next poll tries again.
                logger.error("shard map not applied", metadata: ["stamp.shard_map.version": "\(map.version)", "stamp.error": "\(error)"])
                return inUse
            }
        }
        // A concurrent reload may have published a higher version meanwhile; never go back.
        let applied = state.withLock { state -> Bool in
            guard map.version > state.map.version else { return false }
            state.map = map
            state.stamp = stamp
            return true
        }
        guard applied else { return current }
        logger.notice("shard map applied", metadata: [
            "stamp.shard_map.version": "\(map.version)", "stamp.shard_map.previous_version": "\(inUse.version)", "stamp.shard_map.shards": "\(map.shards.map(\.id).sorted())",
        ])
        return map
    }

    /// Polls the file every `interval` until cancelled or shut down gracefully.
    public func run() async throws {
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                do {
                    try await self.clock.sleep(for: self.interval)
                } catch {
                    return
                }
                await self.refreshIfChanged()
            }
        }
    }

    static func read(path: String, layout: IDLayout) throws(ShardMapError) -> ShardMap {
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw ShardMapError(.unreadable, "cannot read the shard map at \(path)")
        }
        return try ShardMap.decode(data, layout: layout)
    }

    static func stamp(of path: String) -> FileStamp? {
        guard let attributes = try? FileManager.default.attributesOfItem(atPath: path),
              let inode = (attributes[.systemFileNumber] as? NSNumber)?.uint64Value,
              let size = (attributes[.size] as? NSNumber)?.int64Value,
              let modified = attributes[.modificationDate] as? Date
        else { return nil }
        return FileStamp(inode: inode, size: size, modified: modified)
    }
}

extension ShardMap {
    /// Writes the map to `path` atomically (a temporary file renamed over it).
    public func write(to path: String) throws {
        try encoded().write(to: URL(fileURLWithPath: path), options: .atomic)
    }
}
