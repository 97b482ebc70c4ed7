import Crypto
import Workflows

/// The `Coverbase-Signature` of a vendor event: lowercase hex HMAC-SHA256 of the
/// raw value under the org's webhook signing secret. The worker checks it and
/// `trigger-worker send` makes it, with this one definition.
public enum WebhookSignature {
    public static func compute(_ value: [UInt8], secret: String) -> String {
        Identifier.hex(HMAC<SHA256>.authenticationCode(for: value, using: SymmetricKey(data: Array(secret.utf8))))
    }
}

/// Hashes used by the pipeline.
enum Digest {
    static func sha256(_ bytes: [UInt8]) -> [UInt8] { Array(SHA256.hash(data: bytes)) }

    static func sha256Hex(_ text: String) -> String { Identifier.hex(sha256(Array(text.utf8))) }

    /// Compares two byte strings in time independent of where they differ.
    static func constantTimeEquals(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        return zip(a, b).reduce(0) { $0 | ($1.0 ^ $1.1) } == 0
    }
}

/// A digest of one record's key and value: the first 16 bytes of SHA-256 over
/// each, length-prefixed (a missing key or value differs from an empty one).
enum RecordDigest {
    static func of(key: [UInt8]?, value: [UInt8]?) -> [UInt8] {
        var hasher = SHA256()
        for part in [key, value] {
            withUnsafeBytes(of: (part.map { UInt64($0.count) } ?? .max).bigEndian) { hasher.update(bufferPointer: $0) }
            part?.withUnsafeBytes { hasher.update(bufferPointer: $0) }
        }
        return Array(hasher.finalize().prefix(16))
    }
}
