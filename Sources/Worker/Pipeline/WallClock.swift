import Foundation
import Store

/// The time the pipeline decides with; tests inject their own.
public protocol WallClock: Sendable {
    /// Milliseconds since the Unix epoch.
    func now() -> Timestamp
}

/// The system clock.
public struct SystemWallClock: WallClock {
    public init() {}
    public func now() -> Timestamp { Timestamp(Date().timeIntervalSince1970 * 1000) }
}
