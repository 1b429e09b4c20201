import FabricCore
import FabricRuntime
import FabricStore
import Foundation
import Synchronization

/// What physically happens in the simulated fleet, as seen from outside production code: which workload attempt
/// runs on which machine, and the machines' sizes. The service simulation's invariants are checked here, at the
/// moment a process starts, so a violation names the step that caused it.
final class Ground: @unchecked Sendable {
    struct Machine {
        var capacity: Resources
        var running: [String: (attempt: Int, resources: Resources)] = [:]
    }

    private(set) var machines: [String: Machine] = [:]
    /// Workload ID -> machine it runs on now.
    private(set) var runningOn: [String: String] = [:]
    private(set) var violation: Violation?
    private(set) var starts = 0
    var now: () -> Timestamp = { Timestamp(millisecondsSinceEpoch: 0) }
    var log: (String) -> Void = { _ in }

    func fail(_ kind: Violation.Kind, _ message: String) {
        guard violation == nil else { return }
        violation = Violation(kind: kind, message: message, at: now())
    }

    func machineUp(_ name: String, capacity: Resources) {
        machines[name] = Machine(capacity: capacity)
    }

    /// A machine is gone: everything on it stops.
    func machineGone(_ name: String) {
        guard let m = machines.removeValue(forKey: name) else { return }
        for w in m.running.keys.sorted() where runningOn[w] == name { runningOn[w] = nil }
    }

    func started(_ w: String, attempt: Int, resources: Resources, on node: String) {
        starts += 1
        log("run w=\(w) attempt=\(attempt) node=\(node)")
        if let other = runningOn[w], other != node {
            fail(.doubleRun, "workload \(w) attempt \(attempt) started on \(node) while it runs on \(other)")
        }
        guard var m = machines[node] else {
            fail(.overCommit, "workload \(w) started on \(node), which is not a machine")
            return
        }
        m.running[w] = (attempt, resources)
        machines[node] = m
        runningOn[w] = node
        var cpu: Int64 = 0
        var mem: Int64 = 0
        var gpus = 0
        for r in m.running.values {
            cpu += r.resources.cpuMillis
            mem += r.resources.memoryBytes
            gpus += r.resources.gpu?.count ?? 0
        }
        if cpu > m.capacity.cpuMillis || mem > m.capacity.memoryBytes || gpus > (m.capacity.gpu?.count ?? 0) {
            fail(
                .overCommit,
                "node \(node) runs cpu=\(cpu)m mem=\(mem) gpus=\(gpus) on cpu=\(m.capacity.cpuMillis)m"
                    + " mem=\(m.capacity.memoryBytes) gpus=\(m.capacity.gpu?.count ?? 0) after starting \(w)")
        }
        if let want = resources.gpu, let model = want.model, want.count > 0, m.capacity.gpu?.model != model {
            fail(
                .gpuMismatch,
                "workload \(w) wants GPU \(model) but started on \(node) with \(m.capacity.gpu?.model ?? "none")")
        }
    }

    func stopped(_ w: String, attempt: Int, on node: String, how: String) {
        log("end w=\(w) attempt=\(attempt) node=\(node) \(how)")
        guard var m = machines[node], m.running[w]?.attempt == attempt else { return }
        m.running[w] = nil
        machines[node] = m
        if runningOn[w] == node { runningOn[w] = nil }
    }
}

/// A node's container runtime in the simulation: each workload's command says how long it runs and how it ends
/// (`["sleep", "<seconds>", "<exit code>"]`); time passes on the virtual clock. Production's `NodeAgent` drives it
/// through the same `WorkloadRuntime` protocol as the process and containerd runtimes.
final class SimRuntime: WorkloadRuntime, @unchecked Sendable {
    let kind: RuntimeKind = .container
    let node: String
    let ground: Ground
    let timer: TaskClock

    private struct Attempt {
        var attempt: Int
        var resources: Resources
        var exited: ExitStatus?
        var acknowledged = false
        var waiters: [CheckedContinuation<ExitStatus, Never>] = []
        var ender: Task<Void, Never>?
    }

    private let state = Mutex<[String: Attempt]>([:])
    /// Set when the machine died: nothing starts any more.
    private let dead = Mutex(false)

    init(node: String, ground: Ground, timer: TaskClock) {
        self.node = node
        self.ground = ground
        self.timer = timer
    }

    func start(_ request: RunRequest) async throws {
        guard !dead.withLock({ $0 }) else { throw FabricError(.unavailable, "machine \(node) is down") }
        let cmd = request.command
        guard cmd.count == 3, cmd[0] == "sleep", let seconds = Int64(cmd[1]), let code = Int32(cmd[2]) else {
            throw FabricError(.invalidArgument, "the simulated runtime runs only [sleep, seconds, code]")
        }
        let id = request.workloadID
        let attempt = request.attempt
        let previous = state.withLock { $0[id] }
        if let p = previous, p.exited == nil { end(id, attempt: p.attempt, .signaled(signal: 9), how: "superseded") }
        ground.started(id, attempt: attempt, resources: request.resources, on: node)
        let timer = self.timer
        let ender = Task { [weak self] in
            do { try await timer.sleep(for: .seconds(seconds)) } catch { return }
            self?.end(id, attempt: attempt, .exited(code: code), how: "exit=\(code)")
        }
        state.withLock { $0[id] = Attempt(attempt: attempt, resources: request.resources, ender: ender) }
    }

    /// Ends an attempt once: records it, wakes its waiters, cancels its timer.
    private func end(_ id: String, attempt: Int, _ status: ExitStatus, how: String) {
        let ended = state.withLock {
            s -> (waiters: [CheckedContinuation<ExitStatus, Never>], ender: Task<Void, Never>?)? in
            guard var a = s[id], a.attempt == attempt, a.exited == nil else { return nil }
            a.exited = status
            defer {
                a.waiters = []
                a.ender = nil
                s[id] = a
            }
            return (a.waiters, a.ender)
        }
        guard let ended else { return }
        ground.stopped(id, attempt: attempt, on: node, how: how)
        ended.ender?.cancel()
        for w in ended.waiters { w.resume(returning: status) }
    }

    func waitForExit(workloadID: String) async -> ExitStatus {
        await withCheckedContinuation { (c: CheckedContinuation<ExitStatus, Never>) in
            let ready = state.withLock { s -> ExitStatus? in
                guard var a = s[workloadID] else { return .exited(code: 255) }
                if let e = a.exited { return e }
                a.waiters.append(c)
                s[workloadID] = a
                return nil
            }
            if let ready { c.resume(returning: ready) }
        }
    }

    func stop(workloadID: String, grace: Duration) async {
        guard let a = state.withLock({ $0[workloadID] }), a.exited == nil else { return }
        end(workloadID, attempt: a.attempt, .signaled(signal: 15), how: "stopped")
    }

    func recover(workloadID: String) async -> RecoveredState {
        guard let a = state.withLock({ $0[workloadID] }) else { return .missing(reason: "no such container") }
        if let e = a.exited { return .exited(e) }
        return .running
    }

    func logs(workloadID: String, tailBytes: Int?) async throws -> [UInt8] { [] }

    func inventory() async -> [RuntimeAttempt] {
        state.withLock { s in
            s.keys.sorted().compactMap { id -> RuntimeAttempt? in
                guard let a = s[id] else { return nil }
                if let e = a.exited {
                    return a.acknowledged ? nil : RuntimeAttempt(workloadID: id, attempt: a.attempt, state: .exited(e))
                }
                return RuntimeAttempt(workloadID: id, attempt: a.attempt, state: .running)
            }
        }
    }

    func held(workloadID: String) async -> RuntimeAttempt? {
        guard let a = state.withLock({ $0[workloadID] }) else { return nil }
        return RuntimeAttempt(
            workloadID: workloadID, attempt: a.attempt, state: a.exited.map { .exited($0) } ?? .running)
    }

    func acknowledge(workloadID: String, attempt: Int) async {
        state.withLock { s in
            guard var a = s[workloadID], a.attempt == attempt else { return }
            a.acknowledged = true
            s[workloadID] = a
        }
    }

    /// The machine died: every process ends at once (no report reaches anyone; the machine is gone).
    func kill() {
        dead.withLock { $0 = true }
        let ids = state.withLock { s in s.keys.sorted().filter { s[$0]?.exited == nil } }
        for id in ids {
            if let a = state.withLock({ $0[id] }) {
                end(id, attempt: a.attempt, .signaled(signal: 9), how: "machine died")
            }
        }
    }
}

/// The store weaver runs on in the simulation: a `MemoryStore` whose every stored phase change also goes to the
/// event log, so the log shows each workload's lifecycle as weaver recorded it.
final class RecordingStore: StateStore, @unchecked Sendable {
    let base: MemoryStore
    let log: (String) -> Void

    init(_ base: MemoryStore, log: @escaping (String) -> Void) {
        self.base = base
        self.log = log
    }

    @discardableResult
    func createWorkload(_ workload: Workload, event: WorkloadEvent, document: Data?) async throws -> WorkloadEvent {
        let stored = try await base.createWorkload(workload, event: event, document: document)
        log("store \(workload.id) created \(workload.phase.rawValue)")
        return stored
    }

    @discardableResult
    func updateWorkload(_ workload: Workload, event: WorkloadEvent?, document: Data?) async throws -> WorkloadEvent? {
        let stored = try await base.updateWorkload(workload, event: event, document: document)
        if let e = stored {
            log(
                "store \(workload.id) \(e.from?.rawValue ?? "-")>\(e.to.rawValue) \(e.reason)"
                    + (workload.status.node.map { " node=\($0)" } ?? ""))
        }
        return stored
    }

    func workload(id: String) async throws -> Workload? { try await base.workload(id: id) }
    func listWorkloads(_ filter: WorkloadFilter) async throws -> WorkloadPage { try await base.listWorkloads(filter) }
    func events(workloadID: String, afterSeq: Int64, limit: Int) async throws -> [WorkloadEvent] {
        try await base.events(workloadID: workloadID, afterSeq: afterSeq, limit: limit)
    }
    func activeWorkloads() async throws -> [Workload] { try await base.activeWorkloads() }
    func upsertNode(_ node: NodeInfo) async throws { try await base.upsertNode(node) }
    func nodes() async throws -> [NodeInfo] { try await base.nodes() }
    func schemaVersion() async throws -> Int { try await base.schemaVersion() }
    func close() async { await base.close() }
}
