import Foundation
import Synchronization

/// Evaluates a workflow's conditions against a run context. Conditions are data;
/// nothing is evaluated as code.
public enum ConditionEvaluator {
    /// Whether `conditions` hold for `context` (no conditions always hold).
    public static func matches(_ conditions: ConditionSet?, context: JSONValue) -> Bool {
        guard let conditions, !conditions.rules.isEmpty else { return true }
        switch conditions.match {
        case .all: return conditions.rules.allSatisfy { matches($0, context: context) }
        case .any: return conditions.rules.contains { matches($0, context: context) }
        }
    }

    /// Whether one rule holds. A missing field fails every op but `ne`,
    /// `not_in`, `not_contains` and `exists: false`.
    public static func matches(_ rule: ConditionRule, context: JSONValue) -> Bool {
        let path = rule.field.split(separator: ".").map(String.init)
        let actual = context[path: path]
        let expected = rule.value ?? .null
        switch rule.op {
        case .exists:
            let present = actual != nil && actual != .null
            if case .bool(false) = expected { return !present }
            return present
        case .eq:
            return actual.map { equal($0, expected) } ?? false
        case .ne:
            return actual.map { !equal($0, expected) } ?? true
        case .in:
            guard let actual, let options = expected.arrayValue else { return false }
            return options.contains { equal(actual, $0) }
        case .notIn:
            guard let actual, let options = expected.arrayValue else { return true }
            return !options.contains { equal(actual, $0) }
        case .contains:
            return actual.map { contains($0, expected) } ?? false
        case .notContains:
            return actual.map { !contains($0, expected) } ?? true
        case .gt, .gte, .lt, .lte:
            guard let actual, let order = compare(actual, expected) else { return false }
            switch rule.op {
            case .gt: return order == .orderedDescending
            case .gte: return order != .orderedAscending
            case .lt: return order == .orderedAscending
            default: return order != .orderedDescending
            }
        case .matches:
            guard case .string(let text)? = actual, let pattern = expected.stringValue, let regex = RegexCache.shared.regex(pattern) else { return false }
            return regex.firstMatch(in: text, range: NSRange(text.startIndex..., in: text)) != nil
        }
    }

    /// Equality where `1` and `1.0` are equal.
    static func equal(_ left: JSONValue, _ right: JSONValue) -> Bool {
        if let l = left.numberValue, let r = right.numberValue { return l == r }
        return left == right
    }

    /// A list contains an element, or a string contains a substring.
    static func contains(_ container: JSONValue, _ element: JSONValue) -> Bool {
        switch container {
        case .array(let items): return items.contains { equal($0, element) }
        case .string(let text): return element.stringValue.map { text.contains($0) } ?? false
        case .object(let object): return element.stringValue.map { object[$0] != nil } ?? false
        default: return false
        }
    }

    /// Numbers compare as numbers, strings as strings (ISO dates order correctly); else no order.
    static func compare(_ left: JSONValue, _ right: JSONValue) -> ComparisonResult? {
        if let l = left.numberValue, let r = right.numberValue {
            return l < r ? .orderedAscending : (l > r ? .orderedDescending : .orderedSame)
        }
        if let l = left.stringValue, let r = right.stringValue {
            return l < r ? .orderedAscending : (l > r ? .orderedDescending : .orderedSame)
        }
        return nil
    }
}

/// Compiled `matches` patterns, so that each is compiled once.
final class RegexCache: Sendable {
    static let shared = RegexCache()
    private let cache = Mutex<[String: NSRegularExpression]>([:])

    func regex(_ pattern: String) -> NSRegularExpression? {
        if let cached = cache.withLock({ $0[pattern] }) { return cached }
        guard let regex = try? NSRegularExpression(pattern: pattern) else { return nil }
        cache.withLock { $0[pattern] = regex }
        return regex
    }
}
