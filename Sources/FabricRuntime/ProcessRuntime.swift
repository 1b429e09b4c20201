import FabricCore
import Foundation
import Glibc

/// Runs workloads as host processes, each attempt under its own `fabric-monitor` (like podman's conmon), so that
/// logs, exit status and the process itself survive a restart of weaver, which adopts them with `recover`.
///
/// On disk, per attempt (`root/<workloadID>/<attempt>/`, and `root/<workloadID>/current` naming the attempt):
///
///     state.json    monitor pid + start time, workload pid/pgid + start time     (monitor, once spawned)
///     exit.json     {"code":N} | {"signal":S} [+ "error" when it could not start] (monitor, at the end)
///     output.log    combined stdout+stderr, rotated to output.log.1 at logBytesMax
///     monitor.log   what the monitor did
///
/// Lifecycle of one attempt, as this runtime sees it:
///
///     start ──► monitor spawned ──► state.json ──────────────► exit.json ──► .exited
///                   │                  │   stop: TERM group,       ▲
///                   └─► exit.json      │   grace, KILL group ──────┘
///                       {error}: throw └─► monitor gone, no exit.json ──► .missing (orphans killed)
public final class ProcessRuntime: WorkloadRuntime {
    /// Named limits and intervals of the process runtime.
    public enum Limits {
        /// How long `start` waits for the monitor to report the spawn (state.json or exit.json).
        public static let startTimeout: Duration = .seconds(10)
        /// Poll step while `start` waits for the monitor.
        public static let startPollInterval: Duration = .milliseconds(10)
        /// Poll step of `waitForExit`.
        public static let exitPollInterval: Duration = .milliseconds(200)
        /// Poll step of `stop` while it waits for the workload to end.
        public static let stopPollInterval: Duration = .milliseconds(50)
        /// How long `stop` waits for exit.json after SIGKILL before giving up.
        public static let killTimeout: Duration = .seconds(10)
        /// Poll step of the task that reaps a monitor this process spawned.
        public static let reapInterval: Duration = .milliseconds(250)
        /// Smallest and largest accepted per-file output limit (`logBytesMax` is clamped into this range).
        public static let logBytesMaxRange = 1024...(1 << 30)
        /// The most bytes `logs` returns, also when asked for all (nil).
        public static let logsReadBytesMax = 64 << 20
        /// Longest workload ID (it is a folder name and part of a cgroup name).
        public static let workloadIDLengthMax = 128
        /// Variables of weaver's own environment a workload inherits unless its spec sets them.
        public static let inheritedEnvironment = ["PATH", "HOME", "LANG", "TZ"]
        /// PATH for workloads when weaver has none.
        public static let defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    }

    /// The file name of the monitor executable.
    public static let monitorExecutableName = "fabric-monitor"

    /// Always `.process`.
    public let kind: RuntimeKind = .process
    /// The folder holding one folder per workload.
    public let root: String
    /// The fabric-monitor executable.
    public let monitorPath: String
    /// Per-file limit of a workload's output log; at most about twice this stays on disk.
    public let logBytesMax: Int
    /// Whether `resources` become cgroup limits (memory, CPU quota) where cgroup v1 is writable.
    public let enforcesResourceLimits: Bool
    /// The node's liveness lease, passed to every monitor (nil: workloads outlive the node runner for good).
    public let lease: NodeLease?
    /// Part of every cgroup name, so that runtimes with different roots on one host never share a cgroup.
    let cgroupSuffix: String

    /// Creates a runtime keeping its records under `root`.
    /// - Parameters:
    ///   - monitorPath: the fabric-monitor executable; default: `fabric-monitor` beside the running executable.
    ///   - logBytesMax: per-file output limit, clamped into `Limits.logBytesMaxRange`.
    ///   - enforcesResourceLimits: turn `RunRequest.resources` into cgroup limits.
    ///   - lease: the node's liveness lease; monitors fence their workloads when it is not renewed.
    public init(
        root: String, monitorPath: String? = nil, logBytesMax: Int, enforcesResourceLimits: Bool = true,
        lease: NodeLease? = nil
    ) {
        self.lease = lease
        let absoluteRoot = root.hasPrefix("/") ? root : FileManager.default.currentDirectoryPath + "/" + root
        self.root = absoluteRoot
        self.monitorPath = monitorPath ?? Self.defaultMonitorPath()
        self.logBytesMax = min(max(logBytesMax, Limits.logBytesMaxRange.lowerBound), Limits.logBytesMaxRange.upperBound)
        self.enforcesResourceLimits = enforcesResourceLimits
        self.cgroupSuffix = Self.fnv1a32Hex(absoluteRoot)
    }

    /// `fabric-monitor` in the folder of the running executable (also right under `swift test`, whose test bundle
    /// is built beside the executables).
    public static func defaultMonitorPath() -> String {
        let exe =
            (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        let dir = exe.split(separator: "/", omittingEmptySubsequences: false).dropLast().joined(separator: "/")
        return (dir.isEmpty ? "." : dir) + "/" + monitorExecutableName
    }

    // MARK: - WorkloadRuntime

    public func start(_ request: RunRequest) async throws {
        try validate(request)
        guard access(monitorPath, X_OK) == 0 else {
            throw FabricError(
                .failedPrecondition,
                "the process monitor \(monitorPath) is missing or not executable (build it: swift build --product "
                    + "fabric-monitor)")
        }
        if let current = currentAttempt(request.workloadID), current.attempt != request.attempt,
            case .running = inspect(current)
        {
            throw FabricError(
                .conflict, "workload \(request.workloadID) attempt \(current.attempt) is still running")
        }
        let paths = attemptPaths(request.workloadID, request.attempt)
        if Posix.exists(paths.state) || Posix.exists(paths.exit) {
            throw FabricError(
                .alreadyExists, "workload \(request.workloadID) attempt \(request.attempt) was already started")
        }
        try Posix.makeDirectories(paths.dir)
        try Posix.writeFileAtomically(
            workloadDir(request.workloadID) + "/" + AttemptPaths.currentFile,
            Array("\(request.attempt)\n".utf8))

        let pid = try Posix.spawn(
            monitorPath, monitorArguments(request, paths), environment: environment(for: request),
            outputPath: paths.monitorLog)
        // The monitor is our child until it exits: reap it, whoever waits for the workload.
        Task.detached { _ = await Posix.reap(pid, interval: Limits.reapInterval) }
        // With its start time, a monitor reaped meanwhile is never confused with a process that reused its pid.
        let monitorStartTime = Posix.procStat(pid)?.startTime ?? 0

        let deadline = ContinuousClock.now + Limits.startTimeout
        while true {
            if let exit = paths.readExit() {
                if let error = exit.error { throw FabricError(.failedPrecondition, error) }
                return
            }
            if paths.readState() != nil { return }
            if !Posix.isRunning(pid: pid, startTime: monitorStartTime) {
                Posix.reapIfZombieChild(pid)
                // Re-read once: it may have written its record just before exiting.
                if paths.readExit() != nil || paths.readState() != nil { continue }
                throw FabricError(
                    .internalError,
                    "fabric-monitor pid \(pid) exited before starting \(request.command[0]): "
                        + paths.monitorLogTail())
            }
            if ContinuousClock.now >= deadline {
                throw FabricError(
                    .unavailable,
                    "fabric-monitor pid \(pid) did not report the start of \(request.command[0]) within "
                        + "\(Limits.startTimeout)")
            }
            try? await Task.sleep(for: Limits.startPollInterval)
        }
    }

    public func waitForExit(workloadID: String) async -> ExitStatus {
        guard let paths = currentAttempt(workloadID) else { return Self.lostStatus }
        while true {
            switch inspect(paths) {
            case .exited(let status): return status
            case .missing: return Self.lostStatus
            case .running: try? await Task.sleep(for: Limits.exitPollInterval)
            }
        }
    }

    public func stop(workloadID: String, grace: Duration) async {
        guard let paths = currentAttempt(workloadID), case .running = inspect(paths),
            let state = paths.readState()
        else { return }
        signalWorkload(state, SIGTERM)
        if await waitForRecord(paths, timeout: grace) { return }
        signalWorkload(state, SIGKILL)
        _ = await waitForRecord(paths, timeout: Limits.killTimeout)
    }

    public func recover(workloadID: String) async -> RecoveredState {
        guard let paths = currentAttempt(workloadID) else {
            return .missing(reason: "no record of workload \(workloadID) under \(root)")
        }
        return inspect(paths)
    }

    public func logs(workloadID: String, tailBytes: Int?) async throws -> [UInt8] {
        if let tailBytes, tailBytes < 0 { throw FabricError.invalid("tailBytes", "tailBytes must not be negative") }
        guard let paths = currentAttempt(workloadID) else {
            throw FabricError(.notFound, "no logs for workload \(workloadID): it was never started on this node")
        }
        let want = min(tailBytes ?? Limits.logsReadBytesMax, Limits.logsReadBytesMax)
        // Newest bytes first from output.log, the rest from the rotated output.log.1.
        let newer = Posix.readTail(paths.output, bytesMax: want)
        guard newer.count < want else { return newer }
        return Posix.readTail(paths.rotatedOutput, bytesMax: want - newer.count) + newer
    }

    public func inventory() async -> [RuntimeAttempt] {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: root) else { return [] }
        var running: [RuntimeAttempt] = []
        var ended: [RuntimeAttempt] = []
        for name in names.sorted() where isValidWorkloadID(name) {
            guard let paths = currentAttempt(name), !Posix.exists(paths.acknowledged) else { continue }
            let state = inspect(paths)
            let entry = RuntimeAttempt(workloadID: name, attempt: paths.attempt, state: state)
            if case .running = state { running.append(entry) } else { ended.append(entry) }
        }
        return Array((running + ended).prefix(RuntimeAttempt.inventoryMax))
    }

    public func held(workloadID: String) async -> RuntimeAttempt? {
        guard let paths = currentAttempt(workloadID) else { return nil }
        return RuntimeAttempt(workloadID: workloadID, attempt: paths.attempt, state: inspect(paths))
    }

    public func acknowledge(workloadID: String, attempt: Int) async {
        guard isValidWorkloadID(workloadID) else { return }
        let paths = attemptPaths(workloadID, attempt)
        guard Posix.exists(paths.dir) else { return }
        try? Posix.writeFileAtomically(paths.acknowledged, Array("acknowledged\n".utf8))
    }

    // MARK: - Records

    /// How a workload whose monitor vanished without a record is reported by `waitForExit`: killed.
    static let lostStatus = ExitStatus.signaled(signal: SIGKILL)

    func workloadDir(_ workloadID: String) -> String { root + "/" + workloadID }

    func attemptPaths(_ workloadID: String, _ attempt: Int) -> AttemptPaths {
        AttemptPaths(workloadID: workloadID, attempt: attempt, dir: workloadDir(workloadID) + "/\(attempt)")
    }

    /// The attempt `root/<workloadID>/current` names; nil when the workload was never started here.
    func currentAttempt(_ workloadID: String) -> AttemptPaths? {
        guard isValidWorkloadID(workloadID),
            let bytes = Posix.readFile(workloadDir(workloadID) + "/" + AttemptPaths.currentFile, bytesMax: 32),
            let attempt = Int(String(decoding: bytes, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines))
        else { return nil }
        return attemptPaths(workloadID, attempt)
    }

    /// What the records and /proc say about an attempt. A monitor that is gone without an exit record leaves an
    /// unsupervised workload behind (no logs, no exit status; weaver will start another attempt): it is killed.
    func inspect(_ paths: AttemptPaths) -> RecoveredState {
        if let exit = paths.readExit() {
            if let state = paths.readState() { Posix.reapIfZombieChild(state.monitorPid) }
            return .exited(exit.status)
        }
        guard let state = paths.readState() else {
            return .missing(
                reason: "attempt \(paths.attempt) of workload \(paths.workloadID) has no state.json: its monitor "
                    + "never reported a start")
        }
        if Posix.isRunning(pid: state.monitorPid, startTime: state.monitorStartTime) { return .running }
        Posix.reapIfZombieChild(state.monitorPid)
        // The monitor may have written exit.json just before it exited.
        if let exit = paths.readExit() { return .exited(exit.status) }
        var reason = "monitor pid \(state.monitorPid) is gone and left no exit status"
        if Posix.isRunning(pid: state.pid, startTime: state.startTime) {
            signalWorkload(state, SIGKILL)
            reason += "; killed its unsupervised workload pid \(state.pid)"
        }
        return .missing(reason: reason)
    }

    /// Signals the workload's process group, or the workload alone when it left its group; never a process that
    /// merely reused its pid.
    func signalWorkload(_ state: MonitorState, _ signal: Int32) {
        if state.pgid > 1, kill(-state.pgid, signal) == 0 { return }
        if Posix.isRunning(pid: state.pid, startTime: state.startTime) { _ = kill(state.pid, signal) }
    }

    /// Waits up to `timeout` for exit.json (or for the monitor to vanish); true when the attempt is over.
    func waitForRecord(_ paths: AttemptPaths, timeout: Duration) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        while true {
            if case .running = inspect(paths) {} else { return true }
            if ContinuousClock.now >= deadline { return false }
            try? await Task.sleep(for: min(Limits.stopPollInterval, deadline - ContinuousClock.now))
        }
    }

    // MARK: - Spawning

    func validate(_ request: RunRequest) throws(FabricError) {
        guard isValidWorkloadID(request.workloadID) else {
            throw .invalid(
                "workloadID",
                "workload IDs are 1 to \(Limits.workloadIDLengthMax) letters, digits, '-', '_' or '.', not starting "
                    + "with '.'")
        }
        guard request.attempt >= 0 else { throw .invalid("attempt", "attempt must not be negative") }
        guard let program = request.command.first, !program.isEmpty else {
            throw .invalid("command", "command must name a program")
        }
        guard request.command.allSatisfy({ !$0.utf8.contains(0) }) else {
            throw .invalid("command", "arguments must not contain NUL bytes")
        }
        for (key, value) in request.env
        where key.isEmpty || key.contains("=") || key.utf8.contains(0)
            || value.utf8.contains(0)
        {
            throw .invalid("env.\(key)", "environment names must be non-empty without '='; no NUL bytes")
        }
        if let dir = request.workingDir, !dir.hasPrefix("/") {
            throw .invalid("workingDir", "workingDir must be an absolute path")
        }
    }

    func isValidWorkloadID(_ id: String) -> Bool {
        guard !id.isEmpty, id.utf8.count <= Limits.workloadIDLengthMax, !id.hasPrefix(".") else { return false }
        return id.utf8.allSatisfy { c in
            (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a) || c == 0x2d
                || c == 0x2e || c == 0x5f
        }
    }

    /// The monitor's command line for an attempt.
    func monitorArguments(_ request: RunRequest, _ paths: AttemptPaths) -> [String] {
        var args = ["--dir", paths.dir, "--log-bytes-max", String(logBytesMax)]
        if enforcesResourceLimits {
            if request.resources.memoryBytes > 0 {
                args += ["--cgroup-memory-bytes", String(request.resources.memoryBytes)]
            }
            if request.resources.cpuMillis > 0 { args += ["--cgroup-cpu-millis", String(request.resources.cpuMillis)] }
            if request.resources.memoryBytes > 0 || request.resources.cpuMillis > 0 {
                args += ["--cgroup-name", "\(request.workloadID)-\(request.attempt)-\(cgroupSuffix)"]
            }
        }
        if let dir = request.workingDir { args += ["--workdir", dir] }
        if let lease { args += lease.monitorArguments() }
        return args + ["--"] + request.command
    }

    /// The workload's environment: PATH, HOME, LANG and TZ from weaver's own, overridden by the spec's `env`.
    func environment(for request: RunRequest) -> [String] {
        let own = ProcessInfo.processInfo.environment
        var env: [String: String] = ["PATH": Limits.defaultPath]
        for key in Limits.inheritedEnvironment { if let v = own[key] { env[key] = v } }
        env.merge(request.env) { _, spec in spec }
        return env.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
    }

    /// A short, stable hash of a string (FNV-1a, 32 bits, hex).
    static func fnv1a32Hex(_ s: String) -> String {
        var h: UInt32 = 2_166_136_261
        for b in s.utf8 { h = (h ^ UInt32(b)) &* 16_777_619 }
        let hex = String(h, radix: 16)
        return String(repeating: "0", count: 8 - hex.count) + hex
    }
}
