import ArgumentParser
import Foundation
import Worker
import Workflows

/// `trigger-worker validate`: check the orgs file and every workflow file.
struct ValidateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "validate",
        abstract: "Check ORGS_FILE and every workflow under WORKFLOWS_DIR; list each problem as file:line: message.",
        discussion: "Exits 0 when everything is valid, 1 when anything is not."
    )

    @Option(help: "The workflows directory (default: WORKFLOWS_DIR, else 'workflows').")
    var workflows: String?

    @Option(help: "The orgs file (default: ORGS_FILE, else 'config/orgs.yaml').")
    var orgs: String?

    func run() throws {
        let environment = ProcessInfo.processInfo.environment
        let workflowsDirectory = workflows ?? environment["WORKFLOWS_DIR"] ?? WorkerConfiguration().workflowsDirectory
        let orgsFile = orgs ?? environment["ORGS_FILE"] ?? WorkerConfiguration().orgsFile

        var problems: [DefinitionProblem] = []
        var directory: OrgDirectory?
        do {
            directory = try OrgDirectory.load(path: orgsFile)
        } catch {
            problems += error.problems
        }
        var catalog: WorkflowCatalog?
        do {
            catalog = try WorkflowCatalog.load(directory: workflowsDirectory, knownOrgs: directory?.ids)
        } catch {
            problems += error.problems
        }

        if problems.isEmpty, let directory, let catalog {
            print("ok: \(directory.orgs.count) org(s) in \(orgsFile), \(catalog.count) workflow(s) in \(workflowsDirectory)")
            return
        }
        for problem in problems { print(problem) }
        print("\(problems.count) problem(s) found")
        throw ExitCode(1)
    }
}
