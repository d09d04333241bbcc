import StampCore

/// A change to record: the body of `POST /v1/users/{userId}/events`.
public struct AuditEventWrite: Codable, Sendable, Equatable {
    /// The name of the changed field.
    public var field: String
    /// The value before the change; `null` when the field had none.
    public var before: String?
    /// The value after the change; `null` when the change removed it.
    public var after: String?
    /// Who made the change.
    public var actor: String
    /// Why; absent means none.
    public var reason: String?

    public init(field: String, before: String?, after: String?, actor: String, reason: String? = nil) {
        self.field = field
        self.before = before
        self.after = after
        self.actor = actor
        self.reason = reason
    }

    enum CodingKeys: String, CodingKey { case field, before, after, actor, reason }

    /// Encodes `before` and `after` as `null` when absent, and `reason` only when given.
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(field, forKey: .field)
        try container.encode(before, forKey: .before)
        try container.encode(after, forKey: .after)
        try container.encode(actor, forKey: .actor)
        try container.encodeIfPresent(reason, forKey: .reason)
    }
}

/// One recorded event as the audit API shows it.
public struct AuditEvent: Codable, Sendable, Equatable {
    /// The values of a change, shown to readers only.
    public struct Values: Sendable, Equatable {
        /// The value before the change; `null` when the field had none.
        public var before: String?
        /// The value after the change; `null` when the change removed it.
        public var after: String?

        public init(before: String?, after: String?) {
            self.before = before
            self.after = after
        }
    }

    /// The event's ID, a Stamp ID whose shard field names the shard it lives in.
    public var id: StampID
    public var userId: String
    public var field: String
    public var actor: String
    public var reason: String
    public var shard: Int
    /// The ID's time as an RFC 3339 instant.
    public var recordedAt: String
    /// The values, for readers; `nil` for writers and for erased values, and then absent from the document.
    public var values: Values?
    /// Whether the user's personal data was erased since: the values are gone for good (the
    /// document then says `"erased": true` instead of `before` and `after`). Readers only.
    public var erased: Bool

    public init(id: StampID, userId: String, field: String, actor: String, reason: String, shard: Int, recordedAt: String, values: Values?, erased: Bool = false) {
        self.id = id
        self.userId = userId
        self.field = field
        self.actor = actor
        self.reason = reason
        self.shard = shard
        self.recordedAt = recordedAt
        self.values = values
        self.erased = erased
    }

    enum CodingKeys: String, CodingKey { case id, userId, field, actor, reason, shard, recordedAt, before, after, erased }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        id = try container.decode(StampID.self, forKey: .id)
        userId = try container.decode(String.self, forKey: .userId)
        field = try container.decode(String.self, forKey: .field)
        actor = try container.decode(String.self, forKey: .actor)
        reason = try container.decode(String.self, forKey: .reason)
        shard = try container.decode(Int.self, forKey: .shard)
        recordedAt = try container.decode(String.self, forKey: .recordedAt)
        if container.contains(.before) || container.contains(.after) {
            values = Values(before: try container.decodeIfPresent(String.self, forKey: .before), after: try container.decodeIfPresent(String.self, forKey: .after))
        } else {
            values = nil
        }
        erased = try container.decodeIfPresent(Bool.self, forKey: .erased) ?? false
    }

    /// Encodes the values only when present, each as `null` when the change had none.
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(id, forKey: .id)
        try container.encode(userId, forKey: .userId)
        try container.encode(field, forKey: .field)
        try container.encode(actor, forKey: .actor)
        try container.encode(reason, forKey: .reason)
        try container.encode(shard, forKey: .shard)
        try container.encode(recordedAt, forKey: .recordedAt)
        if let values {
            try container.encode(values.before, forKey: .before)
            try container.encode(values.after, forKey: .after)
        }
        if erased {
            try container.encode(true, forKey: .erased)
        }
    }
}

/// A page of a user's history, newest first: the answer of `GET /v1/users/{userId}/events`.
public struct AuditEventPage: Codable, Sendable, Equatable {
    public var events: [AuditEvent]
    /// The cursor of the following page (pass it as `before`); absent on the last page.
    public var next: StampID?

    public init(events: [AuditEvent], next: StampID?) {
        self.events = events
        self.next = next
    }
}

/// One entry of the access log: a request that returned personal-data values to a reader.
public struct AuditAccessLogEntry: Codable, Sendable, Equatable {
    /// When it was answered, as an RFC 3339 instant.
    public var recordedAt: String
    /// Who asked: the role and a fingerprint of its token, such as `reader sha256:1a2b3c4d5e6f`.
    public var reader: String
    /// Whose values were returned.
    public var userId: String
    /// What was asked: the method, the path and the query.
    public var request: String
    /// The events whose values were returned.
    public var events: [StampID]

    public init(recordedAt: String, reader: String, userId: String, request: String, events: [StampID]) {
        self.recordedAt = recordedAt
        self.reader = reader
        self.userId = userId
        self.request = request
        self.events = events
    }
}

/// The answer of `GET /v1/users/{userId}/access-log`: entries newest first.
public struct AuditAccessLog: Codable, Sendable, Equatable {
    public var entries: [AuditAccessLogEntry]

    public init(entries: [AuditAccessLogEntry]) {
        self.entries = entries
    }
}

/// Who holds the token a request carries: the answer of `GET /v1/caller`.
public struct AuditCaller: Codable, Sendable, Equatable {
    /// `writer`, `reader` or `admin`.
    public var role: String
    /// How the access log and erasure events name the token's holder, such as
    /// `reader sha256:1a2b3c4d5e6f`.
    public var identity: String

    public init(role: String, identity: String) {
        self.role = role
        self.identity = identity
    }
}

/// The latest event of each field a user has changed, by field name: the answer of
/// `GET /v1/users/{userId}/fields`.
public struct AuditLatestFields: Codable, Sendable, Equatable {
    public var events: [AuditEvent]

    public init(events: [AuditEvent]) {
        self.events = events
    }
}

/// The state of every shard's hash chain: the answer of `GET /v1/shards`.
public struct AuditShardList: Codable, Sendable, Equatable {
    /// The version of the shard map whose shards are listed.
    public var shardMapVersion: Int
    public var shards: [AuditShardState]

    public init(shardMapVersion: Int, shards: [AuditShardState]) {
        self.shardMapVersion = shardMapVersion
        self.shards = shards
    }
}

/// One shard's hash chain at a glance: its head, its newest signed checkpoint and whether they agree.
public struct AuditShardState: Codable, Sendable, Equatable {
    /// The newest checkpoint of a shard, and what the quick look found about it.
    public struct Checkpoint: Codable, Sendable, Equatable {
        public var rows: Int64
        public var lastId: StampID?
        /// When it was signed, as an RFC 3339 instant.
        public var signedAt: String
        /// Whether its signature verifies: with the server's signing key when it has one, else
        /// with the key the checkpoint names.
        public var signatureValid: Bool
        /// Whether the row the checkpoint ends at still carries the head hash it signed.
        public var reached: Bool

        public init(rows: Int64, lastId: StampID?, signedAt: String, signatureValid: Bool, reached: Bool) {
            self.rows = rows
            self.lastId = lastId
            self.signedAt = signedAt
            self.signatureValid = signatureValid
            self.reached = reached
        }
    }

    public var shard: Int
    /// Rows in the chain, as the shard's head row records it; absent when the shard could not be read.
    public var rows: Int64?
    /// The ID of the row last chained.
    public var lastId: StampID?
    /// The hash of the row last chained, in hex.
    public var head: String?
    /// The newest signed checkpoint; absent before the first.
    public var checkpoint: Checkpoint?
    /// What the quick look found wrong: the checkpoint's signature, or a chain that no longer reaches it.
    public var problem: String?
    /// Why the shard could not be read.
    public var error: String?

    public init(shard: Int, rows: Int64?, lastId: StampID?, head: String?, checkpoint: Checkpoint?, problem: String?, error: String?) {
        self.shard = shard
        self.rows = rows
        self.lastId = lastId
        self.head = head
        self.checkpoint = checkpoint
        self.problem = problem
        self.error = error
    }
}

/// The outcome of recomputing one shard's whole chain: the answer of
/// `POST /v1/shards/{shardId}/verification`, what `stamp audit verify` finds for that shard.
public struct AuditShardVerification: Codable, Sendable, Equatable {
    /// Where the chain first breaks.
    public struct Problem: Codable, Sendable, Equatable {
        /// `edited`, `removed`, `out-of-place`, `unchained`, `truncated`, `head-mismatch` or `bad-signature`.
        public var kind: String
        public var position: Int64
        public var id: StampID?
        public var detail: String

        public init(kind: String, position: Int64, id: StampID?, detail: String) {
            self.kind = kind
            self.position = position
            self.id = id
            self.detail = detail
        }
    }

    public var shard: Int
    /// Whether the whole chain, its head row and its checkpoints verify.
    public var verified: Bool
    /// Rows walked.
    public var rows: Int64
    /// Checkpoints checked.
    public var checkpoints: Int
    /// The first problem, absent when the shard verifies.
    public var problem: Problem?
    /// How long the walk took, in milliseconds.
    public var durationMs: Int64

    public init(shard: Int, verified: Bool, rows: Int64, checkpoints: Int, problem: Problem?, durationMs: Int64) {
        self.shard = shard
        self.verified = verified
        self.rows = rows
        self.checkpoints = checkpoints
        self.problem = problem
        self.durationMs = durationMs
    }
}
