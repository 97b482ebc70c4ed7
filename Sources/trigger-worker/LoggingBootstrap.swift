import Logging
import Worker

enum LoggingBootstrap {
    /// Sets the process-wide log handler from `LOG_FORMAT` and `LOG_LEVEL`.
    static func bootstrap(_ configuration: WorkerConfiguration) {
        let level = configuration.logLevel
        switch configuration.logFormat {
        case .json:
            LoggingSystem.bootstrap { label in JSONLogHandler(label: label, level: level) }
        case .text:
            LoggingSystem.bootstrap { label in TextLogHandler(label: label, level: level) }
        }
    }
}
