import FabricCore
import Foundation

/// The files of one workload attempt, `root/<workloadID>/<attempt>/`, as fabric-monitor writes them.
struct AttemptPaths: Sendable {
    static let stateFile = "state.json"
    static let exitFile = "exit.json"
    static let monitorLogFile = "monitor.log"
    static let outputFile = "output.log"
    static let rotatedOutputFile = "output.log.1"
    /// The file under `root/<workloadID>/` naming the current attempt (its number, as text).
    static let currentFile = "current"

    var workloadID: String
    var attempt: Int
    var dir: String

    var state: String { dir + "/" + Self.stateFile }
    var exit: String { dir + "/" + Self.exitFile }
    var monitorLog: String { dir + "/" + Self.monitorLogFile }
    var output: String { dir + "/" + Self.outputFile }
    var rotatedOutput: String { dir + "/" + Self.rotatedOutputFile }
    /// Present once the control plane knows how the attempt ended: it leaves the node's inventory.
    var acknowledged: String { dir + "/acknowledged" }

    /// Reads state.json; nil while it does not exist (or is not a complete record).
    func readState() -> MonitorState? {
        guard let bytes = Posix.readFile(state) else { return nil }
        return try? JSONDecoder().decode(MonitorState.self, from: Data(bytes))
    }

    /// Reads exit.json; nil while the workload has not ended.
    func readExit() -> MonitorExit? {
        guard let bytes = Posix.readFile(exit) else { return nil }
        return try? JSONDecoder().decode(MonitorExit.self, from: Data(bytes))
    }

    /// The last lines of monitor.log, for error messages.
    func monitorLogTail(bytesMax: Int = 1024) -> String {
        String(decoding: Posix.readTail(monitorLog, bytesMax: bytesMax), as: UTF8.self)
            .trimmingCharacters(in: .whitespacesAndNewlines)
    }
}

/// `state.json`: written by the monitor once the workload has been spawned.
struct MonitorState: Codable, Sendable, Equatable {
    var monitorPid: Int32
    /// /proc start time of the monitor, to tell it from a process that reused its pid.
    var monitorStartTime: UInt64
    var pid: Int32
    var pgid: Int32
    /// /proc start time of the workload.
    var startTime: UInt64
    var startedAtMs: Int64
    var program: String?
}

/// `exit.json`: written by the monitor when the workload has ended (or could not start, with `error`).
struct MonitorExit: Codable, Sendable, Equatable {
    var code: Int32?
    var signal: Int32?
    var error: String?
    var finishedAtMs: Int64?

    /// How the workload ended; a record with neither field (never written so by the monitor) reads as SIGKILL.
    var status: ExitStatus {
        if let code { return .exited(code: code) }
        return .signaled(signal: signal ?? SIGKILL)
    }
}
