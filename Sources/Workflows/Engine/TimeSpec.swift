import Foundation

/// The times a step's `with` may name (`until`, deadlines), §10: epoch seconds, an
/// RFC 3339 timestamp, or a date `YYYY-MM-DD`, which means the end of that day in UTC
/// (a due date includes its day).
public enum TimeSpec {
    /// The latest time accepted: the year 9999 (later values are refused, not wrapped).
    static let latestSeconds: Int64 = 253_402_300_799

    /// The instant `value` names, in milliseconds since the epoch, or `nil` when it names none.
    public static func parse(_ value: JSONValue) -> Int64? {
        switch value {
        case .int(let seconds):
            return (0...latestSeconds).contains(seconds) ? seconds * 1000 : nil
        case .string(let text):
            return parse(text)
        default:
            return nil
        }
    }

    static func parse(_ text: String) -> Int64? {
        let text = text.trimmingSpaces
        guard !text.isEmpty, text.utf8.count <= 64 else { return nil }
        if text.allSatisfy({ $0.isASCII && $0.isNumber }) {
            return Int64(text).flatMap { (0...latestSeconds).contains($0) ? $0 * 1000 : nil }
        }
        if text.utf8.count == 10, let day = date(text) {
            // The end of that day: its last millisecond is still before the deadline.
            return (day + 86_400) * 1000
        }
        return rfc3339(text)
    }

    /// `YYYY-MM-DD` as epoch seconds at 00:00 UTC.
    private static func date(_ text: String) -> Int64? {
        let parts = text.split(separator: "-", omittingEmptySubsequences: false)
        guard parts.count == 3, parts[0].count == 4, parts[1].count == 2, parts[2].count == 2,
              let year = Int(parts[0]), let month = Int(parts[1]), let day = Int(parts[2]),
              (1...12).contains(month), (1...daysIn(month: month, year: year)).contains(day)
        else { return nil }
        return daysFromCivil(year: year, month: month, day: day) * 86_400
    }

    /// `2026-06-30T12:00:00Z`, `2026-06-30T12:00:00.5+02:00` … as epoch milliseconds.
    private static func rfc3339(_ text: String) -> Int64? {
        let bytes = Array(text.utf8)
        guard bytes.count >= 20, let day = date(String(decoding: bytes[0..<10], as: UTF8.self)),
              bytes[10] == UInt8(ascii: "T") || bytes[10] == UInt8(ascii: "t") || bytes[10] == UInt8(ascii: " "),
              bytes[13] == UInt8(ascii: ":"), bytes[16] == UInt8(ascii: ":"),
              let hour = number(bytes[11..<13]), let minute = number(bytes[14..<16]), let second = number(bytes[17..<19]),
              hour < 24, minute < 60, second < 61
        else { return nil }
        var index = 19
        var milliseconds: Int64 = 0
        if bytes[index] == UInt8(ascii: ".") {
            index += 1
            let start = index
            while index < bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[index]) { index += 1 }
            guard index > start, index - start <= 9 else { return nil }
            let digits = bytes[start..<min(index, start + 3)]
            milliseconds = Int64(number(digits) ?? 0) * [100, 10, 1][digits.count - 1]
        }
        guard index < bytes.count else { return nil }
        var offset: Int64 = 0
        switch bytes[index] {
        case UInt8(ascii: "Z"), UInt8(ascii: "z"):
            guard index + 1 == bytes.count else { return nil }
        case UInt8(ascii: "+"), UInt8(ascii: "-"):
            guard index + 6 == bytes.count, bytes[index + 3] == UInt8(ascii: ":"),
                  let hours = number(bytes[(index + 1)..<(index + 3)]), let minutes = number(bytes[(index + 4)..<(index + 6)]),
                  hours < 24, minutes < 60
            else { return nil }
            offset = Int64(hours * 3600 + minutes * 60) * (bytes[index] == UInt8(ascii: "+") ? 1 : -1)
        default:
            return nil
        }
        let seconds = day + Int64(hour * 3600 + minute * 60 + min(second, 59)) - offset
        guard (0...latestSeconds).contains(seconds) else { return nil }
        return seconds * 1000 + milliseconds
    }

    private static func number(_ digits: ArraySlice<UInt8>) -> Int? {
        var value = 0
        for digit in digits {
            guard (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(digit) else { return nil }
            value = value * 10 + Int(digit - UInt8(ascii: "0"))
        }
        return value
    }

    private static func daysIn(month: Int, year: Int) -> Int {
        switch month {
        case 2: (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 ? 29 : 28
        case 4, 6, 9, 11: 30
        default: 31
        }
    }

    /// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
    private static func daysFromCivil(year: Int, month: Int, day: Int) -> Int64 {
        let y = Int64(month <= 2 ? year - 1 : year)
        let era = (y >= 0 ? y : y - 399) / 400
        let yearOfEra = y - era * 400
        let m = Int64(month)
        let dayOfYear = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + Int64(day) - 1
        let dayOfEra = yearOfEra * 365 + yearOfEra / 4 - yearOfEra / 100 + dayOfYear
        return era * 146_097 + dayOfEra - 719_468
    }
}
