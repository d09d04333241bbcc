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
/// A map may also come from elsewhere (``offer(_:)``: an audit server reads the newest version
/// its shards hold), and `prepare` may answer that a newer version exists (by throwing
/// ``NewerShardMapFound``): the source then moves to that one.
///
/// Run it as a `Service` to prepare the map in use (trying again every `interval` until it
/// works) and then poll the file every `interval`; ``refreshIfChanged()`` also lets a caller that
/// meets an unknown shard check the file at once.
public final class ShardMapSource<C: Clock<Duration>>: Service, Sendable {
    public typealias Prepare = @Sendable (ShardMap) async throws -> Void

    /// The file the map is read from.
    public let path: String
    public let layout: IDLayout
    private let interval: Duration
    /// The clock the file is polled on.
    public let clock: C
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
        return await apply(map, stamp: stamp)
    }

    /// Moves to `map` when its version is higher than the one in use, after `prepare` succeeds;
    /// returns the map in use afterwards.
    @discardableResult
    public func offer(_ map: ShardMap) async -> ShardMap {
        let inUse = current
        guard map.version > inUse.version else { return inUse }
        return await apply(map, stamp: nil)
    }

    /// Publishes `map` (a higher version than the one in use) once `prepare` succeeds, recording
    /// `stamp` as the file's when it came from the file; moves on to a newer map `prepare` found.
    private func apply(_ map: ShardMap, stamp: FileStamp?) async -> ShardMap {
        let inUse = current
        if let prepare {
            do {
                try await prepare(map)
            } catch let found as NewerShardMapFound where found.map.version > map.version {
                logger.notice("newer shard map found", metadata: [
                    "stamp.shard_map.version": "\(found.map.version)", "stamp.shard_map.skipped_version": "\(map.version)", "stamp.shard": "\(found.shard)",
                ])
                if stamp != nil { state.withLock { $0.stamp = stamp } }
                return await apply(found.map, stamp: nil)
            } catch {
                // The stamp stays old, so the next poll tries again.
                logger.error("shard map not applied", metadata: ["stamp.shard_map.version": "\(map.version)", "stamp.error": "\(error)"])
                return inUse
            }
        }
        // A concurrent reload may have published a higher version meanwhile; never go back.
        let applied = state.withLock { state -> Bool in
            if stamp != nil { state.stamp = stamp }
            guard map.version > state.map.version else { return false }
            state.map = map
            return true
        }
        guard applied else { return current }
        logger.notice("shard map applied", metadata: [
            "stamp.shard_map.version": "\(map.version)", "stamp.shard_map.previous_version": "\(inUse.version)", "stamp.shard_map.shards": "\(map.shards.map(\.id).sorted())",
        ])
        return map
    }

    /// Prepares the map in use (the file's, at first) until that works or a newer map `prepare`
    /// found is published; then the map's shards serve.
    private func prepareInUse() async {
        guard let prepare else { return }
        while !Task.isCancelled {
            let map = current
            do {
                try await prepare(map)
                return
            } catch let found as NewerShardMapFound where found.map.version > map.version {
                if await apply(found.map, stamp: nil).version >= found.map.version { return }
            } catch {
                logger.debug("shard map not prepared yet", metadata: ["stamp.shard_map.version": "\(map.version)", "stamp.error": "\(error)"])
            }
            do {
                try await clock.sleep(for: interval)
            } catch {
                return
            }
        }
    }

    /// Prepares the map in use, then polls the file every `interval`, until cancelled or shut down gracefully.
    public func run() async throws {
        await cancelWhenGracefulShutdown {
            await self.prepareInUse()
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

/// Thrown by a shard map source's `prepare` when a shard holds a newer version of the map than
/// the one being prepared: the source moves to `map` instead.
public struct NewerShardMapFound: Error, Sendable {
    public let map: ShardMap
    /// The shard that holds it.
    public let shard: Int

    public init(map: ShardMap, shard: Int) {
        self.map = map
        self.shard = shard
    }
}

extension ShardMap {
    /// Writes the map to `path` atomically (a temporary file renamed over it).
    public func write(to path: String) throws {
        try encoded().write(to: URL(fileURLWithPath: path), options: .atomic)
    }
}
