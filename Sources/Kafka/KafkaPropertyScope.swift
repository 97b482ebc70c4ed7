import CRdKafka
import Foundation

/// Which clients a librdkafka property is for, as the linked librdkafka documents it
/// (`rd_kafka_conf_properties_show`, the table CONFIGURATION.md is made from): a
/// consumer is not handed producer-only pass-through properties, nor a producer
/// consumer-only ones, so neither warns at start-up (`CONFWARN … will be ignored`).
enum KafkaPropertyScope: Sendable {
    case consumer
    case producer
    case both

    /// The scope of every property the linked librdkafka knows, read once.
    static let known: [String: KafkaPropertyScope] = read()

    /// The scope of `name`; `both` for one librdkafka does not list (it then says
    /// itself what it makes of it).
    static func of(_ name: String) -> KafkaPropertyScope { known[name] ?? .both }

    private static func read() -> [String: KafkaPropertyScope] {
        var buffer: UnsafeMutablePointer<CChar>?
        var size = 0
        guard let stream = open_memstream(&buffer, &size) else { return [:] }
        rd_kafka_conf_properties_show(stream)
        fclose(stream)
        guard let buffer else { return [:] }
        defer { free(buffer) }
        return parse(String(cString: buffer))
    }

    /// Rows of the table: `name | C/P/* | …`.
    static func parse(_ table: String) -> [String: KafkaPropertyScope] {
        var scopes: [String: KafkaPropertyScope] = [:]
        for line in table.split(separator: "\n") {
            let columns = line.split(separator: "|", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
            guard columns.count > 2, !columns[0].isEmpty, !columns[0].hasPrefix("-"), columns[0] != "Property" else { continue }
            switch columns[1] {
            case "C": scopes[columns[0]] = .consumer
            case "P": scopes[columns[0]] = .producer
            case "*": scopes[columns[0]] = .both
            default: continue
            }
        }
        return scopes
    }
}

extension KafkaConfiguration {
    /// The pass-through properties a client of `scope` takes.
    func overrides(for scope: KafkaPropertyScope) -> [String: String] {
        overrides.filter { name, _ in
            let own = KafkaPropertyScope.of(name)
            return own == .both || own == scope
        }
    }
}
