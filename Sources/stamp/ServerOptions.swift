import ArgumentParser
import Foundation
import Logging
import Metrics
import Prometheus

/// Reading a server command's options: each flag, else the environment variable named after it.
struct OptionValues {
    let environment = ProcessInfo.processInfo.environment

    /// The flag's text, else the variable's.
    func text(_ flag: String?, _ variable: String) -> String? {
        flag ?? environment[variable]
    }

    /// A secret from the file the flag (else `fileVariable`) names, else from `variable`; trailing
    /// newlines of a file are dropped. Secrets never come from the command line itself.
    func secret(file flag: String?, fileVariable: String, variable: String) throws -> String? {
        if let path = text(flag, fileVariable) {
            guard let contents = try? String(contentsOfFile: path, encoding: .utf8) else { throw ValidationError("cannot read the file \(path)") }
            return String(contents.reversed().drop { $0.isNewline }.reversed())
        }
        return environment[variable]
    }

    /// The flag's number, else the variable's; either must lie in `range`.
    func integer(_ flag: Int?, _ variable: String, option: String, range: ClosedRange<Int>) throws -> Int? {
        let number = try flag ?? environment[variable].map { text in
            guard let number = Int(text) else { throw ValidationError("\(variable) must be a whole number") }
            return number
        }
        if let number, !range.contains(number) {
            throw ValidationError("\(option) must be between \(range.lowerBound) and \(range.upperBound)")
        }
        return number
    }

    /// A `host:port` address; port 0 binds a free port.
    static func listenAddress(_ text: String, example: String) throws -> (host: String, port: Int) {
        guard let colon = text.lastIndex(of: ":"), colon > text.startIndex, let port = Int(text[text.index(after: colon)...]), (0...65535).contains(port) else {
            throw ValidationError("--listen must be host:port, such as \(example); got '\(text)'")
        }
        return (String(text[..<colon]), port)
    }

    /// A log level by name.
    static func logLevel(_ text: String) throws -> Logger.Level {
        guard let level = Logger.Level(rawValue: text) else { throw ValidationError("--log-level must be one of trace, debug, info, notice, warning, error, critical") }
        return level
    }
}

/// The process-wide logging and metrics of a server command: logs to standard error at `level`,
/// metrics to a Prometheus registry that `/metrics` renders.
enum ServerObservability {
    /// The log level of the server commands when none is given.
    static let defaultLevel = Logger.Level.info

    static func bootstrap(label: String, level: Logger.Level) -> (Logger, PrometheusCollectorRegistry) {
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
        var logger = Logger(label: label)
        logger.logLevel = level
        return (logger, registry)
    }
}
