import FabricCore
import FabricLog
import FabricRuntime

/// Work sent to a node: run one attempt of a workload.
public struct Assignment: Sendable, Hashable, Codable {
    public var workloadID: String
    public var attempt: Int
    public var spec: WorkloadSpec

    public init(workloadID: String, attempt: Int, spec: WorkloadSpec) {
        self.workloadID = workloadID
        self.attempt = attempt
        self.spec = spec
    }
}

/// What a node tells the control plane about a workload attempt.
public enum NodeReport: Sendable, Hashable, Codable {
    /// The process exists and runs.
    case started(workloadID: String, attempt: Int)
    /// It could not be started (program missing, bad working directory, no runtime for an image).
    case startFailed(workloadID: String, attempt: Int, message: String)
    /// It ended.
    case exited(workloadID: String, attempt: Int, status: ExitStatus)
}

/// Supervises one attempt of one workload on a node: waits for its end (through the runtime, whose monitor process
/// does the watching) and reports it exactly once.
actor WorkloadSupervisor {
    nonisolated let workloadID: String
    nonisolated let attempt: Int
    let runtime: any WorkloadRuntime
    private var reported = false

    init(workloadID: String, attempt: Int, runtime: any WorkloadRuntime) {
        self.workloadID = workloadID
        self.attempt = attempt
        self.runtime = runtime
    }

    /// Waits until the attempt ends, then calls `onExit` (once, however often `watch` is called).
    func watch(onExit: @Sendable (ExitStatus) async -> Void) async {
        let status = await runtime.waitForExit(workloadID: workloadID)
        guard !reported else { return }
        reported = true
        await onExit(status)
    }
}

/// The node runner: runs assignments through its runtimes and reports every transition.
///
/// The core of the `shuttle` process and of weaver's embedded node alike; the control plane reaches it through
/// `ShuttleNode`, and its reports travel through `ShuttleRunner`. Each running attempt has a `WorkloadSupervisor`.
public actor NodeAgent {
    public nonisolated let info: NodeInfo
    /// The liveness lease its monitors watch (nil: workloads outlive this agent for good, as on weaver's embedded
    /// node, whose workloads are adopted at weaver's next start).
    public nonisolated let lease: NodeLease?
    public nonisolated let reports: AsyncStream<NodeReport>
    private let continuation: AsyncStream<NodeReport>.Continuation
    private let runtimes: [RuntimeKind: any WorkloadRuntime]
    private let logger: Logger
    /// Attempts this node watches: workload ID -> attempt.
    private var supervisors: [String: WorkloadSupervisor] = [:]
    /// Attempts stopped before they started (`id#attempt`): a late `run` for them must not start anything.
    private var cancelled: Set<String> = []
    /// Workloads whose runtime start is in progress: a stop waits for it, so it never runs before the process
    /// exists (and leaves it running).
    private var starting: Set<String> = []
    static let startWaitMax: Duration = .seconds(30)
    /// SIGTERM-to-SIGKILL grace for an older attempt a new assignment supersedes.
    public nonisolated let supersedeGrace: Duration
    static let cancelledMax = 10_000
    /// What its waits run on (the simulator's virtual clock in simulation).
    private let timer: TaskClock

    public init(
        info: NodeInfo, runtimes: [any WorkloadRuntime], logger: Logger, supersedeGrace: Duration = .seconds(10),
        lease: NodeLease? = nil, timer: TaskClock = .continuous
    ) {
        self.timer = timer
        self.info = info
        self.lease = lease
        self.supersedeGrace = supersedeGrace
        var byKind: [RuntimeKind: any WorkloadRuntime] = [:]
        for r in runtimes { byKind[r.kind] = r }
        self.runtimes = byKind
        self.logger = logger
        (reports, continuation) = AsyncStream.makeStream(of: NodeReport.self, bufferingPolicy: .unbounded)
    }

    /// Starts an assignment and watches it until it exits. Reports `started` or `startFailed`, later `exited`.
    public func run(_ a: Assignment) async {
        if supervisors[a.workloadID]?.attempt == a.attempt || starting.contains(a.workloadID) {
            return  // a repeated delivery of an assignment already started or starting
        }
        if cancelled.remove("\(a.workloadID)#\(a.attempt)") != nil {
            continuation.yield(
                .startFailed(workloadID: a.workloadID, attempt: a.attempt, message: "deleted before it started"))
            return
        }
        guard let runtime = runtimes[a.spec.runtimeKind] else {
            let msg = "node \(info.name) has no \(a.spec.runtimeKind.rawValue) runtime (containerd is not configured)"
            continuation.yield(.startFailed(workloadID: a.workloadID, attempt: a.attempt, message: msg))
            return
        }
        let request = RunRequest(
            workloadID: a.workloadID, attempt: a.attempt, command: a.spec.command ?? [], env: a.spec.env,
            workingDir: a.spec.workingDir, resources: a.spec.resources)
        starting.insert(a.workloadID)
        defer { starting.remove(a.workloadID) }
        // An older attempt of this workload still running here (the node came back after the control plane had
        // given up on it) is superseded: it is stopped before the new one starts, so the two never overlap.
        if let held = await runtime.held(workloadID: a.workloadID),
            held.attempt != a.attempt, case .running = held.state
        {
            logger.warn(
                "stopping a superseded attempt before starting the new one",
                ["workload": a.workloadID, "old": held.attempt, "new": a.attempt])
            await runtime.stop(workloadID: a.workloadID, grace: supersedeGrace)
        }
        do {
            try await runtime.start(request)
        } catch {
            let msg = (error as? FabricError)?.message ?? "\(error)"
            logger.warn("start failed", ["workload": a.workloadID, "attempt": a.attempt, "error": msg])
            continuation.yield(.startFailed(workloadID: a.workloadID, attempt: a.attempt, message: msg))
            return
        }
        logger.info("started", ["workload": a.workloadID, "attempt": a.attempt])
        continuation.yield(.started(workloadID: a.workloadID, attempt: a.attempt))
        watch(a.workloadID, attempt: a.attempt, runtime: runtime)
    }

    /// Looks for a workload after the control plane restarted; a running one is watched again (adopted).
    public func recover(workloadID: String, attempt: Int, kind: RuntimeKind) async -> RecoveredState {
        guard let runtime = runtimes[kind] else { return .missing(reason: "node has no \(kind.rawValue) runtime") }
        let state = await runtime.recover(workloadID: workloadID)
        if case .running = state {
            logger.info("adopted", ["workload": workloadID, "attempt": attempt])
            watch(workloadID, attempt: attempt, runtime: runtime)
        }
        return state
    }

    /// Stops a workload: SIGTERM to its process group, SIGKILL after `grace`. Returns once it is gone, with how
    /// it ended when it had started (nil when it never did).
    @discardableResult
    public func stop(workloadID: String, attempt: Int, kind: RuntimeKind, grace: Duration) async -> ExitStatus? {
        let deadline = timer.elapsed() + Self.startWaitMax
        while starting.contains(workloadID) && timer.elapsed() < deadline {
            try? await timer.sleep(for: .milliseconds(5))
        }
        if supervisors[workloadID]?.attempt != attempt {
            if cancelled.count >= Self.cancelledMax { cancelled.removeAll() }
            cancelled.insert("\(workloadID)#\(attempt)")
        }
        guard let runtime = await runtimeHolding(workloadID, preferring: kind) else { return nil }
        if let held = await runtime.held(workloadID: workloadID), held.attempt > attempt {
            // A newer attempt runs here now; the one asked for was superseded (and stopped) before it started.
            return nil
        }
        await runtime.stop(workloadID: workloadID, grace: grace)
        if case .exited(let status) = await runtime.recover(workloadID: workloadID) { return status }
        return nil
    }

    /// Stops every running attempt (SIGTERM, SIGKILL after `grace`): the node is cut off and will be declared lost,
    /// so its work will run elsewhere. Each end is reported as usual once the link is back.
    public func fence(grace: Duration) async {
        for id in supervisors.keys.sorted() {
            guard let attempt = supervisors[id]?.attempt else { continue }
            logger.warn("fencing", ["workload": id, "attempt": attempt])
            for runtime in runtimes.values { await runtime.stop(workloadID: id, grace: grace) }
        }
    }

    /// The runtime that holds a workload: `kind`'s if it does, else any other that does (a caller that no longer
    /// knows the workload, e.g. weaver stopping a stale attempt of a finished one, can only guess the kind).
    private func runtimeHolding(_ workloadID: String, preferring kind: RuntimeKind) async -> (any WorkloadRuntime)? {
        if let preferred = runtimes[kind], await preferred.held(workloadID: workloadID) != nil { return preferred }
        for k in runtimes.keys.sorted(by: { $0.rawValue < $1.rawValue }) where k != kind {
            if let r = runtimes[k], await r.held(workloadID: workloadID) != nil { return r }
        }
        return runtimes[kind]
    }

    /// The tail of a workload's combined output.
    public func logs(workloadID: String, kind: RuntimeKind, tailBytes: Int?) async throws -> [UInt8] {
        guard let runtime = runtimes[kind] else { return [] }
        return try await runtime.logs(workloadID: workloadID, tailBytes: tailBytes)
    }

    /// Every attempt the runtimes hold that runs, or ended unacknowledged. Running ones are watched from now on
    /// (after a shuttle restart nobody watched them), so their end is reported.
    public func inventory() async -> [RuntimeAttempt] {
        var all: [RuntimeAttempt] = []
        for kind in runtimes.keys.sorted(by: { $0.rawValue < $1.rawValue }) {
            guard let runtime = runtimes[kind] else { continue }
            for entry in await runtime.inventory() {
                if case .running = entry.state { watch(entry.workloadID, attempt: entry.attempt, runtime: runtime) }
                all.append(entry)
            }
        }
        return Array(all.prefix(RuntimeAttempt.inventoryMax))
    }

    /// The control plane knows how an attempt ended: it leaves the inventory.
    public func acknowledge(workloadID: String, attempt: Int) async {
        for runtime in runtimes.values { await runtime.acknowledge(workloadID: workloadID, attempt: attempt) }
    }

    /// Stops reporting (shutdown). Running workloads keep running under their monitors.
    public func finish() { continuation.finish() }

    private func watch(_ id: String, attempt: Int, runtime: any WorkloadRuntime) {
        guard supervisors[id]?.attempt != attempt else { return }
        let supervisor = WorkloadSupervisor(workloadID: id, attempt: attempt, runtime: runtime)
        supervisors[id] = supervisor
        Task { await supervisor.watch { status in await self.exited(id, attempt: attempt, status: status) } }
    }

    private func exited(_ id: String, attempt: Int, status: ExitStatus) {
        if supervisors[id]?.attempt == attempt { supervisors[id] = nil }
        logger.info("exited", ["workload": id, "attempt": attempt, "status": "\(status)"])
        continuation.yield(.exited(workloadID: id, attempt: attempt, status: status))
    }
}
