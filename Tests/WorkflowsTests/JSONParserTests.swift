import Foundation
import Testing
@testable import Workflows

@Suite("JSON parser")
struct JSONParserTests {
    /// Parses `text` with Foundation's JSONDecoder (through JSONValue's Decodable) for comparison.
    func foundation(_ text: String) throws -> JSONValue { try JSONDecoder().decode(JSONValue.self, from: Data(text.utf8)) }

    @Test("agrees with JSONDecoder", arguments: [
        #"{"a":1,"b":[true,false,null],"c":{"d":"e"}}"#, #"  [ 1 , -2 , 3.5 , -0.25e2 , 1E3 , 0 ]  "#, #""plain""#,
        #""esc \" \\ \/ \b \f \n \r \t \u00e9 \ud83d\ude00""#, #"{"nested":[[[[{"x":[]}]]]]}"#, "12345678901234", "-0", #"{"":""}"#,
        "\"é — ✓\"",
    ])
    func agreement(text: String) throws {
        #expect(try JSONValue.parse(Array(text.utf8)) == foundation(text))
    }

    @Test("the last of duplicate keys wins")
    func duplicateKeys() throws {
        #expect(try JSONValue.parse(Array(#"{"dup":1,"dup":2}"#.utf8)) == ["dup": 2])
    }

    @Test("refuses what is not JSON", arguments: [
        "", " ", "{", "[1,]", #"{"a":1,}"#, "01", "1.", ".5", "+1", "1e", "tru", "nul", #""unterminated"#, "\"tab\there\"",
        #""\x""#, #""\ud83d""#, #"{"a" 1}"#, "[1 2]", "{} {}", "NaN", "1e999", #"{a:1}"#, "'single'",
    ])
    func refusals(text: String) {
        #expect(throws: (any Error).self) { try JSONValue.parse(Array(text.utf8)) }
    }

    @Test("refuses invalid UTF-8 and absurd nesting")
    func limits() throws {
        #expect(throws: (any Error).self) { try JSONValue.parse([0x22, 0xFF, 0x22]) }
        // Invalid sequences after ASCII, in keys and after an escape are refused too (the
        // ASCII fast path must not let them through).
        for invalid: [UInt8] in [[0x22, 0x61, 0xC3, 0x28, 0x22], [0x7B, 0x22, 0xED, 0xA0, 0x80, 0x22, 0x3A, 0x31, 0x7D], [0x22, 0x5C, 0x6E, 0xF8, 0x22], [0x22, 0x61, 0xC0, 0xAF, 0x22]] {
            #expect(throws: (any Error).self, "\(invalid)") { try JSONValue.parse(invalid) }
        }
        // Valid UTF-8 of every length, and ASCII up to DEL, read as written.
        for text in ["é", "aé", "€", "😀x", "\u{7F}", "plain ascii"] {
            #expect(try JSONValue.parse(Array("\"\(text)\"".utf8)) == .string(text))
            #expect(try JSONValue.parse(Array("{\"\(text)\":1}".utf8)) == .object([text: .int(1)]))
        }
        #expect(throws: (any Error).self) { try JSONValue.parse(Array(String(repeating: "[", count: 10_000).utf8)) }
        #expect(throws: Never.self) { try JSONValue.parse(Array((String(repeating: "[", count: 100) + String(repeating: "]", count: 100)).utf8)) }
    }

    @Test("parse and canonical encoding round-trip")
    func roundTrip() throws {
        let text = #"{"b":"line\nbreak \"q\"","a":[1,2.5,{"z":null,"y":"é"}]}"#
        let value = try JSONValue.parse(Array(text.utf8))
        #expect(try JSONValue.parse(value.canonicalBytes) == value)
        #expect(value.canonicalString == #"{"a":[1,2.5,{"y":"é","z":null}],"b":"line\nbreak \"q\""}"#)
    }

    @Test("the writer gives what canonicalBytes gives for the same value, spliced documents included")
    func writer() throws {
        let nested: JSONValue = ["z": 1, "a": ["q\"uote", nil, -12]]
        var writer = CanonicalJSONWriter()
        writer.object { object in
            object.key("alpha"); object.value(nested)
            object.key("beta"); object.array { array in
                array.int(0); array.bool(false); array.string(nil); array.object { _ in }; array.string("é\n")
            }
            object.key("gamma"); object.encoded(nested.canonicalBytes)
            object.key("mid"); object.object { inner in
                inner.key("n"); inner.null()
                inner.key("t"); inner.bool(true)
            }
            object.key("zeta"); object.string("last")
        }
        let whole: JSONValue = [
            "zeta": "last", "alpha": nested, "gamma": nested, "mid": ["t": true, "n": nil],
            "beta": [0, false, nil, .object([:]), "é\n"],
        ]
        #expect(writer.bytes == whole.canonicalBytes)
        #expect(try JSONValue.parse(writer.bytes) == whole)
    }

    @Test("integers beyond Int64 keep every digit when echoed (canonical bytes are the literal)", arguments: [
        "123456789012345678901234567890", "-98765432109876543210", "18446744073709551616", "9223372036854775808",
    ])
    func bigIntegers(text: String) throws {
        let value = try JSONValue.parse(Array(text.utf8))
        #expect(value.canonicalString == text)
        #expect(try JSONValue.parse(Array("[\(text)]".utf8)).canonicalString == "[\(text)]")
    }
}
