import FabricCore

/// What a runtime needs to start one attempt of a workload.
public struct RunRequest: Sendable, Hashable {
    public var workloadID: String
    public var attempt: Int
    public var command: [String]
    public var env: [String: String]
    public var workingDir: String?
    public var resources: Resources

    public init(
        workloadID: String, attempt: Int, command: [String], env: [String: String] = [:],
        workingDir: String? = nil, resources: Resources
    ) {
        self.workloadID = workloadID
        self.attempt = attempt
        self.command = command
        self.env = env
        self.workingDir = workingDir
        self.resources = resources
    }
}

/// How a workload's process ended.
public enum ExitStatus: Sendable, Hashable, Codable {
    case exited(code: Int32)
    case signaled(signal: Int32)

    public var succeeded: Bool { self == .exited(code: 0) }
}

/// What a runtime finds for a workload after the control plane restarted.
public enum RecoveredState: Sendable, Hashable, Codable {
    /// Still running: adopt it.
    case running
    /// Ended while nobody watched; here is how.
    case exited(ExitStatus)
    /// No trace of it (never started, or its records are gone): mark it lost.
    case missing(reason: String)
}

/// Runs workloads on a node. The process runtime supervises host processes; containerd comes later.
public protocol WorkloadRuntime: Sendable {
    var kind: RuntimeKind { get }

    /// Starts an attempt; returns once the process exists. Throws `FabricError` with a clear message when the
    /// program cannot be started (not found, not executable, bad working directory).
    func start(_ request: RunRequest) async throws

    /// Waits until the workload's current attempt ends (also for adopted workloads) and returns how.
    func waitForExit(workloadID: String) async -> ExitStatus

    /// Sends SIGTERM to the workload's process group, then SIGKILL after `grace`; returns once it is gone.
    /// Does nothing for a workload that is not running.
    func stop(workloadID: String, grace: Duration) async

    /// Looks for a workload after a restart of the control plane.
    func recover(workloadID: String) async -> RecoveredState

    /// The newest `tailBytes` (all when nil) of the workload's combined stdout and stderr.
    func logs(workloadID: String, tailBytes: Int?) async throws -> [UInt8]

    /// The current attempt of every workload this runtime holds that is running, or ended without its end being
    /// acknowledged (at most `RuntimeAttempt.inventoryMax`, running ones first): what a node reports when it
    /// (re)registers, so the control plane can adopt, record or stop each.
    func inventory() async -> [RuntimeAttempt]

    /// The workload's current (newest) attempt on this runtime and how it stands; nil when it has none.
    func held(workloadID: String) async -> RuntimeAttempt?

    /// Records that the control plane knows how an attempt ended (or that it must be forgotten): it leaves the
    /// inventory. Its logs stay readable.
    func acknowledge(workloadID: String, attempt: Int) async
}

/// One attempt a runtime holds, and how it stands.
public struct RuntimeAttempt: Sendable, Hashable, Codable {
    public var workloadID: String
    public var attempt: Int
    /// `.running`, or `.exited` for an unacknowledged end (`.missing` for one whose monitor vanished).
    public var state: RecoveredState

    public init(workloadID: String, attempt: Int, state: RecoveredState) {
        self.workloadID = workloadID
        self.attempt = attempt
        self.state = state
    }

    /// The most attempts an inventory lists.
    public static let inventoryMax = 10_000
}
