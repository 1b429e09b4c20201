import FabricActors
import FabricCore
import FabricLog
import FabricProviders
import FabricRuntime
import FabricStore
import Foundation
import Shuttle
import Synchronization
import Testing

@testable import Weaver

/// The workload service with its real parts (SQLite store, process runtime, node agent) in one process, under a
/// manual clock and seeded IDs.
struct ServiceHarness {
    let dir: String
    let clock = ManualClock()
    let store: SQLiteStore
    let service: WorkloadService
    let sink = MemorySink()
    let control: ControlPlane
    let host: NodeHost
    let network = LoopbackNetwork()
    let logger: Logger
    /// Every workload and node event the service published.
    let published = RecordingPublisher()

    init(
        cpu: Int64 = 2000, restartBase: Duration = .seconds(1), dir: String? = nil, providers: [any Provider] = [],
        offers: [Offer] = [], batchWindow: Duration = .zero
    ) async throws {
        self.dir = dir ?? NSTemporaryDirectory() + "fabric-svc-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: self.dir, withIntermediateDirectories: true)
        store = try await SQLiteStore(path: self.dir + "/fabric.db")
        var options = WorkloadServiceOptions()
        options.retryInterval = .seconds(3600)  // passes run only when the test or a report triggers them
        options.restartBackoffBase = restartBase
        options.persistLanes = 1
        options.nodeTiming = NodeLifecycle.Timing(
            heartbeatInterval: .milliseconds(50), suspectAfter: .seconds(5), lostAfter: .seconds(10))
        let logger = Logger(component: "test", level: .debug, sink: sink)
        self.logger = logger
        options.instancePollInterval = .milliseconds(20)
        options.machineBatchWindow = batchWindow
        let view = OfferView(offers: offers, enabledProviders: Set(providers.map(\.name.rawValue)))
        service = WorkloadService(
            store: store, clock: clock, ids: SeededIDGenerator(seed: 7), logger: logger, options: options,
            offerView: { view }, events: published, providers: providers)
        let runtime = ProcessRuntime(root: self.dir + "/workloads", logBytesMax: 1 << 20)
        let node = NodeInfo(
            id: "local", name: "local", capacity: Resources(cpuMillis: cpu, memoryBytes: 4 << 30),
            registeredAt: clock.now())
        try await service.start()
        // The node joins through the node protocol, on in-process actor systems (every call still encoded).
        let system = try LocalActorSystem(node: NodeProtocolLimits.controlPlaneNode, network: network)
        control = try ControlPlane.serve(registry: service, on: system)
        let nodeSystem = try LocalActorSystem(node: "local", network: network)
        host = try NodeHost(
            agent: NodeAgent(info: node, runtimes: [runtime], logger: logger), system: nodeSystem,
            options: ShuttleRunner.Options(joinToken: "", session: "session-1", version: "test"), logger: logger)
        guard await host.waitUntilRegistered(timeout: .seconds(20)) else {
            throw FabricError(.unavailable, "the test node did not register")
        }
    }

    /// Another node joining (or `local` coming back with a new session), its workloads under `root`.
    func join(_ name: String, cpu: Int64 = 2000, price: Double = 0, root: String, session: String) async throws
        -> NodeHost
    {
        let node = NodeInfo(
            id: name, name: name, capacity: Resources(cpuMillis: cpu, memoryBytes: 4 << 30), pricePerHour: price,
            registeredAt: clock.now())
        let host = try NodeHost(
            agent: NodeAgent(
                info: node, runtimes: [ProcessRuntime(root: root, logBytesMax: 1 << 20)], logger: logger,
                supersedeGrace: .seconds(1)),
            system: try LocalActorSystem(node: name, network: network),
            options: ShuttleRunner.Options(joinToken: "", session: session, version: "test"), logger: logger)
        guard await host.waitUntilRegistered(timeout: .seconds(20)) else {
            throw FabricError(.unavailable, "node \(name) did not register")
        }
        return host
    }

    func spec(_ name: String, _ command: [String], cpu: Int64 = 500, restart: RestartPolicy = .never) -> WorkloadSpec {
        WorkloadSpec(
            name: name, command: command, resources: Resources(cpuMillis: cpu, memoryBytes: 64 << 20),
            restartPolicy: restart)
    }

    /// Polls until `done` holds for the workload (bounded), returning it.
    func wait(_ id: String, seconds: Double = 20, _ done: (Workload) -> Bool) async throws -> Workload {
        let deadline = Date().addingTimeInterval(seconds)
        var w = try await service.get(id)
        while !done(w) && Date() < deadline {
            try await Task.sleep(for: .milliseconds(20))
            w = try await service.get(id)
        }
        return w
    }

    /// `local` stops heartbeating, and 11 s (past lost_after) pass on the manual clock in steps of 0.25 s, each
    /// with 60 ms of real time for other nodes to heartbeat (every 50 ms) and a node tick.
    func silenceLocalPastLostAfter() async throws {
        await host.stop()
        await host.system.shutdown()
        for _ in 0..<44 {
            clock.advance(by: .milliseconds(250))
            try await Task.sleep(for: .milliseconds(60))
            await service.nodeTick()
        }
    }

    func events(_ id: String) async throws -> [String] {
        try await Task.sleep(for: .milliseconds(100))  // let queued writes land
        return try await store.events(workloadID: id, afterSeq: 0, limit: 100).map { "\($0.to.rawValue):\($0.reason)" }
    }
}

/// An event publisher that keeps what it is given.
final class RecordingPublisher: EventPublisher {
    private let state = Mutex<(workloads: [WorkloadEvent], nodes: [NodeEvent])>(([], []))

    func publish(_ event: WorkloadEvent) { state.withLock { $0.workloads.append(event) } }
    func publish(_ event: NodeEvent) { state.withLock { $0.nodes.append(event) } }

    /// The node events of `node`, in the order published.
    func nodeEvents(_ node: String) -> [NodeEvent] { state.withLock { $0.nodes.filter { $0.node == node } } }
}

@Suite(.serialized) struct WorkloadServiceTests {
    @Test func onFailureRestartsAfterBackoffOnTheManualClock() async throws {
        let h = try await ServiceHarness()
        let w = try await h.service.submit(
            h.spec("flaky", ["sh", "-c", "echo attempt failing; exit 4"], restart: .onFailure))
        let waiting = try await h.wait(w.id) { $0.phase == .pending && $0.status.attempts == 1 }
        #expect(waiting.status.reason == "Restarting")
        #expect(waiting.status.exitCode == 4)
        // Waiting out its backoff, it has no node, yet its last attempt's output is still readable.
        #expect(waiting.status.node == nil)
        #expect(String(decoding: try await h.service.logs(w.id, tailBytes: nil), as: UTF8.self) == "attempt failing\n")
        // The backoff (1 s after the first attempt) has not passed on the manual clock: nothing starts.
        await h.service.schedulePass()
        #expect(try await h.service.get(w.id).status.attempts == 1)
        h.clock.advance(by: .seconds(2))
        await h.service.schedulePass()
        let second = try await h.wait(w.id) { $0.status.attempts == 2 && $0.phase == .pending }
        #expect(second.status.attempts == 2)
        // Second backoff is 2 s.
        h.clock.advance(by: .seconds(1))
        await h.service.schedulePass()
        #expect(try await h.service.get(w.id).status.attempts == 2)
        let deleted = try await h.service.delete(w.id)
        #expect(deleted.phase == .deleted)
        #expect(
            try await h.events(w.id) == [
                "pending:Created", "scheduled:Scheduled", "starting:Starting", "running:Started", "pending:Restarting",
                "scheduled:Scheduled", "starting:Starting", "running:Started", "pending:Restarting", "deleted:Deleted",
            ])
    }

    @Test func neverPolicyFailsAndFreesCapacity() async throws {
        let h = try await ServiceHarness(cpu: 1000)
        let a = try await h.service.submit(h.spec("a", ["sh", "-c", "exit 2"], cpu: 1000))
        let b = try await h.service.submit(h.spec("b", ["true"], cpu: 1000))
        let failed = try await h.wait(a.id) { $0.phase.isFinal }
        #expect(failed.phase == .failed)
        #expect(failed.status.exitCode == 2)
        let ok = try await h.wait(b.id) { $0.phase.isFinal }
        #expect(ok.phase == .succeeded)
        #expect(await h.service.node(id: "local")?.allocated.cpuMillis == 0)
    }

    @Test func concurrentSubmissionsNeverOverCommit() async throws {
        let h = try await ServiceHarness(cpu: 2000)
        let ids = try await withThrowingTaskGroup(of: String.self) { g in
            for i in 0..<60 {
                g.addTask { try await h.service.submit(h.spec("c\(i)", ["sleep", "0.05"], cpu: 300)).id }
            }
            return try await g.reduce(into: []) { $0.append($1) }
        }
        var peak: Int64 = 0
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline {
            let allocated = await h.service.node(id: "local")?.allocated.cpuMillis ?? 0
            peak = max(peak, allocated)
            #expect(allocated <= 2000)
            var done = 0
            for id in ids where try await h.service.get(id).phase == .succeeded { done += 1 }
            if done == ids.count { break }
            try await Task.sleep(for: .milliseconds(10))
        }
        for id in ids { #expect(try await h.service.get(id).phase == .succeeded) }
        #expect(peak > 0)
        #expect(await h.service.node(id: "local")?.allocated.cpuMillis == 0)
    }

    @Test func aLostNodesWorkloadRunsElsewhereAndItsStaleCopyStopsWhenTheNodeReturns() async throws {
        let h = try await ServiceHarness()
        let n2 = try await h.join("n2", price: 5, root: h.dir + "/n2", session: "n2-a")
        let w = try await h.service.submit(h.spec("long", ["sleep", "60"], restart: .always))
        let first = try await h.wait(w.id) { $0.phase == .running }
        #expect(first.status.node == "local", "the free node is cheaper")
        // `local` stops heartbeating (its workload keeps running: this runtime has no lease); n2 heartbeats on.
        try await h.silenceLocalPastLostAfter()
        #expect(await h.service.node(id: "local")?.state == .lost)
        #expect(await h.service.node(id: "n2")?.state == .ready)
        let moved = try await h.wait(w.id) { $0.phase == .running && $0.status.node == "n2" }
        let history = try await h.events(w.id)
        #expect(moved.status.attempts == 2, "\(history) \(h.sink.lines.suffix(30))")
        #expect(await h.service.node(id: "local")?.allocated == .zero)
        #expect(await h.service.node(id: "n2")?.allocated.cpuMillis == 500)
        #expect(try await h.events(w.id).contains("lost:Lost"))
        // `local` comes back with attempt 1 still running: weaver stops it; attempt 2 runs on.
        let back = try await h.join("local", root: h.dir + "/workloads", session: "session-2")
        let oldRuntime = ProcessRuntime(root: h.dir + "/workloads", logBytesMax: 1 << 20)
        var stale = await oldRuntime.held(workloadID: w.id)
        let deadline = Date().addingTimeInterval(20)
        while stale?.state == .running && Date() < deadline {
            try await Task.sleep(for: .milliseconds(50))
            stale = await oldRuntime.held(workloadID: w.id)
        }
        #expect(stale?.attempt == 1)
        #expect(stale?.state == .exited(.signaled(signal: SIGTERM)))
        #expect(await h.service.node(id: "local")?.state == .ready)
        // The stale copy's room is held on `local` until weaver hears its stop completed, then freed.
        for _ in 0..<500 where await h.service.node(id: "local")?.allocated != .zero {
            try await Task.sleep(for: .milliseconds(10))
        }
        #expect(await h.service.node(id: "local")?.allocated == .zero, "capacity is not counted twice")
        let now = try await h.service.get(w.id)
        #expect(now.phase == .running && now.status.node == "n2" && now.status.attempts == 2)
        _ = try await h.service.delete(w.id)
        _ = try await h.wait(w.id) { $0.phase == .deleted }
        await back.stop()
        await n2.stop()
    }

    @Test func aStaleCopyOfAWorkloadThatEndedMeanwhileHoldsItsRoomUntilItStops() async throws {
        let h = try await ServiceHarness()
        // It takes 2 s to stop after SIGTERM, so its room is still in use for a while after the stop is asked.
        let w = try await h.service.submit(
            h.spec("slow-stop", ["sh", "-c", "trap 'sleep 2; exit 0' TERM; sleep 60 & wait"], cpu: 1500))
        _ = try await h.wait(w.id) { $0.phase == .running }
        try await h.silenceLocalPastLostAfter()
        // Lost with restartPolicy never: it ends, while its attempt still runs on the silent node.
        let ended = try await h.wait(w.id) { $0.phase == .failed }
        #expect(ended.status.reason == "Lost")
        let back = try await h.join("local", root: h.dir + "/workloads", session: "session-2")
        // The node came back running it: its 1500m stay charged while it stops, so nothing lands in that room.
        #expect(await h.service.node(id: "local")?.allocated.cpuMillis == 1500)
        for _ in 0..<1000 where await h.service.node(id: "local")?.allocated != .zero {
            try await Task.sleep(for: .milliseconds(10))
        }
        #expect(await h.service.node(id: "local")?.allocated == .zero)
        let old = await ProcessRuntime(root: h.dir + "/workloads", logBytesMax: 1 << 20).held(workloadID: w.id)
        #expect(old?.attempt == 1)
        #expect(old?.state != .running)
        await back.stop()
    }

    @Test func theMemoOfEndedWorkloadsKeepsOnlyTheLatest() async throws {
        let h = try await ServiceHarness()
        let spec = h.spec("x", ["true"], cpu: 100)
        let count = WorkloadService.endedMemoMax * 2 + 5
        for i in 0..<count { await h.service.rememberEnded("w\(i)", spec) }
        let memo = await h.service.endedWorkloads
        #expect(memo.count == WorkloadService.endedMemoMax)
        #expect(memo["w0"] == nil)
        #expect(memo["w\(count - 1)"]?.resources.cpuMillis == 100)
        #expect(memo["w\(count - WorkloadService.endedMemoMax)"] != nil)
        #expect(await h.service.endedOrder.count <= 2 * WorkloadService.endedMemoMax + 1)
    }

    @Test func aStalledWeaverDoesNotDeclareItsNodesLost() async throws {
        let h = try await ServiceHarness()
        await h.service.nodeTick()
        // The clock jumps 30 s at once (weaver did not run meanwhile): nobody heartbeated, nobody is lost.
        h.clock.advance(by: .seconds(30))
        await h.service.nodeTick()
        #expect(await h.service.node(id: "local")?.state == .ready)
        #expect(h.sink.lines.contains { $0.contains("weaver stalled") })
    }

    @Test func vanishedProcessIsMarkedLostOnRecovery() async throws {
        let dir = NSTemporaryDirectory() + "fabric-lost-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        // A store that says two workloads run on `local`, with no process records behind them.
        let store = try await SQLiteStore(path: dir + "/fabric.db")
        let now = Timestamp(millisecondsSinceEpoch: 1_800_000_000_000)
        for (id, policy) in [("wl-never", RestartPolicy.never), ("wl-again", .onFailure)] {
            var w = Workload(
                id: id, spec: WorkloadSpec(name: "x", command: ["true"], restartPolicy: policy),
                status: WorkloadStatus(phase: .pending, reason: "Created"), createdAt: now)
            try await store.createWorkload(
                w, event: WorkloadEvent(workloadID: id, seq: 1, at: now, from: nil, to: .pending, reason: "Created"))
            w.version = 2
            w.status = WorkloadStatus(phase: .running, reason: "Started")
            w.status.node = "local"
            w.status.attempts = 1
            try await store.updateWorkload(
                w,
                event: WorkloadEvent(workloadID: id, seq: 0, at: now, from: .pending, to: .running, reason: "Started"))
        }
        await store.close()

        let h = try await ServiceHarness(dir: dir)
        let never = try await h.service.get("wl-never")
        #expect(never.phase == .failed)
        #expect(never.status.reason == "Lost")
        let again = try await h.wait("wl-again") { $0.phase == .pending || $0.phase == .succeeded }
        #expect(again.status.attempts >= 1)
        #expect(try await h.events("wl-never").suffix(2) == ["lost:Lost", "failed:Lost"])
        #expect(h.sink.lines.contains { $0.contains("workload lost") && $0.contains("wl-never") })
    }
}

/// A store whose `activeWorkloads` (what `start()` reads first) waits until the test releases it.
final class GatedStore: StateStore, @unchecked Sendable {
    let inner: any StateStore
    private let state = Mutex<(asked: Bool, released: Bool)>((false, false))

    init(_ inner: any StateStore) { self.inner = inner }

    func release() { state.withLock { $0.released = true } }
    func waitUntilAsked() async {
        while !state.withLock({ $0.asked }) { try? await Task.sleep(for: .milliseconds(5)) }
    }

    func activeWorkloads() async throws -> [Workload] {
        state.withLock { $0.asked = true }
        while !state.withLock({ $0.released }) { try await Task.sleep(for: .milliseconds(5)) }
        return try await inner.activeWorkloads()
    }
    func createWorkload(_ w: Workload, event: WorkloadEvent, document: Data?) async throws -> WorkloadEvent {
        try await inner.createWorkload(w, event: event, document: document)
    }
    func updateWorkload(_ w: Workload, event: WorkloadEvent?, document: Data?) async throws -> WorkloadEvent? {
        try await inner.updateWorkload(w, event: event, document: document)
    }
    func workload(id: String) async throws -> Workload? { try await inner.workload(id: id) }
    func listWorkloads(_ filter: WorkloadFilter) async throws -> WorkloadPage { try await inner.listWorkloads(filter) }
    func events(workloadID: String, afterSeq: Int64, limit: Int) async throws -> [WorkloadEvent] {
        try await inner.events(workloadID: workloadID, afterSeq: afterSeq, limit: limit)
    }
    func upsertNode(_ node: NodeInfo) async throws { try await inner.upsertNode(node) }
    func nodes() async throws -> [NodeInfo] { try await inner.nodes() }
    func schemaVersion() async throws -> Int { try await inner.schemaVersion() }
    func close() async { await inner.close() }
}

struct RecoveryGateTests {
    /// A node that calls while weaver is still loading its stored state waits for it: answered early, it would
    /// find none of its workloads known and have them all stopped as stale.
    @Test func nodeCallsWaitUntilTheStoredStateIsLoaded() async throws {
        let dir = NSTemporaryDirectory() + "fabric-gate-\(UUID().uuidString.prefix(8))"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let sqlite = try await SQLiteStore(path: dir + "/fabric.db")
        let store = GatedStore(sqlite)
        let service = WorkloadService(
            store: store, clock: ManualClock(), ids: SeededIDGenerator(seed: 3),
            logger: Logger(component: "test", level: .error))
        let starting = Task { try await service.start() }
        await store.waitUntilAsked()  // start() is inside the store read now
        let order = Mutex<[String]>([])
        let heartbeat = Task {
            _ = await service.heartbeat(node: "n1", session: "s1")
            order.withLock { $0.append("heartbeat answered") }
        }
        try await Task.sleep(for: .milliseconds(200))  // ungated, the heartbeat would be answered by now
        order.withLock { $0.append("state released") }
        store.release()
        try await starting.value
        await heartbeat.value
        #expect(order.withLock { $0 } == ["state released", "heartbeat answered"])
        await service.shutdown()
        await sqlite.close()
    }
}
