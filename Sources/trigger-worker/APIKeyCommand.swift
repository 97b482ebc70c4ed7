import ArgumentParser
import Crypto
import Foundation
import Worker
import Workflows

/// `trigger-worker api-key create --org cborg_…`.
struct APIKeyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "api-key",
        abstract: "Manage API keys.",
        subcommands: [Create.self]
    )

    struct Create: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print a new API key once, and the line that lets ORGS_FILE accept it (only its SHA-256 is stored)."
        )

        @Option(help: "The org the key belongs to (cborg_…).")
        var org: String

        @Flag(help: "Make an ak_test_ key instead of an ak_live_ key.")
        var test = false

        func validate() throws {
            guard Identifier.isValid(org, prefix: "cborg") else {
                throw ValidationError("--org must be an org id: cborg_ followed by 32 lowercase hex digits")
            }
        }

        func run() throws {
            let secret = SymmetricKey(size: .bits256).withUnsafeBytes { Array($0) }
            let key = (test ? "ak_test_" : "ak_live_") + Identifier.hex(secret)
            let hash = OrgDirectory.hash(apiKey: key)
            print("API key (shown once; store it in the calling system's secrets):")
            print("  \(key)")
            print("")
            print("Add under the org \(org) in ORGS_FILE:")
            print("    api_keys:")
            print("      - sha256: \(hash)")
        }
    }
}
