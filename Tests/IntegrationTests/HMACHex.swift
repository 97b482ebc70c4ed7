import Crypto

/// Lowercase hex HMAC-SHA256, computed here for the tests' signed events.
enum HMACHex {
    static func compute(_ message: [UInt8], secret: String) -> String {
        HMAC<SHA256>.authenticationCode(for: message, using: SymmetricKey(data: Array(secret.utf8)))
            .map { String(format: "%02x", $0) }.joined()
    }
}
