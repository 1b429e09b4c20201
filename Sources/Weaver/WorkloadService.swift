import FabricActors
import FabricCore
import FabricLog
import FabricProviders
import FabricRuntime
import FabricScheduler
import FabricStore
import Foundation
import Shuttle
import Synchronization

/// Offers and provider state the scheduler may use for dry runs (and, later, provisioning).
public struct OfferView: Sendable {
    public var offers: [Offer]
    public var enabledProviders: Set<String>

    public init(offers: [Offer], enabledProviders: Set<String>) {
        self.offers = offers
        self.enabledProviders = enabledProviders
    }
}

/// Tunables of the workload service, with the defaults weaver runs with.
public struct WorkloadServiceOptions: Sendable {
    /// How often pending workloads are tried again without a trigger (retry backoffs expire on these ticks).
    public var retryInterval: Duration = .seconds(2)
    /// SIGTERM to SIGKILL on DELETE.
    public var stopGrace: Duration = .seconds(10)
    /// The most workloads waiting to be placed; more are refused with 429.
    public var pendingMax = 100_000
    /// Restart backoff: base doubled per attempt, capped.
    public var restartBackoffBase: Duration = .seconds(1)
    public var restartBackoffMax: Duration = .seconds(60)
    /// Store write lanes (parallel writers).
    public var persistLanes = 4
    /// Node heartbeat timing: when a silent node becomes suspect, then lost.
    public var nodeTiming = NodeLifecycle.Timing()
    /// The token nodes must present to register (`cluster.join_token`); empty accepts any (single-process mode).
    public var joinToken = ""
    /// How long an offer that failed with a capacity or quota error is skipped.
    public var offerUnavailableFor: Duration = .seconds(300)
    /// Retries of one provider call that was throttled or failed transiently, before the offer is skipped.
    public var providerRetriesMax = 4
    /// First wait between those retries (doubled each time, capped at `providerRetryMax`) when no Retry-After came.
    public var providerRetryBase: Duration = .seconds(1)
    public var providerRetryMax: Duration = .seconds(30)
    /// How often instances made for workloads are checked with their providers.
    public var instancePollInterval: Duration = .seconds(5)
    /// A workload still provisioning after this is given up there: its instance is deleted and it is placed again.
    public var provisioningTimeout: Duration = .seconds(900)
    /// How often every provider's list of Fabric-owned instances is reconciled with the store.
    public var reconcileInterval: Duration = .seconds(60)
    /// How long workloads that need a new machine (AWS, GCP) wait for others to plan it with, so that several small
    /// ones share one machine where that is cheaper (`BatchPlanner`). Zero plans, at the end of each scheduling
    /// pass, the workloads that pass judged.
    public var machineBatchWindow: Duration = .zero
    /// Fault injection for crash tests: the process exits (code 137, as if killed) right after a provider made
    /// an instance and before the answer is stored. Set by `WEAVER_FAULT_CRASH_AFTER_PROVISION=1`; never in
    /// production.
    public var crashAfterProvision = false
    /// The boot script of a new machine (AWS, GCP), given the node name it must join as: it starts shuttle with
    /// weaver's NATS URL and join token. Nil: machines are not given one (their image must start shuttle itself).
    public var machineBootstrap: (@Sendable (String) -> String)? = nil

    public init() {}
}

/// Scheduler figures for `GET /v1/scheduler/status`.
public struct SchedulerStatus: Sendable, Codable, Hashable {
    public struct PendingWorkload: Sendable, Codable, Hashable {
        public var id: String
        public var name: String
        public var since: Timestamp
        public var reasons: [String: Int]
    }
    public var pending: Int
    public var active: Int
    public var placementsTotal: Int
    public var passes: Int
    public var lastPassAt: Timestamp?
    public var lastPassMicros: Int
    public var storeBacklog: Int
    /// The oldest pending workloads (at most 20) and why they wait.
    public var oldestPending: [PendingWorkload]
}

/// The control plane's workload controller: accepts workloads, places them, drives their lifecycle, and
/// recovers after a restart.
///
/// All state changes happen synchronously inside the actor (so capacity is never counted twice, even under
/// many concurrent requests) and are then written to the store in order through a `PersistQueue`. A workload
/// is handed to a node only after its `starting` state is stored, so a crash can never run it twice.
public actor WorkloadService {
    let store: any StateStore
    let clock: any WallClock
    /// What every wait (ticks, retries, backoffs) and the pass timing run on.
    let timer: TaskClock
    let ids: any IDGenerator
    let stack: PlacementStack
    let logger: Logger
    let options: WorkloadServiceOptions
    let offerView: @Sendable () -> OfferView
    let persist: PersistQueue
    /// JSON documents of unfinished (and just finished) workloads, readable without entering the actor.
    public nonisolated let documents = DocumentCache()

    /// Nodes by ID, with their allocations (rebuilt from active workloads at start).
    var nodes: [String: NodeInfo] = [:]
    /// How to reach each registered node.
    var clients: [String: ShuttleNode] = [:]
    /// The session (shuttle process run) each node registered with; heartbeats and reports of other sessions
    /// are answered `registerAgain`.
    var sessions: [String: String] = [:]
    /// Heartbeat bookkeeping: ready, suspect, lost, draining.
    var lifecycle: NodeLifecycle
    /// The last event sequence number of each deregistered node, so that a node joining again under the same name
    /// continues its subject's (`fabric.events.node.<id>`) sequence.
    var nodeEventSeq: [String: Int] = [:]
    /// Whether the link to the nodes (NATS) is up; while it is down nobody is declared lost.
    let linkUp: @Sendable () -> Bool
    var linkWasDown = false
    /// When the node clocks were last checked: a longer gap than `suspectAfter` means weaver itself stalled.
    var lastNodeTick: Timestamp?
    var nodeTickTask: Task<Void, Never>?
    let events: (any EventPublisher)?
    /// Every workload not in a final phase. Final ones live only in the store.
    var active: [String: Workload] = [:]
    /// Whether `start()` is loading the stored state, and the node calls waiting for it to finish.
    var recovering = false
    var recoveryWaiters: [CheckedContinuation<Void, Never>] = []

    /// Returns once the stored state is loaded (at once when no `start()` is in progress).
    func recovered() async {
        guard recovering else { return }
        await withCheckedContinuation { recoveryWaiters.append($0) }
    }

    /// The node a workload's last attempt ran on while it waits to restart (its logs are read there).
    var previousNode: [String: String] = [:]
    /// Pending workload IDs, oldest first; may hold IDs that left `pending` (compacted on full passes).
    var pendingOrder: [String] = []
    /// The workloads pending now.
    var pendingSet: Set<String> = []
    /// Pending workloads not yet judged against the current capacity (new, restarted, or backing off).
    var fresh: [String] = []
    /// Set when capacity grew (a release, a new node, a tick): the next pass judges every pending workload.
    /// Placements only shrink capacity, so between such events only fresh workloads need judging, which keeps
    /// a submission O(1) however many workloads wait.
    var fullPassNeeded = true
    var retryAfter: [String: Timestamp] = [:]
    /// What each placed workload is charged to: capacity is counted once per workload, never twice.
    var allocations: [String: (node: String, resources: Resources)] = [:]
    /// Workloads that just reached a final phase, kept until that write is stored, so reads see it at once.
    var finishing: [String: Workload] = [:]
    /// What the latest `endedMemoMax` workloads to reach a final phase asked for and ran in, oldest first in
    /// `endedOrder`: a node that comes back after a partition may still run an attempt of one of them, which is
    /// stopped in its runtime, and its room stays charged until then.
    var endedWorkloads: [String: (resources: Resources, kind: RuntimeKind)] = [:]
    var endedOrder: [String] = []
    var endedOrderStart = 0
    static let endedMemoMax = 10_000

    /// Machines made for workloads (instance name, which is the node's ID once it joins) -> the workloads that hold
    /// it: the batch it was planned for and whoever was placed in its free room since, less those that left. It is
    /// deleted when the last of them leaves it, so everything placed there holds it.
    var machineOwners: [String: Set<String>] = [:]
    /// Workloads judged to need a new machine, waiting (at most `machineBatchWindow`) to be planned together, with
    /// the single placement each was judged to have.
    var machineBatch: [(id: String, single: Placement)] = []
    var machineBatchDue = false
    /// Provider drivers by name: workloads placed on their offers get an instance there.
    let providers: [String: any Provider]
    /// Where the reconciler records how its calls to each provider went (shown as the provider's health).
    let providerCalls: ProviderCallLog
    /// Offers skipped until the time given (capacity or quota errors, preemptions).
    var unavailableUntil: [OfferKey: Timestamp] = [:]
    var instancePollTask: Task<Void, Never>?
    var reconcileTask: Task<Void, Never>?

    var passRunning = false
    var passRequested = false
    var placementsTotal = 0
    var passes = 0
    var lastPassAt: Timestamp?
    var lastPassMicros = 0
    var tickTask: Task<Void, Never>?

    public init(
        store: any StateStore, clock: any WallClock, ids: any IDGenerator, logger: Logger,
        options: WorkloadServiceOptions = .init(), stack: PlacementStack = PlacementStack(),
        offerView: @escaping @Sendable () -> OfferView = { OfferView(offers: [], enabledProviders: []) },
        events: (any EventPublisher)? = nil, linkUp: @escaping @Sendable () -> Bool = { true },
        providers: [any Provider] = [], providerCalls: ProviderCallLog = ProviderCallLog(),
        timer: TaskClock = .continuous
    ) {
        self.timer = timer
        self.providerCalls = providerCalls
        self.providers = Dictionary(providers.map { ($0.name.rawValue, $0) }, uniquingKeysWith: { a, _ in a })
        self.lifecycle = NodeLifecycle(timing: options.nodeTiming)
        self.linkUp = linkUp
        self.events = events
        self.store = store
        self.clock = clock
        self.ids = ids
        self.logger = logger
        self.options = options
        self.stack = stack
        self.offerView = offerView
        self.persist = PersistQueue(
            store: store, lanes: options.persistLanes, logger: logger, events: events, timer: timer)
    }

    // MARK: - Nodes

    public func listNodes() -> [NodeInfo] { nodes.values.sorted { $0.id < $1.id } }
    public func node(id: String) -> NodeInfo? { nodes[id] }

    // MARK: - Start and recovery

    /// Loads every unfinished workload from the store and reconciles it with what the nodes really run:
    /// running processes are adopted, ones that ended while weaver was down get their exit recorded, vanished
    /// ones are marked lost (then restarted or failed by policy). Then scheduling starts.
    public func start() async throws {
        // Node calls that arrive while the state loads wait for it (see `recovered()`): a node registering
        // before its workloads are known would have all of them stopped as stale.
        recovering = true
        defer {
            recovering = false
            for waiter in recoveryWaiters { waiter.resume() }
            recoveryWaiters = []
        }
        let rows = try await store.activeWorkloads().sorted { ($0.createdAt, $0.id) < ($1.createdAt, $1.id) }
        let storedNodes = Dictionary(
            (try await store.nodes()).map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        var awaiting = 0
        var lost = 0
        var resumed: [String: String] = [:]  // instance name → the first workload waiting for it
        for w in rows {
            setActive(w)
            switch w.phase {
            case .pending:
                enqueuePending(w.id)
            case .lost, .preempted:
                applyRestartPolicy(w.id, succeeded: false, reason: "Lost", message: w.status.message)
            case .provisioning where w.status.instance != nil:
                // Its instance may exist (the call went out before the crash): ask again under the same name, once
                // per instance however many workloads of a batch wait for it.
                if resumed[w.status.instance!.name] == nil { resumed[w.status.instance!.name] = w.id }
            case .starting where w.status.instance != nil && w.status.node == nil,
                .running where w.status.instance != nil && w.status.node == nil:
                break  // runs on its provider's instance: the instance watcher picks it up
            case .terminating where w.status.instance != nil && w.status.node == nil:
                terminateInstanceThenFinish(w.id)
            case .scheduled, .provisioning:
                // Never handed to a node (its `starting` was not stored): place it again.
                transition(w.id, to: .pending, reason: "Rescheduled", message: "not started before restart") {
                    $0.status.node = nil
                    $0.status.placement = nil
                }
                enqueuePending(w.id)
            case .starting, .running, .terminating:
                // Its node reports what it runs when it registers again; until then the node is suspect, and
                // lost (with this workload) if it stays silent for `lostAfter`.
                guard let nodeID = w.status.node else {
                    markLost(w.id, message: "no node recorded for a placed workload")
                    lost += 1
                    continue
                }
                awaiting += 1
                restoreNode(nodeID, from: storedNodes[nodeID])
            case .succeeded, .failed, .deleted:
                setActive(nil, id: w.id)
            }
        }
        for name in resumed.keys.sorted() { resumeProvisioning(resumed[name]!) }
        logger.info(
            "recovered state",
            [
                "workloads": rows.count, "awaitingNode": awaiting, "lost": lost, "pending": pendingSet.count,
                "nodes": nodes.count,
            ])
        let interval = options.retryInterval
        let timer = self.timer
        tickTask = Task { [weak self] in
            while !Task.isCancelled {
                try? await timer.sleep(for: interval)
                await self?.tick()
            }
        }
        let nodeInterval = min(max(options.nodeTiming.heartbeatInterval / 2, .milliseconds(100)), .seconds(1))
        nodeTickTask = Task { [weak self] in
            while !Task.isCancelled {
                try? await timer.sleep(for: nodeInterval)
                await self?.nodeTick()
            }
        }
        startProvisioningLoops()
        schedulePass()
    }

    /// Stops the periodic scheduler and waits for queued store writes (bounded).
    public func shutdown() async {
        tickTask?.cancel()
        nodeTickTask?.cancel()
        instancePollTask?.cancel()
        reconcileTask?.cancel()
        persist.finish()
        for _ in 0..<100 where persist.backlog > 0 { try? await timer.sleep(for: .milliseconds(20)) }
    }

    // MARK: - API operations

    /// Accepts a workload: stores it as pending (answered once durable) and places it when it fits.
    public func submit(_ spec: WorkloadSpec) async throws -> Workload {
        try await accept(spec).workload
    }

    /// `submit`, also returning the stored workload's JSON document (what `POST /v1/workloads` answers).
    public func submitEncoded(_ spec: WorkloadSpec) async throws -> Data {
        try await accept(spec).document
    }

    func accept(_ spec: WorkloadSpec) async throws -> (workload: Workload, document: Data) {
        guard pendingSet.count < options.pendingMax else {
            throw FabricError(.resourceExhausted, "\(pendingSet.count) workloads are already pending; try again later")
        }
        let now = clock.now()
        var w = Workload(
            id: ids.next(prefix: "wl"), spec: spec,
            status: WorkloadStatus(phase: .pending, reason: "Created", message: "waiting to be placed"), createdAt: now)
        // Judge it now: one that fits nowhere is stored with its reasons in one write instead of two.
        let decision = stack.select(placementSnapshot(now: now, nodes: sortedNodes), spec)
        if decision.placement == nil {
            w.status.pendingReasons = decision.filtered
            w.status.reason = "NoFeasibleCandidate"
            w.status.message = Self.describe(decision.filtered)
        }
        let event = WorkloadEvent(workloadID: w.id, seq: 1, at: now, from: nil, to: .pending, reason: "Created")
        let document = try FabricJSON.encode(w)
        let stored = persist.enqueue(.create(w, event, document))
        setActive(w, document: document)
        enqueuePending(w.id)
        if decision.placement == nil { fresh.removeLast() }  // already judged against the current capacity
        schedulePass()  // its writes queue behind the create, on the same lane
        do {
            try await stored.value()
        } catch {
            // Undo: nothing of it may run or hold capacity. Writes queued after the create fail as not found.
            release(w.id)
            setActive(nil, id: w.id)
            pendingSet.remove(w.id)
            logger.error("workload not stored", ["workload": w.id, "error": error])
            let detail = (error as? FabricError)?.message ?? "\(error)"
            throw FabricError(.unavailable, "the workload could not be stored: \(detail)")
        }
        logger.info("accepted", ["workload": w.id, "name": spec.name])
        return (w, document)
    }

    var sortedNodes: [NodeInfo] { nodes.values.sorted { $0.id < $1.id } }

    /// Sets (or clears) a workload's in-memory state and its cached JSON document.
    func setActive(_ w: Workload?, id: String? = nil, document: Data? = nil) {
        guard let key = w?.id ?? id else { return }
        indexMachine(old: active[key], new: w)
        active[key] = w
        if let w {
            documents.set(key, document ?? (try? FabricJSON.encode(w)))
        } else if finishing[key] == nil {
            documents.set(key, nil)
        }
    }

    /// The placement plan for a spec, with every candidate, storing nothing.
    public func dryRun(_ spec: WorkloadSpec) -> PlacementDecision {
        let view = offerView()
        let snapshot = PlacementSnapshot(
            nodes: nodes.values.sorted { $0.id < $1.id }, offers: view.offers,
            enabledProviders: view.enabledProviders, unavailableOffers: currentlyUnavailable(now: clock.now()),
            includeOffers: true)
        return stack.select(snapshot, spec)
    }

    /// One workload: the in-memory state for unfinished ones, else the stored record.
    public func get(_ id: String) async throws -> Workload {
        if let w = active[id] ?? finishing[id] { return w }
        guard let w = try await store.workload(id: id) else { throw notFound(id) }
        return w
    }

    /// Deletes a workload: pending ones at once; placed ones after SIGTERM (then SIGKILL after the grace).
    public func delete(_ id: String) async throws -> Workload {
        guard let w = active[id] else {
            // A workload that just finished: let its final write land first, so this one builds on it.
            for _ in 0..<Self.finishWaitRounds where finishing[id] != nil {
                try await timer.sleep(for: .milliseconds(10))
            }
            if let again = active[id] { return try await delete(again.id) }  // restarted meanwhile
            return try await deleteStored(id)
        }
        switch w.phase {
        case .pending, .lost, .preempted:
            pendingSet.remove(id)
            retryAfter[id] = nil
            if w.phase != .pending {
                transition(id, to: .failed, reason: "Deleted", message: "deleted before it was placed again")
            }
            transition(id, to: .deleted, reason: "Deleted", message: "deleted before it was placed")
        case .terminating:
            break
        default:
            let how =
                if w.status.node == nil, let ref = w.status.instance {
                    "deleting its \(ref.provider) instance \(ref.name)"
                } else { "stopping (SIGTERM, then SIGKILL)" }
            transition(id, to: .terminating, reason: "DeleteRequested", message: how)
            if let node = w.status.node {
                stopLater(id, nodeID: node)
            } else if let ref = w.status.instance {
                // Provisioning: the answer deletes it when it comes (`provisioned`); otherwise delete it now.
                if w.phase != .provisioning || ref.id != nil { terminateInstanceThenFinish(id) }
            } else {
                finishDeletion(id, status: nil)
            }
        }
        return try await get(id)
    }

    /// Rounds of 10 ms a DELETE waits for a just-finished workload's final write.
    static let finishWaitRounds = 500

    /// Marks a finished (stored, final) workload deleted; retried on a concurrent change, idempotent.
    func deleteStored(_ id: String) async throws -> Workload {
        for _ in 0..<3 {
            guard var stored = try await store.workload(id: id) else { throw notFound(id) }
            guard stored.phase != .deleted else { return stored }
            guard stored.phase.isFinal else {
                throw FabricError(.unavailable, "workload \(id) is being updated; try again", field: "id")
            }
            stored.version += 1
            stored.updatedAt = clock.now()
            let from = stored.phase
            stored.status.phase = .deleted
            stored.status.reason = "Deleted"
            stored.status.message = "deleted after it \(from.rawValue)"
            let e = WorkloadEvent(
                workloadID: id, seq: 0, at: stored.updatedAt, from: from, to: .deleted, reason: "Deleted")
            do {
                try await store.updateWorkload(stored, event: e)
                return stored
            } catch let err as FabricError where err.code == .conflict {
                continue  // another DELETE got there first: read again
            }
        }
        guard let w = try await store.workload(id: id) else { throw notFound(id) }
        return w
    }

    /// The tail of a workload's output, from the node that runs (or ran) it.
    public func logs(_ id: String, tailBytes: Int?) async throws -> [UInt8] {
        let w = try await get(id)
        // Between attempts (a restart's backoff) the output of the last attempt, from the node that ran it.
        guard let nodeID = w.status.node ?? previousNode[id], let client = clients[nodeID] else { return [] }
        do {
            return [UInt8](try await client.logs(workloadID: id, kind: w.spec.runtimeKind, tailBytes: tailBytes))
        } catch let e as FabricError {
            throw e
        } catch let e as ActorCallError {
            throw FabricError(.unavailable, "node \(nodeID) did not answer for the logs: \(e.message)")
        }
    }

    public func schedulerStatus() -> SchedulerStatus {
        var oldest: [SchedulerStatus.PendingWorkload] = []
        for id in pendingOrder where oldest.count < 20 && pendingSet.contains(id) {
            guard let w = active[id], !oldest.contains(where: { $0.id == id }) else { continue }
            oldest.append(.init(id: id, name: w.name, since: w.updatedAt, reasons: w.status.pendingReasons ?? [:]))
        }
        return SchedulerStatus(
            pending: pendingSet.count, active: active.count, placementsTotal: placementsTotal, passes: passes,
            lastPassAt: lastPassAt, lastPassMicros: lastPassMicros, storeBacklog: persist.backlog,
            oldestPending: oldest)
    }

    // MARK: - Scheduling

    /// Tries to place every pending workload, oldest first, on registered nodes. Never re-entered: a trigger
    /// during a pass makes the pass run once more.
    func schedulePass() {
        guard !passRunning else {
            passRequested = true
            return
        }
        passRunning = true
        defer { passRunning = false }
        repeat {
            passRequested = false
            let started = timer.elapsed()
            let now = clock.now()
            let judge: [String]
            if fullPassNeeded {
                var seen = Set<String>()
                pendingOrder = pendingOrder.filter { pendingSet.contains($0) && seen.insert($0).inserted }
                judge = pendingOrder
                fullPassNeeded = false
            } else {
                judge = fresh
            }
            fresh = []
            // One index per pass: each placement is found fast and charged to it; `select` runs only to explain
            // a workload that fits nowhere (its reasons).
            var index = PlacementIndex(
                snapshot: placementSnapshot(now: now, nodes: Array(nodes.values)), costModel: stack.costModel)
            var explain: PlacementSnapshot? = nil  // index.snapshot, made once per change
            for id in judge {
                guard pendingSet.contains(id), let w = active[id], w.phase == .pending else { continue }
                if let t = retryAfter[id], t > now {
                    fresh.append(id)  // judged again on later passes until its backoff ends
                    continue
                }
                if let ref = w.status.instance, !Self.runsWorkloadDirectly(ref.provider) {
                    // Restarting on its own machine (see `applyRestartPolicy`).
                    switch nodes[ref.name]?.state {
                    case .ready?:
                        retryAfter[id] = nil
                        pendingSet.remove(id)
                        restartOnOwnMachine(id, node: ref.name)
                        continue
                    case .suspect?:
                        fresh.append(id)  // it may answer again; judged on later passes
                        continue
                    default:
                        // The machine is gone or going: let it go (unless others of its batch still hold it) and
                        // place the workload anew.
                        if machineHolders(ref.name) == [id] {
                            terminateLater(ref, reason: "its workload will run again elsewhere")
                        }
                        update(id) {
                            $0.status.instance = nil
                            $0.status.placement = nil
                        }
                    }
                }
                guard let w = active[id] else { continue }
                let placed = index.place(w.spec)
                if let placement = placed, placement.node == nil {
                    retryAfter[id] = nil
                    pendingSet.remove(id)
                    if Self.runsWorkloadDirectly(placement.provider) {
                        beginProvisioning([(id, placement)], machinePrice: placement.pricePerHour)
                    } else {
                        machineBatch.append((id, placement))  // planned with the others (`planMachines`)
                    }
                    continue
                }
                guard let placement = placed, let nodeID = placement.node else {
                    if explain == nil { explain = index.snapshot }
                    let d = stack.select(explain!, w.spec)
                    if w.status.pendingReasons != d.filtered {
                        let msg = Self.describe(d.filtered)
                        update(id) {
                            $0.status.pendingReasons = d.filtered
                            $0.status.reason = "NoFeasibleCandidate"
                            $0.status.message = msg
                        }
                        logger.info("cannot place", ["workload": id, "reasons": msg])
                    }
                    continue
                }
                retryAfter[id] = nil
                pendingSet.remove(id)
                index.allocate(w.spec.resources, on: nodeID)
                explain = nil
                placeOnNode(id, placement)
            }
            if !machineBatch.isEmpty {
                if options.machineBatchWindow == .zero {
                    planMachines()
                } else if !machineBatchDue {
                    machineBatchDue = true
                    let window = options.machineBatchWindow
                    let timer = self.timer
                    Task { [weak self] in
                        try? await timer.sleep(for: window)
                        await self?.planMachines()
                    }
                }
            }
            passes += 1
            lastPassAt = now
            let elapsed = timer.elapsed() - started
            lastPassMicros = Int(
                elapsed.components.seconds * 1_000_000 + elapsed.components.attoseconds / 1_000_000_000_000)
        } while passRequested
    }

    /// Starts a pending workload's next attempt on a node (its capacity is charged here).
    func placeOnNode(_ id: String, _ placement: Placement) {
        guard let w = active[id], let nodeID = placement.node else { return }
        allocate(id, w.spec.resources, on: nodeID)
        placementsTotal += 1
        let attempt = w.status.attempts + 1
        // On a machine Fabric made, it holds the machine too: the machine stays until the last holder leaves it.
        let machine = machineOwners[nodeID]?.min().flatMap { active[$0]?.status.instance }
        transition(id, to: .scheduled, reason: "Scheduled", message: "placed on node \(nodeID)") {
            $0.status.node = nodeID
            $0.status.placement = placement
            $0.status.pendingReasons = nil
            if let machine, machine.name == nodeID { $0.status.instance = machine }
        }
        let stored = startAttempt(id, attempt, message: "attempt \(attempt)")
        logger.info("placed", ["workload": id, "node": nodeID, "price": placement.pricePerHour, "attempt": attempt])
        if let stored {
            dispatch(Assignment(workloadID: id, attempt: attempt, spec: w.spec), to: nodeID, after: stored)
        }
    }

    /// The periodic pass: retries workloads whose restart backoff has ended. It does not judge every pending workload
    /// again: whatever can make one fit (capacity freed, a node joining or becoming ready) asks for a full pass
    /// itself, and a periodic full pass over many pending workloads would stall every request behind it.
    func tick() {
        schedulePass()
    }

    func stillStarting(_ id: String, attempt: Int, on nodeID: String) -> Bool {
        active[id]?.phase == .starting && active[id]?.status.attempts == attempt && active[id]?.status.node == nodeID
    }

    // MARK: - Node reports

    func handle(_ report: NodeReport, from nodeID: String) {
        switch report {
        case .started(let id, let attempt):
            guard let w = active[id], w.status.attempts == attempt, w.phase == .starting, w.status.node == nodeID
            else { return }
            transition(id, to: .running, reason: "Started", message: "running on node \(nodeID)") {
                $0.status.startedAt = self.clock.now()
            }
        case .startFailed(let id, let attempt, let message):
            acknowledgeLater(id, attempt: attempt, on: nodeID)
            guard let w = active[id], w.status.attempts == attempt else { return }
            if w.phase == .terminating {
                finishDeletion(id, status: nil)
                return
            }
            release(id)
            transition(id, to: .failed, reason: "StartFailed", message: message) {
                $0.status.finishedAt = self.clock.now()
            }
            schedulePass()
        case .exited(let id, let attempt, let status):
            defer { acknowledgeLater(id, attempt: attempt, on: nodeID) }
            guard let w = active[id], w.status.attempts == attempt, w.status.node == nodeID else { return }
            if w.phase == .terminating {
                finishDeletion(id, status: status)
            } else {
                recordExit(id, status: status, note: "")
            }
        }
    }

    /// Records how an attempt ended, frees its capacity, and restarts or finishes it by policy.
    func recordExit(_ id: String, status: ExitStatus, note: String) {
        release(id)
        update(id) {
            switch status {
            case .exited(let code):
                $0.status.exitCode = code
                $0.status.signal = nil
            case .signaled(let sig):
                $0.status.exitCode = nil
                $0.status.signal = sig
            }
            $0.status.finishedAt = self.clock.now()
        }
        let message: String
        switch status {
        case .exited(let code): message = "exited with code \(code)\(note)"
        case .signaled(let sig): message = "killed by signal \(sig)\(note)"
        }
        applyRestartPolicy(id, succeeded: status.succeeded, reason: "Exited", message: message)
        schedulePass()
    }

    /// After an attempt ended or was lost: back to pending (with backoff) when the policy says so, else final.
    /// Restarts (after a backoff, unless `backoff` is false) or finishes a workload whose attempt ended.
    func applyRestartPolicy(_ id: String, succeeded: Bool, reason: String, message: String?, backoff: Bool = true) {
        guard let w = active[id] else { return }
        let policy = w.spec.restartPolicy
        let restart =
            (policy == .always || (policy == .onFailure && !succeeded)) && w.status.attempts < Limits.restartsMax
        if restart {
            // On a machine of its own that is still up, it restarts there (the machine and its placement are kept):
            // no new machine, no boot, per attempt of a crash loop.
            let ownMachine = w.status.instance.flatMap { ref in
                !Self.runsWorkloadDirectly(ref.provider) && w.status.node == ref.name
                    && nodes[ref.name]?.state == .ready ? ref.name : nil
            }
            let delay = min(
                options.restartBackoffBase * (1 << min(max(w.status.attempts - 1, 0), 16)), options.restartBackoffMax)
            retryAfter[id] = backoff ? clock.now().adding(delay) : nil
            if let node = w.status.node { previousNode[id] = node }
            transition(
                id, to: .pending, reason: "Restarting",
                message:
                    "\(message ?? reason); restart \(w.status.attempts) of \(Limits.restartsMax) by policy \(policy.rawValue)"
            ) {
                $0.status.node = nil
                if ownMachine == nil { $0.status.placement = nil }
            }
            enqueuePending(id)
        } else if w.phase == .lost || w.phase == .preempted {
            transition(id, to: .failed, reason: reason, message: message)
        } else {
            transition(id, to: succeeded ? .succeeded : .failed, reason: reason, message: message)
        }
    }

    func markLost(_ id: String, message: String) {
        release(id)
        transition(id, to: .lost, reason: "Lost", message: message) { $0.status.finishedAt = self.clock.now() }
        logger.warn("workload lost", ["workload": id, "reason": message])
        // Its node failed, not the workload: it is placed again at once (the backoff is for crash loops).
        applyRestartPolicy(id, succeeded: false, reason: "Lost", message: message, backoff: false)
    }

    func stopLater(_ id: String, nodeID: String) {
        guard let w = active[id] else { return }
        let attempt = w.status.attempts
        let kind = w.spec.runtimeKind
        let grace = options.stopGrace
        Task { [weak self] in
            var delay: Duration = .milliseconds(200)
            // Until it stopped, or the node is lost (which finishes the deletion) or replaced.
            while let self, let client = await self.clientWhileTerminating(id, attempt: attempt, on: nodeID) {
                do {
                    let status = try await ActorCall.$timeout.withValue(grace + .seconds(15)) {
                        try await client.stop(
                            workloadID: id, attempt: attempt, kind: kind, graceMillis: Self.millis(grace))
                    }
                    await self.finishDeletion(id, status: status)
                    return
                } catch {
                    self.logger.warn("stop not delivered; retrying", ["workload": id, "node": nodeID, "error": error])
                    try? await self.timer.sleep(for: delay)
                    delay = min(delay * 2, .seconds(2))
                }
            }
        }
    }

    func clientWhileTerminating(_ id: String, attempt: Int, on nodeID: String) -> ShuttleNode? {
        guard let w = active[id], w.phase == .terminating, w.status.attempts == attempt, w.status.node == nodeID
        else { return nil }
        return clients[nodeID]
    }

    nonisolated static func millis(_ d: Duration) -> Int64 {
        d.components.seconds * 1000 + d.components.attoseconds / 1_000_000_000_000_000
    }

    func finishDeletion(_ id: String, status: ExitStatus?) {
        guard let w = active[id], w.phase == .terminating else { return }
        release(id)
        transition(id, to: .deleted, reason: "Deleted", message: "stopped and deleted") {
            switch status {
            case .exited(let code)?: $0.status.exitCode = code
            case .signaled(let sig)?: $0.status.signal = sig
            case nil: break
            }
            $0.status.finishedAt = $0.status.finishedAt ?? self.clock.now()
        }
        schedulePass()
    }

    // MARK: - State changes (synchronous; writes queued in order)

    /// Moves a workload to `phase` in memory and queues the write with its event.
    /// - Returns: the promise of the write, or nil when the lifecycle forbids the transition.
    @discardableResult
    func transition(
        _ id: String, to phase: Phase, reason: String, message: String? = nil,
        _ change: (inout Workload) -> Void = { _ in }
    ) -> Promise<Void>? {
        guard var w = active[id] else { return nil }
        let from = w.phase
        guard from.canTransition(to: phase) else {
            logger.error("refused transition", ["workload": id, "from": from.rawValue, "to": phase.rawValue])
            return nil
        }
        change(&w)
        w.status.phase = phase
        w.status.reason = reason
        w.status.message = message
        releaseInstance(&w, from: from)
        w.version += 1
        w.updatedAt = clock.now()
        let event = WorkloadEvent(
            workloadID: id, seq: 0, at: w.updatedAt, from: from, to: phase, reason: reason, message: message)
        let document = try? FabricJSON.encode(w)  // once, for the store and the GET cache
        let stored = persist.enqueue(.update(w, event, document))
        if phase.isFinal {
            retryAfter[id] = nil
            previousNode[id] = nil
            finishing[id] = w
            rememberEnded(id, w.spec)
            indexMachine(old: active[id], new: nil)
            active[id] = nil
            documents.set(id, document)
            let version = w.version
            Task { [weak self] in
                _ = try? await stored.value()
                await self?.stored(id, version: version)
            }
        } else {
            setActive(w, document: document)
        }
        return stored
    }

    /// Records what a workload that reached a final phase asked for, forgetting the oldest beyond `endedMemoMax`.
    func rememberEnded(_ id: String, _ spec: WorkloadSpec) {
        if endedWorkloads.updateValue((spec.resources, spec.runtimeKind), forKey: id) == nil { endedOrder.append(id) }
        while endedWorkloads.count > Self.endedMemoMax, endedOrderStart < endedOrder.count {
            endedWorkloads[endedOrder[endedOrderStart]] = nil
            endedOrderStart += 1
        }
        if endedOrderStart > Self.endedMemoMax {
            endedOrder.removeFirst(endedOrderStart)
            endedOrderStart = 0
        }
    }

    func stored(_ id: String, version: Int) {
        if finishing[id]?.version == version {
            finishing[id] = nil
            if active[id] == nil { documents.set(id, nil) }
        }
    }

    /// The `starting` transition of attempt `attempt` (on `node` when given), with the last attempt's end cleared.
    @discardableResult
    func startAttempt(_ id: String, _ attempt: Int, message: String, node: String? = nil) -> Promise<Void>? {
        transition(id, to: .starting, reason: "Starting", message: message) {
            if let node { $0.status.node = node }
            $0.status.attempts = attempt
            $0.status.exitCode = nil
            $0.status.signal = nil
            $0.status.finishedAt = nil
        }
    }

    /// Changes a workload in memory without a phase change, and queues the write (no event).
    func update(_ id: String, _ change: (inout Workload) -> Void) {
        guard var w = active[id] else { return }
        change(&w)
        w.version += 1
        w.updatedAt = clock.now()
        let document = try? FabricJSON.encode(w)
        setActive(w, document: document)
        persist.enqueue(.update(w, nil, document))
    }

    /// Charges a workload's resources to a node, once.
    func allocate(_ id: String, _ r: Resources, on nodeID: String) {
        guard var n = nodes[nodeID], allocations[id] == nil else { return }
        n.allocated = n.allocated.adding(r)
        nodes[nodeID] = n
        allocations[id] = (nodeID, r)
    }

    /// Frees the capacity a workload holds, if it holds any (a workload that ended while weaver was down
    /// never held capacity in this process, so releasing it frees nothing).
    func release(_ id: String) {
        guard let (nodeID, r) = allocations.removeValue(forKey: id) else { return }
        if var n = nodes[nodeID] {
            n.allocated = n.allocated.subtracting(r)
            nodes[nodeID] = n
        }
        fullPassNeeded = true
    }

    func enqueuePending(_ id: String) {
        guard pendingSet.insert(id).inserted else { return }
        pendingOrder.append(id)
        fresh.append(id)
    }

    func notFound(_ id: String) -> FabricError { FabricError(.notFound, "workload \(id) not found", field: "id") }

    static func describe(_ filtered: [String: Int]) -> String {
        if filtered.isEmpty { return "no node is registered" }
        return "no candidate fits: "
            + filtered.sorted { $0.value != $1.value ? $0.value > $1.value : $0.key < $1.key }
            .map { "\($0.value) \($0.key) (\(Reason.explanations[$0.key] ?? $0.key))" }.joined(separator: "; ")
    }
}

/// The JSON documents of the workloads the service holds in memory, for answering reads without a hop into the
/// actor. Bounded by the number of unfinished workloads (itself bounded by `pendingMax` and node capacity).
public final class DocumentCache: Sendable {
    private let docs = Mutex<[String: Data]>([:])

    public func get(_ id: String) -> Data? { docs.withLock { $0[id] } }

    func set(_ id: String, _ doc: Data?) { docs.withLock { $0[id] = doc } }

    public var count: Int { docs.withLock { $0.count } }
}
