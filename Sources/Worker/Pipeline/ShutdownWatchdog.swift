import Foundation
import Logging
import ServiceLifecycle

/// Bounds how long the process takes to stop: once shutdown begins (SIGTERM or
/// SIGINT, or a service failed and the group is cancelled), the process exits
/// within `SHUTDOWN_GRACE` whatever else still waits, a broker that does not
/// answer or a delivery report that never comes.
///
/// What is committed stays committed: offsets are committed only after the
/// store's transaction, so a forced exit loses nothing the store does not hold.
///
/// It is the last service of the group, so it hears of a graceful shutdown first.
public struct ShutdownWatchdog: Service {
    private let grace: Duration
    private let logger: Logger
    private let expire: @Sendable () -> Void

    /// - Parameter expire: what happens when the grace is over; by default the
    ///   process exits with status 1.
    public init(grace: Duration, logger: Logger, expire: (@Sendable () -> Void)? = nil) {
        self.grace = grace
        self.logger = logger
        self.expire = expire ?? { ShutdownWatchdog.exitNow(status: 1) }
    }

    public func run() async throws {
        // Returns on graceful shutdown, throws on cancellation: either way, shutdown began.
        try? await gracefulShutdown()
        arm()
    }

    /// Starts the clock on a thread of its own: the cooperative pool may be the thing that is stuck.
    private func arm() {
        let grace = self.grace
        let logger = self.logger
        let expire = self.expire
        logger.info("Shutting down", metadata: ["shutdown_grace": "\(grace)"])
        Thread.detachNewThread {
            Thread.sleep(forTimeInterval: Double(grace.components.seconds) + Double(grace.components.attoseconds) / 1e18)
            logger.critical("Shutdown did not finish within SHUTDOWN_GRACE; exiting now (what the store holds is kept; uncommitted offsets are redelivered)", metadata: [
                "shutdown_grace": "\(grace)",
            ])
            expire()
        }
    }

    /// Exits at once, without running anything else of the process's (a hung
    /// librdkafka thread must not hold the exit up).
    public static func exitNow(status: Int32) -> Never {
        fflush(nil)  // every stdio stream
        _exit(status)
    }
}
