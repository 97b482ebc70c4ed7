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

    /// Compares two strings in time independent of where they differ.
    static func constantTimeEquals(_ a: String, _ b: String) -> Bool {
        let a = Array(a.utf8), b = Array(b.utf8)
        guard a.count == b.count else { return false }
        return zip(a, b).reduce(0) { $0 | ($1.0 ^ $1.1) } == 0
    }
}
