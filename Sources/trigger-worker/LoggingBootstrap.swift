import Logging
import Worker

enum LoggingBootstrap {
    /// Sets the process-wide log handler from `LOG_FORMAT` and `LOG_LEVEL`.
    static func bootstrap(_ configuration: WorkerConfiguration) {
        let level = configuration.logLevel
        let format = configuration.logFormat
        LoggingSystem.bootstrap { label in LineLogHandler(label: label, level: level, format: format) }
    }
}
