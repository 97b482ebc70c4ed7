import Foundation
import Logging
import Workflows

/// A swift-log handler for people (`LOG_FORMAT=text`): one line per event on
/// standard error, `2026-11-29T12:00:00Z info trigger-worker: message key=value …`.
///
/// Control characters in the message, keys and values are written as `\u{…}`, so
/// that no value can end the line and forge the next one; the message and each
/// value are cut to 1 KiB.
public struct TextLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level
    private let label: String
    private let output: @Sendable (String) -> Void

    public init(label: String, level: Logger.Level, output: @escaping @Sendable (String) -> Void = JSONLogHandler.standardError) {
        self.label = label
        self.logLevel = level
        self.output = output
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var line = "\(Self.timestamp()) \(event.level.rawValue) \(label): \(Self.clean("\(event.message)"))"
        let merged = metadata.merging(event.metadata ?? [:]) { _, new in new }
        for (key, value) in merged.sorted(by: { $0.key < $1.key }) {
            line += " \(Self.clean(BoundedText.identifier(key)))=\(Self.clean("\(value)"))"
        }
        output(line + "\n")
    }

    /// `text` cut to 1 KiB, with its control characters escaped.
    static func clean(_ text: String) -> String {
        BoundedText.escapingControls(BoundedText.message(text))
    }

    private static func timestamp() -> String {
        Date().formatted(.iso8601.year().month().day().dateSeparator(.dash).time(includingFractionalSeconds: false).timeSeparator(.colon))
    }
}
