import Foundation
import Testing
import Workflows
@testable import Worker

@Suite("Orgs file")
struct OrgDirectoryTests {
    private func load(_ text: String) throws(DefinitionProblems) -> OrgDirectory {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("orgs-\(UUID()).yaml").path
        try? text.write(toFile: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: file) }
        return try OrgDirectory.load(path: file)
    }

    private let hash = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"

    @Test("the contract's example loads")
    func example() throws {
        let directory = try load("""
        orgs:
          - id: cborg_0f1e2d3c4b5a69788796a5b4c3d2e1f0
            name: Acme Corp
            api_keys:
              - sha256: \(hash)  # hex SHA-256 of the key
            webhook_signing_secret: whsec_example
        """)
        // The key whose SHA-256 the file holds is "test": found by its hash.
        let org = try #require(directory.org(apiKey: Array("test".utf8)[...]))
        #expect(org.id == "cborg_0f1e2d3c4b5a69788796a5b4c3d2e1f0")
        #expect(org.webhookSigningSecret == "whsec_example")
        #expect(directory.org(id: org.id)?.name == "Acme Corp")
        #expect(directory.org(apiKey: Array("tesT".utf8)[...]) == nil)
        #expect(directory.org(apiKey: [][...]) == nil)
    }

    @Test("each problem is reported with its line")
    func problems() {
        let error = #expect(throws: DefinitionProblems.self) {
            try load("""
            orgs:
              - id: cborg_0f1e2d3c4b5a69788796a5b4c3d2e1f0
                name: Acme
                api_keys:
                  - sha256: \(hash)
              - id: cborg_0f1e2d3c4b5a69788796a5b4c3d2e1f0
                name: Twin
                plan: enterprise
                api_keys:
                  - sha256: ak_live_plaintext
                  - sha256: \(hash)
              - id: org-3
                api_keys: []
            """)
        }
        let problems = error?.problems ?? []
        let lines = problems.map(\.line)
        #expect(lines.contains(6), "duplicate org id: \(problems)")
        #expect(lines.contains(8), "unknown key: \(problems)")
        #expect(lines.contains(10), "not a hash: \(problems)")
        #expect(lines.contains(11), "key reused across orgs: \(problems)")
        #expect(lines.contains(12), "bad org id: \(problems)")
        #expect(problems.contains { $0.message.contains("missing 'name'") })
    }

    @Test("the demo orgs file is valid")
    func demo() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let directory = try OrgDirectory.load(path: root.appendingPathComponent("examples/orgs.yaml").path)
        #expect(directory.orgs.count == 1)
    }
}

@Suite("Key hashes and signatures")
struct KeyAndSignatureTests {
    @Test("an API key is kept as its lowercase hex SHA-256 (the contract's example: sha256 of 'test')")
    func apiKeyHash() {
        #expect(OrgDirectory.hash(apiKey: "test") == "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08")
    }

    @Test("the API key of an Authorization value: Bearer in any case, blanks around the key ignored, anything else refused")
    func bearer() {
        func key(_ value: String) -> String? { InputDecoder.apiKey(authorization: Array(value.utf8)).map { String(decoding: $0, as: UTF8.self) } }
        #expect(key("Bearer ak_test_abc") == "ak_test_abc")
        #expect(key("  bEaReR \t ak_live_abc \r\n") == "ak_live_abc")
        #expect(key("Bearer ak_other_abc") == nil)
        #expect(key("Basic ak_test_abc") == nil)
        #expect(key("Bearerak_test_abc") == nil)
        #expect(key("Bearer") == nil)
        #expect(key("Bearer ") == nil)
        #expect(key("ak_test_abc") == nil)
        #expect(key("") == nil)
    }

    @Test("Coverbase-Signature is the lowercase hex HMAC-SHA256 of the raw value (known answer from Python's hmac)")
    func signature() {
        #expect(WebhookSignature.compute(Array(#"{"event_id":"cbevt_1"}"#.utf8), secret: "whsec_example") == "b9913556b74877e7f7835b0495387b19505268da5a2c1a5b3b9af1dc522ddd78")
    }
}
