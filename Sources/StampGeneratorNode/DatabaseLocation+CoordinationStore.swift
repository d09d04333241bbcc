import Logging
import StampCoordination
import StampCoordinationPostgres
import StampCoordinationSQLite
import StampDatabase

extension DatabaseLocation {
    /// Reads a coordination store's location, refusing it as the store would.
    public static func coordinationStore(parsing text: String) throws(CoordinationError) -> DatabaseLocation {
        do {
            return try DatabaseLocation(parsing: text)
        } catch {
            throw CoordinationError(.invalidLocation, "the store location: \(error.message)")
        }
    }

    /// Creates the coordination store this location names; it still has to be run and prepared.
    public func makeCoordinationStore(logger: Logger) throws(CoordinationError) -> any CoordinationStore {
        switch self {
        case .sqlite(let path):
            SQLiteCoordinationStore(path: path, logger: logger)
        case .postgres(let url):
            PostgresCoordinationStore(configuration: try PostgresCoordinationStore.configuration(url: url), logger: logger)
        }
    }
}
