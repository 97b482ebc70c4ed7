import Foundation

/// Outbox messages in one blob: for each, the topic, the key (or none), the value
/// and the headers, each length-prefixed (big-endian).
enum OutboxCoding {
    /// The most messages one outbox entry holds.
    static let maxMessagesPerEntry = 1000
    /// An entry is closed once it holds this many bytes: a batch of large messages
    /// becomes several entries, each well within a database's blob limit and a
    /// publishing round's memory.
    static let maxBytesPerEntry = 16 << 20

    /// `messages` cut into entries (see ``Swift/Sequence/outboxEntries(maxMessages:maxBytes:)``).
    static func entries(_ messages: [OutboxMessage]) -> [(source: PartitionID?, messages: ArraySlice<OutboxMessage>)] {
        messages.outboxEntries(maxMessages: maxMessagesPerEntry, maxBytes: maxBytesPerEntry)
    }

    /// Packs `messages` into one blob: a 4-byte count, then per message its topic,
    /// a key flag and key, value and headers, each field a 4-byte length and its
    /// bytes. A batch's blob runs to megabytes: it is sized exactly and written in
    /// place, not grown and copied.
    static func encode(_ messages: ArraySlice<OutboxMessage>) -> Data {
        var size = 4
        for message in messages {
            size += 4 + message.topic.utf8.count + 1 + (message.key.map { 4 + $0.count } ?? 0) + 4 + message.value.count + 4
            for header in message.headers { size += 8 + header.name.utf8.count + header.value.count }
        }
        var data = Data(count: size)
        data.withUnsafeMutableBytes { buffer in
            var writer = Writer(buffer: buffer)
            writer.integer(messages.count)
            for message in messages {
                writer.field(message.topic)
                if let key = message.key {
                    writer.byte(1)
                    writer.field(key)
                } else {
                    writer.byte(0)
                }
                writer.field(message.value)
                writer.integer(message.headers.count)
                for header in message.headers {
                    writer.field(header.name)
                    writer.field(header.value)
                }
            }
            precondition(writer.position == size, "the outbox blob was sized wrong")
        }
        return data
    }

    private struct Writer {
        let buffer: UnsafeMutableRawBufferPointer
        var position = 0

        mutating func byte(_ value: UInt8) {
            buffer[position] = value
            position += 1
        }

        mutating func integer(_ value: Int) {
            buffer.storeBytes(of: UInt32(value).bigEndian, toByteOffset: position, as: UInt32.self)
            position += 4
        }

        mutating func field(_ bytes: [UInt8]) {
            bytes.withUnsafeBytes { field($0) }
        }

        mutating func field(_ text: String) {
            var text = text
            text.withUTF8 { field(UnsafeRawBufferPointer($0)) }
        }

        private mutating func field(_ bytes: UnsafeRawBufferPointer) {
            integer(bytes.count)
            UnsafeMutableRawBufferPointer(rebasing: buffer[position...]).copyMemory(from: bytes)
            position += bytes.count
        }
    }

    static func decode(_ bytes: [UInt8]) -> [OutboxMessage] {
        var reader = Reader(bytes: bytes)
        guard let count = reader.integer(4) else { return [] }
        var messages: [OutboxMessage] = []
        messages.reserveCapacity(count)
        for _ in 0..<count {
            guard let topic = reader.field(), let hasKey = reader.integer(1) else { break }
            let key = hasKey == 1 ? reader.field() : nil
            guard let value = reader.field(), let headerCount = reader.integer(4) else { break }
            var headers: [OutboxHeader] = []
            for _ in 0..<headerCount {
                guard let name = reader.field(), let headerValue = reader.field() else { break }
                headers.append(OutboxHeader(name: String(decoding: name, as: UTF8.self), value: headerValue))
            }
            messages.append(OutboxMessage(topic: String(decoding: topic, as: UTF8.self), key: key, value: value, headers: headers))
        }
        return messages
    }

    private struct Reader {
        let bytes: [UInt8]
        var index = 0

        mutating func integer(_ width: Int) -> Int? {
            guard index + width <= bytes.count else { return nil }
            defer { index += width }
            return bytes[index..<index + width].reduce(0) { $0 << 8 | Int($1) }
        }

        mutating func field() -> [UInt8]? {
            guard let length = integer(4), index + length <= bytes.count else { return nil }
            defer { index += length }
            return Array(bytes[index..<index + length])
        }
    }
}
