import Foundation
import Logging
import Synchronization
import Testing
@testable import Worker

@Suite("JSON log lines")
struct LineLogHandlerTests {
    @Test("one JSON object per line, with metadata")
    func line() throws {
        let lines = Mutex<[String]>([])
        var logger = Logger(label: "test") { label in
            LineLogHandler(label: label, level: .info, format: .json) { line in lines.withLock { $0.append(line) } }
        }
        logger[metadataKey: "group"] = "g"
        logger.info("Consumed \"batch\"\n", metadata: [LogKey.topic: "t", LogKey.partition: "3"])
        logger.debug("not at info")
        let captured = lines.withLock { $0 }
        #expect(captured.count == 1)
        let line = try #require(captured.first)
        #expect(line.hasSuffix("}\n"))
        let object = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: String])
        #expect(object["msg"] == "Consumed \"batch\"\n")
        #expect(object["level"] == "info")
        #expect(object["topic"] == "t")
        #expect(object["partition"] == "3")
        #expect(object["group"] == "g")
        #expect(object["ts"] != nil)
    }
}
