/// Parses the duration syntax of the configuration: a whole number and a unit,
/// `500ms`, `5s`, `10m`, `24h` or `7d`.
public enum DurationParser {
    /// The longest duration accepted: 100 years. Longer values (and those whose
    /// arithmetic would overflow) are refused, not wrapped or trapped on.
    public static let maximum: Duration = .seconds(100 * 365 * 86400)

    public static func parse(_ text: String) -> Duration? {
        let trimmed = text.trimmingSpaces
        let digits = trimmed.prefix { $0.isASCII && $0.isNumber }
        guard !digits.isEmpty, let amount = Int64(digits) else { return nil }
        let unit: (milliseconds: Int64, make: (Int64) -> Duration)
        switch trimmed.dropFirst(digits.count) {
        case "ms": unit = (1, { .milliseconds($0) })
        case "s": unit = (1000, { .seconds($0) })
        case "m": unit = (60_000, { .seconds($0 * 60) })
        case "h": unit = (3_600_000, { .seconds($0 * 3600) })
        case "d": unit = (86_400_000, { .seconds($0 * 86400) })
        default: return nil
        }
        let (milliseconds, overflow) = amount.multipliedReportingOverflow(by: unit.milliseconds)
        guard !overflow, milliseconds <= maximum.wholeMilliseconds else { return nil }
        return unit.make(amount)
    }

    /// The shortest form that parses back to `duration` (`24h`, `90s`, `1500ms`).
    public static func format(_ duration: Duration) -> String {
        let milliseconds = duration.wholeMilliseconds
        guard milliseconds % 1000 == 0 else { return "\(milliseconds)ms" }
        let seconds = milliseconds / 1000
        for (unit, size) in [("d", Int64(86400)), ("h", 3600), ("m", 60)] where seconds >= size && seconds % size == 0 {
            return "\(seconds / size)\(unit)"
        }
        return "\(seconds)s"
    }
}

extension DurationParser {
    /// The duration in words, for messages: `24 hours`, `10 minutes`, `7 days`, `1 second`.
    public static func spoken(_ duration: Duration) -> String {
        let milliseconds = duration.wholeMilliseconds
        func words(_ count: Int64, _ unit: String) -> String { "\(count) \(unit)\(count == 1 ? "" : "s")" }
        guard milliseconds % 1000 == 0 else { return words(milliseconds, "millisecond") }
        let seconds = milliseconds / 1000
        // Hours up to two days read better than days (the contract's "24 hours").
        if seconds % 3600 == 0, seconds <= 48 * 3600 { return words(seconds / 3600, "hour") }
        if seconds % 86400 == 0 { return words(seconds / 86400, "day") }
        if seconds % 3600 == 0 { return words(seconds / 3600, "hour") }
        if seconds % 60 == 0 { return words(seconds / 60, "minute") }
        return words(seconds, "second")
    }
}

extension String {
    public var trimmingSpaces: String {
        String(drop { $0.isWhitespace }.reversed().drop { $0.isWhitespace }.reversed())
    }
}

extension Duration {
    /// The duration in whole milliseconds, rounded down (the Kafka module has the same
    /// as `milliseconds`; this module does not depend on it).
    public var wholeMilliseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1000 + attoseconds / 1_000_000_000_000_000
    }
}
