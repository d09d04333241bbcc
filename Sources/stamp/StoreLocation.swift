import Logging
import StampCoordination
import StampCoordinationPostgres
import StampCoordinationSQLite

/// Where the coordination store lives, as given on the command line.
enum StoreLocation: Equatable {
    /// An SQLite file on this machine.
    case sqlite(path: String)
    /// A PostgreSQL database, as a `postgres://` URL that may carry a password.
    case postgres(url: String)

    /// Reads `sqlite:PATH`, `postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE` or the same with `postgresql://`.
    init(parsing text: String) throws(CoordinationError) {
        if text.hasPrefix("sqlite:") {
            let path = String(text.dropFirst("sqlite:".count))
            guard !path.isEmpty else {
                throw CoordinationError(.invalidLocation, "the SQLite store location needs a path, as in sqlite:/var/lib/stamp/coordination.sqlite")
            }
            self = .sqlite(path: path)
        } else if text.hasPrefix("postgres://") || text.hasPrefix("postgresql://") {
            self = .postgres(url: text)
        } else {
            // The text is not repeated: it may be a mistyped URL with a password in it.
            throw CoordinationError(
                .invalidLocation,
                "the store location must be sqlite:PATH or postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE"
            )
        }
    }

    /// Creates the store this location names; it still has to be run and prepared.
    func makeStore(logger: Logger) throws(CoordinationError) -> any CoordinationStore {
        switch self {
        case .sqlite(let path):
            SQLiteCoordinationStore(path: path, logger: logger)
        case .postgres(let url):
            PostgresCoordinationStore(configuration: try PostgresCoordinationStore.configuration(url: url), logger: logger)
        }
    }
}
