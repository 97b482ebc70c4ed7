/// Cuts text that an input controls to a size every output can afford, and
/// writes text for logs and headers without control characters.
public enum BoundedText {
    /// The most bytes of an identifier (an org id, an event id, a name) echoed in a
    /// message or a log line.
    public static let identifierBytes = 255
    /// The most bytes of a message: `error-message`, a step's message, a log message.
    public static let messageBytes = 1024

    /// `text` when it has at most `maxBytes` bytes of UTF-8; otherwise its longest
    /// prefix of whole characters that fits with a trailing `…`.
    public static func cut(_ text: String, maxBytes: Int) -> String {
        guard text.utf8.count > maxBytes else { return text }
        let ellipsis = "…"
        let budget = max(0, maxBytes - ellipsis.utf8.count)
        var used = 0
        var end = text.unicodeScalars.startIndex
        for index in text.unicodeScalars.indices {
            let width = UTF8.width(text.unicodeScalars[index])
            if used + width > budget { break }
            used += width
            end = text.unicodeScalars.index(after: index)
        }
        return String(text.unicodeScalars[..<end]) + ellipsis
    }

    /// An identifier for a message or a log line: cut to ``identifierBytes``.
    public static func identifier(_ text: String) -> String { cut(text, maxBytes: identifierBytes) }

    /// A message: cut to ``messageBytes``.
    public static func message(_ text: String) -> String { cut(text, maxBytes: messageBytes) }

    /// `text` with every control character (C0, DEL, C1) written as `\u{…}`, so that
    /// a value cannot start a new log line or hide what follows it.
    public static func escapingControls(_ text: String) -> String {
        guard text.unicodeScalars.contains(where: isControl) else { return text }
        var out = ""
        out.unicodeScalars.reserveCapacity(text.unicodeScalars.count + 8)
        for scalar in text.unicodeScalars {
            if isControl(scalar) {
                out += "\\u{\(String(scalar.value, radix: 16))}"
            } else {
                out.unicodeScalars.append(scalar)
            }
        }
        return out
    }

    /// C0 controls, DEL and C1 controls.
    public static func isControl(_ scalar: Unicode.Scalar) -> Bool {
        scalar.value < 0x20 || (0x7F...0x9F).contains(scalar.value)
    }
}
