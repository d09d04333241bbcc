/// Where a database lives: an SQLite file on this machine or a PostgreSQL database.
///
/// Coordination stores, shard databases and the demo all name databases this way, and this is
/// the one place that text is read: `sqlite:PATH`, or `postgres://USER@HOST[:PORT]/DATABASE[?sslmode=...]`
/// (also `postgresql://`; see ``PostgresURL``). In JSON, a location is its text.
///
/// A location that people write (a flag, a variable, a shard map) never holds a password, which
/// would show in process lists, shell histories and configuration files: the password comes from
/// `PGPASSWORD` or a password file (see ``PostgresPasswordSource``).
public enum DatabaseLocation: Sendable, Hashable {
    /// An SQLite file on this machine.
    case sqlite(path: String)
    /// A PostgreSQL database, as a `postgres://` URL; only code can give one with a password.
    case postgres(url: String)

    /// How a refusal of a password in a location says where to put it instead.
    public static let passwordAdvice = "set PGPASSWORD, or write it in a password file (PGPASSFILE, else ~/.pgpass; lines HOST:PORT:DATABASE:USER:PASSWORD, mode 600)"

    /// Reads `sqlite:PATH` or a `postgres://` / `postgresql://` URL without a password.
    ///
    /// The URL is read by ``PostgresURL``; the message of a refusal never repeats the text, which
    /// may be a mistyped URL with a password in it.
    public init(parsing text: String) throws(DatabaseError) {
        if text.hasPrefix("sqlite:") {
            let path = String(text.dropFirst("sqlite:".count))
            guard !path.isEmpty else {
                throw DatabaseError(.invalidLocation, "an SQLite location needs a path, as in sqlite:/var/lib/stamp/coordination.sqlite")
            }
            self = .sqlite(path: path)
        } else if text.hasPrefix("postgres://") || text.hasPrefix("postgresql://") {
            guard try PostgresURL(parsing: text).password == nil else {
                throw DatabaseError(.invalidLocation, "a PostgreSQL location must not hold a password: \(Self.passwordAdvice)")
            }
            self = .postgres(url: text)
        } else {
            throw DatabaseError(.invalidLocation, "a database location must be sqlite:PATH or postgres://USER@HOST[:PORT]/DATABASE")
        }
    }

    /// Whether this is an SQLite file.
    public var isSQLite: Bool {
        if case .sqlite = self { true } else { false }
    }

    /// The same location with a relative SQLite path taken from `folder`; absolute paths, PostgreSQL
    /// URLs and an empty `folder` (the current directory) leave it as it is.
    public func resolvingRelativePath(from folder: String) -> DatabaseLocation {
        guard case .sqlite(let path) = self, !path.hasPrefix("/"), !folder.isEmpty else { return self }
        return .sqlite(path: folder.hasSuffix("/") ? folder + path : folder + "/" + path)
    }

    /// The location as written: `sqlite:PATH` or the URL.
    public var text: String {
        switch self {
        case .sqlite(let path): "sqlite:\(path)"
        case .postgres(let url): url
        }
    }
}

extension DatabaseLocation: Codable {
    /// Reads a location from its text; a refusal's message never repeats the text.
    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        do {
            try self.init(parsing: try container.decode(String.self))
        } catch let error as DatabaseError {
            throw DecodingError.dataCorruptedError(in: container, debugDescription: error.message)
        }
    }

    /// Writes the location's ``text``.
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(text)
    }
}
