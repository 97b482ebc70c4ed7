import Foundation

/// Reads the partitions an instance owns from its JSON log (`LOG_FORMAT=json`):
/// for tools and tests that watch worker processes from outside.
public enum AssignmentLog {
    /// The partitions (`topic[n]`) assigned and not revoked since, as `lines` tell.
    public static func owned(in lines: [String]) -> Set<String> {
        var owned: Set<String> = []
        for line in lines where line.contains("\"\(LogKey.partitions)\"") {
            guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                  let message = object["msg"] as? String, let partitions = object[LogKey.partitions] as? String else { continue }
            let named = partitions.split(separator: ",").map(String.init)
            if message.hasPrefix("Joined the consumer group") { owned.formUnion(named) }
            if message.hasPrefix("Partitions revoked") { owned.subtract(named) }
        }
        return owned
    }
}
