import Foundation
import Logging
import Workflows

/// A swift-log handler that writes one line per event to standard error, in the
/// `LOG_FORMAT` of the configuration:
/// - `json`: `{"ts":…,"level":"info","logger":"trigger-worker","msg":"…", <metadata>}`;
/// - `text`, for people: `2026-11-29T12:00:00Z info trigger-worker: message key=value …`,
///   with control characters written as `\u{…}` so that no value can end the line
///   and forge the next one.
///
/// The message and every metadata value are cut to 1 KiB, keys to 255 bytes
/// (``BoundedText``): a log line never carries a payload, whatever a call site passes.
public struct LineLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level
    private let label: String
    private let format: WorkerConfiguration.LogFormat
    private let output: @Sendable (String) -> Void

    public init(label: String, level: Logger.Level, format: WorkerConfiguration.LogFormat, output: @escaping @Sendable (String) -> Void = LineLogHandler.standardError) {
        self.label = label
        self.logLevel = level
        self.format = format
        self.output = output
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        let message = BoundedText.message("\(event.message)")
        let fields = metadata.merging(event.metadata ?? [:]) { _, new in new }
            .sorted { $0.key < $1.key }
            .map { (BoundedText.identifier($0.key), BoundedText.message("\($0.value)")) }
        switch format {
        case .json:
            let line = [("ts", Self.timestamp(fractionalSeconds: true)), ("level", event.level.rawValue), ("logger", label), ("msg", message)] + fields
            output("{" + line.map { "\(Self.quote($0)):\(Self.quote($1))" }.joined(separator: ",") + "}\n")
        case .text:
            var line = "\(Self.timestamp(fractionalSeconds: false)) \(event.level.rawValue) \(label): \(BoundedText.escapingControls(message))"
            for (key, value) in fields { line += " \(BoundedText.escapingControls(key))=\(BoundedText.escapingControls(value))" }
            output(line + "\n")
        }
    }

    /// Writes `line` to standard error in one call, so lines of concurrent loggers do not interleave.
    public static let standardError: @Sendable (String) -> Void = { line in
        FileHandle.standardError.write(Data(line.utf8))
    }

    private static func timestamp(fractionalSeconds: Bool) -> String {
        Date().formatted(.iso8601.year().month().day().dateSeparator(.dash).time(includingFractionalSeconds: fractionalSeconds).timeSeparator(.colon))
    }

    /// `value` as a JSON string literal.
    static func quote(_ value: String) -> String {
        var out = "\""
        for scalar in value.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where scalar.value < 0x20: out += String(format: "\\u%04x", scalar.value)
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }
}
