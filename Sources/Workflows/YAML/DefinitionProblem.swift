/// A problem in a definition file (a workflow or the orgs file), with where it is.
public struct DefinitionProblem: Error, Sendable, Hashable, CustomStringConvertible {
    /// The file's path as it was given.
    public var file: String
    /// The 1-based line the problem is on.
    public var line: Int
    /// What is wrong, in words that say how to fix it.
    public var message: String

    public init(file: String, line: Int, message: String) {
        self.file = file
        self.line = line
        self.message = message
    }

    /// `file:line: message`, the form compilers use, so editors can jump to it.
    public var description: String { "\(file):\(line): \(message)" }
}

/// Problems found while reading one or more definition files.
public struct DefinitionProblems: Error, Sendable, CustomStringConvertible {
    /// Every problem, in file and line order.
    public var problems: [DefinitionProblem]

    public init(_ problems: [DefinitionProblem]) {
        self.problems = problems.sorted { ($0.file, $0.line) < ($1.file, $1.line) }
    }

    public var description: String { problems.map(\.description).joined(separator: "\n") }
}
