import StampCore

/// A node ID held under a lease in the coordination store.
public struct NodeLease: Sendable, Hashable {
    /// The node ID written into IDs.
    public let node: Int
    /// The holder: unique for each process start, so a restarted process is a new owner.
    public let owner: String
    /// Where the holder serves, such as `http://10.0.0.5:7400`; `nil` when not advertised.
    public let address: String?
    /// When the lease ends unless renewed, in Unix milliseconds on the store's clock.
    public let expiresAtUnixMilliseconds: Int64
    /// The node never issues an ID whose time (as Unix milliseconds) is at or after this value.
    /// It survives releases and changes of owner, so a new owner starts at or above it.
    public let reservedUntilUnixMilliseconds: Int64

    public init(node: Int, owner: String, address: String?, expiresAtUnixMilliseconds: Int64, reservedUntilUnixMilliseconds: Int64) {
        self.node = node
        self.owner = owner
        self.address = address
        self.expiresAtUnixMilliseconds = expiresAtUnixMilliseconds
        self.reservedUntilUnixMilliseconds = reservedUntilUnixMilliseconds
    }
}

/// Where generator nodes hold their leases and reservations and record the cluster's layout.
///
/// SQLite (one machine), PostgreSQL (several) and etcd (several, surviving the loss of any one)
/// implement the same protocol, and one test suite checks them all. Every operation is atomic. Lease expiry is judged on the store's clock, never on
/// the caller's.
public protocol CoordinationStore: Sendable {
    /// Runs the store's background work, such as a connection pool, until the task is cancelled.
    ///
    /// Other operations may wait until this runs. A store without background work simply waits
    /// for cancellation.
    func run() async throws
    /// Runs the migrations, then records `layout` as the cluster's layout, or checks that it is the one
    /// already recorded (throws ``CoordinationError/Code/layoutMismatch`` otherwise).
    func prepare(layout: IDLayout) async throws(CoordinationError)

    /// Claims the lowest node ID below `nodeCount` whose lease is free or expired, for `ttl`.
    ///
    /// The returned lease carries the node ID's stored reservation, which the claim leaves unchanged:
    /// the new owner must issue only above it. Returns `nil` when every node ID is held.
    func claim(owner: String, address: String?, ttl: Duration, nodeCount: Int) async throws(CoordinationError) -> NodeLease?

    /// Extends the lease of `node` by `ttl` from the store's now and raises its reservation to
    /// `reservedUntilUnixMilliseconds` (never lowers it), only while `owner` still holds the node ID.
    ///
    /// Returns the updated lease, or `nil` when `owner` no longer holds it (another process claimed it).
    func renew(node: Int, owner: String, ttl: Duration, reservedUntilUnixMilliseconds: Int64) async throws(CoordinationError) -> NodeLease?

    /// Ends the lease of `node` now if `owner` holds it, keeping its reservation.
    func release(node: Int, owner: String) async throws(CoordinationError)

    /// The leases that have not expired, by node ID.
    func liveLeases() async throws(CoordinationError) -> [NodeLease]

    /// Closes connections; the store is unusable afterwards.
    func close() async
}

/// A failure of the coordination store.
public struct CoordinationError: Error, Hashable, CustomStringConvertible {
    /// Stable codes for store errors.
    public enum Code: String, Sendable {
        /// The cluster records another layout than this node's.
        case layoutMismatch = "layout-mismatch"
        /// The store could not be reached or answered with an error.
        case unavailable
        /// The store location is malformed.
        case invalidLocation = "invalid-location"
        /// Lease or reservation durations that cannot work together.
        case invalidConfiguration = "invalid-configuration"
    }

    public let code: Code
    /// A message safe to show: it never contains SQL, bound values or credentials.
    public let message: String
    /// The underlying error, for logs at debug level.
    public let cause: (any Error & Sendable)?

    public init(_ code: Code, _ message: String, cause: (any Error & Sendable)? = nil) {
        self.code = code
        self.message = message
        self.cause = cause
    }

    public static func == (lhs: CoordinationError, rhs: CoordinationError) -> Bool {
        lhs.code == rhs.code && lhs.message == rhs.message
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(code)
        hasher.combine(message)
    }

    public var description: String { "coordination store: \(message)" }
}
