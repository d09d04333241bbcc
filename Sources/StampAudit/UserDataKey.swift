import Crypto
import Foundation

/// One generation of a user's data key: the AES-256 key that seals the values of that user's rows.
///
/// Generation 1 is the user's first key; an erasure destroys every generation, and a later write of
/// the user makes the next one. Generation 0 is never a key: a shard records an erasure with it.
public struct UserDataKey: Sendable {
    public let generation: Int
    let key: SymmetricKey

    init(generation: Int, key: SymmetricKey) {
        self.generation = generation
        self.key = key
    }

    /// A new random key of `generation`.
    public static func random(generation: Int) -> UserDataKey {
        UserDataKey(generation: generation, key: SymmetricKey(size: .bits256))
    }

    /// The largest generation a sealed value can name.
    public static let maxGeneration = Int(UInt32.max)
}

/// A user's data key as a shard stores it: wrapped by the master key, or destroyed.
public struct StoredUserKey: Sendable, Equatable {
    public var user: String
    public var generation: Int
    /// The key wrapped by the master key (see ``ValueSealer/wrap(_:user:)``); `nil` once erased.
    public var wrapped: [UInt8]?

    public init(user: String, generation: Int, wrapped: [UInt8]?) {
        self.user = user
        self.generation = generation
        self.wrapped = wrapped
    }

    /// The user name under which a shard keeps the master key its rows of the first format were
    /// sealed with, once ``ValueSealer`` rotated away from it: no user ID is empty.
    public static let legacyKeyOwner = ""
}

/// What a reader knows of one user's data keys, gathered from every shard that may hold their rows.
public struct UserKeyring: Sendable {
    /// The keys that are not destroyed, by generation.
    var keys: [Int: UserDataKey]
    /// The generations an erasure destroyed; 0 among them once the user was ever erased.
    var destroyed: Set<Int>
    /// The keys the rows of the first format may be sealed with: the master key kept when it was
    /// rotated, the master key, the previous master key.
    var legacyKeys: [SymmetricKey]

    /// Whether an erasure destroyed the user's keys.
    public var isErased: Bool { destroyed.contains(0) }

    /// The key of `generation`, unless it was destroyed or is not known.
    public func key(generation: Int) -> UserDataKey? { keys[generation] }
}

/// A stored value as a reader sees it.
public enum OpenedValue: Sendable, Equatable {
    case value(String)
    /// The key that sealed it was destroyed by an erasure.
    case erased
}
