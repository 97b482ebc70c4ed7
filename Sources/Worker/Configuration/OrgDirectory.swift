import Crypto
import Workflows
import Yams

/// An org that may send requests and whose events the worker accepts.
public struct Org: Sendable, Hashable {
    /// `cborg_` + 32 hex.
    public var id: String
    public var name: String
    /// Lowercase hex SHA-256 of each API key of the org; keys themselves are never stored.
    public var apiKeySHA256: [String]
    /// When set, the org's vendor events must carry a valid `Coverbase-Signature`.
    public var webhookSigningSecret: String?

    public init(id: String, name: String, apiKeySHA256: [String], webhookSigningSecret: String? = nil) {
        self.id = id
        self.name = name
        self.apiKeySHA256 = apiKeySHA256
        self.webhookSigningSecret = webhookSigningSecret
    }
}

/// The orgs of `ORGS_FILE`.
public struct OrgDirectory: Sendable {
    /// Every org, in file order.
    public let orgs: [Org]
    private let byID: [String: Org]
    private let byKeyHash: [KeyDigest: Org]

    public init(_ orgs: [Org]) {
        self.orgs = orgs
        byID = Dictionary(orgs.map { ($0.id, $0) }, uniquingKeysWith: { first, _ in first })
        byKeyHash = Dictionary(
            orgs.flatMap { org in org.apiKeySHA256.compactMap { hash in KeyDigest(hex: hash).map { ($0, org) } } },
            uniquingKeysWith: { first, _ in first }
        )
    }

    /// The org with id `id`.
    public func org(id: String) -> Org? { byID[id] }

    /// The org that owns the API key made of `key` (UTF-8), compared by its SHA-256 only.
    public func org(apiKey key: ArraySlice<UInt8>) -> Org? {
        var hasher = SHA256()
        key.withUnsafeBytes { hasher.update(bufferPointer: $0) }
        return byKeyHash[KeyDigest(hasher.finalize())]
    }

    /// How an API key is kept in the orgs file: its lowercase hex SHA-256.
    public static func hash(apiKey: String) -> String { Digest.sha256Hex(apiKey) }

    /// Every org id.
    public var ids: Set<String> { Set(byID.keys) }

    /// Reads and validates the orgs file at `path`.
    /// - Throws: ``DefinitionProblems`` naming every problem with its line.
    public static func load(path: String) throws(DefinitionProblems) -> OrgDirectory {
        let reader = YAMLReader(file: path)
        guard let root = reader.parseFile() else { throw DefinitionProblems(reader.problems) }
        let orgs = parse(root, reader: reader)
        guard reader.problems.isEmpty else { throw DefinitionProblems(reader.problems) }
        return OrgDirectory(orgs)
    }

    private static func parse(_ root: Yams.Node, reader: YAMLReader) -> [Org] {
        guard let top = reader.mapping(root, "the orgs file") else { return [] }
        top.rejectUnknownKeys(allowed: ["orgs"])
        guard let nodes = top.sequence("orgs", required: true) else { return [] }
        var orgs: [Org] = []
        var seenIDs: [String: Int] = [:]
        var seenKeys: [String: Int] = [:]
        for (index, node) in nodes.enumerated() {
            guard let entry = reader.mapping(node, "org \(index + 1)") else { continue }
            entry.rejectUnknownKeys(allowed: ["id", "name", "api_keys", "webhook_signing_secret"])
            let id = entry.string("id", required: true)
            if let id {
                if !Identifier.isValid(id, prefix: "cborg") {
                    reader.report("org id '\(id)' is not cborg_ followed by 32 lowercase hex digits", line: entry.line(of: "id"))
                } else if let first = seenIDs[id] {
                    reader.report("duplicate org id '\(id)' (first on line \(first))", line: entry.line(of: "id"))
                } else {
                    seenIDs[id] = entry.line(of: "id")
                }
            }
            let name = entry.string("name", required: true)
            var hashes: [String] = []
            for (keyIndex, keyNode) in (entry.sequence("api_keys", required: true) ?? []).enumerated() {
                guard let key = reader.mapping(keyNode, "API key \(keyIndex + 1) of org \(index + 1)") else { continue }
                key.rejectUnknownKeys(allowed: ["sha256"])
                guard let hash = key.string("sha256", required: true) else { continue }
                let line = key.line(of: "sha256")
                if !Identifier.isLowercaseHex(hash, digits: 64) {
                    reader.report("sha256 must be 64 lowercase hex digits (the SHA-256 of the key, not the key itself)", line: line)
                } else if let first = seenKeys[hash] {
                    reader.report("this API key hash is already used on line \(first); keys must be unique across orgs", line: line)
                } else {
                    seenKeys[hash] = line
                    hashes.append(hash)
                }
            }
            let secret = entry.string("webhook_signing_secret")
            if let secret, secret.isEmpty {
                reader.report("webhook_signing_secret is empty; leave it out to accept unsigned events", line: entry.line(of: "webhook_signing_secret"))
            }
            if let id, let name { orgs.append(Org(id: id, name: name, apiKeySHA256: hashes, webhookSigningSecret: secret)) }
        }
        return orgs
    }
}

/// A SHA-256 as four words: a dictionary key that hashes and compares without allocating.
private struct KeyDigest: Hashable {
    var a, b, c, d: UInt64

    init(_ digest: SHA256.Digest) {
        (a, b, c, d) = digest.withUnsafeBytes(Self.words)
    }

    /// From 64 lowercase hex digits.
    init?(hex: String) {
        guard Identifier.isLowercaseHex(hex, digits: 64) else { return nil }
        func value(_ digit: UInt8) -> UInt8 { digit <= UInt8(ascii: "9") ? digit - UInt8(ascii: "0") : digit - UInt8(ascii: "a") + 10 }
        let digits = Array(hex.utf8)
        let bytes = (0..<32).map { value(digits[2 * $0]) << 4 | value(digits[2 * $0 + 1]) }
        (a, b, c, d) = bytes.withUnsafeBytes(Self.words)
    }

    private static func words(_ bytes: UnsafeRawBufferPointer) -> (UInt64, UInt64, UInt64, UInt64) {
        (bytes.loadUnaligned(fromByteOffset: 0, as: UInt64.self), bytes.loadUnaligned(fromByteOffset: 8, as: UInt64.self),
         bytes.loadUnaligned(fromByteOffset: 16, as: UInt64.self), bytes.loadUnaligned(fromByteOffset: 24, as: UInt64.self))
    }
}
