import Logging
import StampCoordination
import StampCoordinationEtcd
import StampCoordinationPostgres
import StampCoordinationSQLite
import StampDatabase

/// Where a generator node's coordination store lives: an SQLite file, a PostgreSQL database, or an
/// etcd cluster.
///
/// This is the one reader of a store location: `sqlite:PATH` and `postgres://...` as
/// ``DatabaseLocation`` reads them, `etcd://...` and `etcds://...` as ``EtcdLocation`` does.
public enum CoordinationStoreLocation: Sendable, Hashable {
    /// An SQLite file or a PostgreSQL database.
    case database(DatabaseLocation)
    /// An etcd cluster.
    case etcd(EtcdLocation)

    /// Reads a coordination store's location, refusing it as the store would.
    public init(parsing text: String) throws(CoordinationError) {
        if EtcdLocation.isEtcdLocation(text) {
            self = .etcd(try EtcdLocation(parsing: text))
            return
        }
        do {
            self = .database(try DatabaseLocation(parsing: text))
        } catch {
            throw CoordinationError(.invalidLocation, "the store location: \(error.message); or etcd://HOST:PORT[,HOST:PORT...][/PREFIX]")
        }
    }

    /// The location as written.
    public var text: String {
        switch self {
        case .database(let location): location.text
        case .etcd(let location): location.description
        }
    }

    /// Creates the coordination store this location names; it still has to be run and prepared.
    public func makeCoordinationStore(logger: Logger) throws(CoordinationError) -> any CoordinationStore {
        switch self {
        case .database(.sqlite(let path)):
            SQLiteCoordinationStore(path: path, logger: logger)
        case .database(.postgres(let url)):
            PostgresCoordinationStore(configuration: try PostgresCoordinationStore.configuration(url: url), logger: logger)
        case .etcd(let location):
            EtcdCoordinationStore(settings: try EtcdConnectionSettings(location: location), logger: logger)
        }
    }
}
