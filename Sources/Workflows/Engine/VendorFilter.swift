/// A `for_each`'s `vendor_filter` (§10): `{tags?, tags_all?, tier_in?, attributes?}`.
/// `tags` matches a vendor with any of them, `tags_all` one with all of them, `tier_in`
/// one whose tier is listed, `attributes` one whose attributes equal each given value.
/// An empty filter matches every vendor of the org.
public struct VendorFilter: Sendable, Hashable {
    public var tags: Set<String>?
    public var tagsAll: Set<String>?
    public var tiers: Set<String>?
    public var attributes: [String: JSONValue]?

    public static let keys: Set<String> = ["tags", "tags_all", "tier_in", "attributes"]

    /// What is wrong with `value` as a filter, or `nil` when it is one.
    public static func problem(in value: JSONValue) -> String? {
        guard let object = value.objectValue else { return "must be a mapping (tags, tags_all, tier_in, attributes)" }
        for key in object.keys.sorted() where !keys.contains(key) {
            return "unknown key '\(BoundedText.identifier(key))' (known: attributes, tags, tags_all, tier_in)"
        }
        for key in ["tags", "tags_all", "tier_in"] {
            if let list = object[key], list.arrayValue?.allSatisfy({ $0.stringValue != nil }) != true {
                return "\(key) must be a list of strings"
            }
        }
        if let attributes = object["attributes"], attributes.objectValue == nil { return "attributes must be a mapping" }
        return nil
    }

    /// The filter `value` gives. - Returns: `nil` when it is not one (see ``problem(in:)``).
    public init?(_ value: JSONValue?) {
        guard let value, value != .null else {
            self.init()
            return
        }
        guard Self.problem(in: value) == nil, let object = value.objectValue else { return nil }
        let strings = { (key: String) -> Set<String>? in object[key]?.arrayValue.map { Set($0.compactMap(\.stringValue)) } }
        self.init()
        tags = strings("tags")
        tagsAll = strings("tags_all")
        tiers = strings("tier_in")
        attributes = object["attributes"]?.objectValue
    }

    public init() {}

    /// Whether the vendor object `vendor` (as vendor events carry it) matches.
    public func matches(_ vendor: JSONValue) -> Bool {
        let vendorTags = Set(vendor["tags"]?.arrayValue?.compactMap(\.stringValue) ?? [])
        if let tags, vendorTags.isDisjoint(with: tags) { return false }
        if let tagsAll, !tagsAll.isSubset(of: vendorTags) { return false }
        if let tiers, !tiers.contains(vendor["tier"]?.stringValue ?? "") { return false }
        if let attributes {
            for (key, value) in attributes where vendor[path: ["attributes", key]] != value { return false }
        }
        return true
    }
}
