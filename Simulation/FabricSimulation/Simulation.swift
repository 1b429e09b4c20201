import FabricCore
import FabricProviders
import FabricScheduler
import Foundation

/// The deterministic fleet simulation: a discrete-event loop over virtual time that drives the production cores
/// (`NodeLifecycle`, `Phase.canTransition`, `PlacementIndex` / `PlacementStack`) with every seam replaced: the
/// clock, one seeded generator for all randomness, seeded IDs, fake providers and simulated node runtimes.
///
/// ```
///   seed ──► Scenario (fleet, workload mix, arrivals, fault rates)
///              │
///   EventQueue (time, seq) ──► step ──► controller (lifecycle directives, placement, provider calls)
///              ▲                 │            │
///              │                 ▼            ▼
///              └──── node runtimes, fake cloud (latency, faults) ──► InvariantChecker after every step
///   fault phase ──► liveness phase (no faults) ──► converged? ──► final checks ──► event-log sha256
/// ```
public final class Simulation {
    /// Timings the simulated fleet runs with (production's, stretched so 10,000 nodes fit a day in minutes).
    public static let timing = NodeLifecycle.Timing(
        heartbeatInterval: .seconds(30), suspectAfter: .seconds(90), lostAfter: .seconds(240))
    /// A node that hears nothing from the controller this long stops its own workloads (its lease ran out);
    /// shorter than `lostAfter`, so a workload the controller reschedules has already stopped where it was.
    public static let fenceAfter: Duration = .seconds(180)
    public static let idleAfter: Duration = .seconds(600)
    public static let lostTerminateAfter: Duration = .seconds(1800)
    public static let gcInterval: Duration = .seconds(600)
    public static let passInterval: Duration = .seconds(30)
    public static let pendingPerPassMax = 20_000
    public static let referenceEvery = 64
    static let start = Timestamp(millisecondsSinceEpoch: 1_800_000_000_000)

    public let options: SimOptions
    public let scenario: Scenario
    let log: EventLog
    private var queue = EventQueue<SimEvent>()
    private let clock = ManualClock(Simulation.start)
    private var now = Simulation.start
    private var draw: Draw
    private let ids: SeededIDGenerator
    private var cloud: FakeCloud
    private var sched: SimScheduler
    private var lifecycle = NodeLifecycle(timing: Simulation.timing)
    let checker = InvariantChecker()

    private var workloads: [SimWorkload] = []
    private var workloadIndex: [String: Int] = [:]
    private var pendingList: [Int] = []
    private var nodes: [String: ControllerNode] = [:]
    private var runtimes: [String: SimNode] = [:]
    private var nodeOrder: [String] = []
    private var books: [String: BookEntry] = [:]
    private var controllerOutbox: [String: [NodeCommand]] = [:]
    private var calls: [Int: ProviderCall] = [:]
    private var nextCallID = 0
    private var terminating: Set<String> = []
    private var unavailableUntil: [OfferKey: Timestamp] = [:]
    private var strikes: [OfferKey: Int] = [:]
    private var nextExpiry: Timestamp? = nil
    private var tickAt: Timestamp? = nil
    private var linkFree: [String: Timestamp] = [:]
    private let regions: [String]
    private let providers: [String]
    private let gpuModels: [String?]
    private let faultEnd: Timestamp
    private var inFaultPhase = true
    private var lastGCClean: Timestamp? = nil
    private var converged = false
    /// Workloads that need a new machine, with the spec they were placed with, planned together at the next pass.
    private var batchQueue: [(i: Int, spec: WorkloadSpec)] = []
    /// Nodes known from the store after a controller restart that have not registered again yet.
    private var awaitingRegistration: Set<String> = []
    /// The batches as JSON lines for `scripts/cost-bound` (only with `costBatchesPath`).
    public private(set) var costBatchLines: [String] = []

    /// Counters for the summary.
    public struct Stats: Sendable {
        public var arrived = 0
        public var placements = 0
        public var onNodes = 0
        public var onOffers = 0
        public var unplaceable = 0
        public var provisioned = 0
        public var terminated = 0
        public var faults: [String: Int] = [:]
        public var referenceChecks = 0
        public var placementsCostPerHour = 0.0
        public var naiveCostPerHour = 0.0
        public var naiveComparable = 0
        public var fabricComparableCostPerHour = 0.0
        public var peakNodes = 0
        public var events = 0
        public var simulated: Duration = .zero
        public var phases: [Phase: Int] = [:]
        /// Batches that asked for new machines, the workloads on them, and the machines.
        public var batches = 0
        public var batchedWorkloads = 0
        public var batchMachines = 0
        /// $/h of the batch plans' new machines, of one cheapest machine each for the same workloads, and of the
        /// naive baseline (first fit, on demand, aws first) over the `batchNaiveWorkloads` of them it can host.
        public var batchPlanCostPerHour = 0.0
        public var batchEachCostPerHour = 0.0
        public var batchNaiveCostPerHour = 0.0
        public var batchNaiveWorkloads = 0
        public var restarts = 0
        public var totalFaults: Int { faults.values.reduce(0, +) }
    }
    public private(set) var stats = Stats()
    /// Workloads placed the first time, for the naive baseline.
    private var firstPlaced: [WorkloadSpec] = []
    private var firstPlacedCost: [Double] = []

    public init(options: SimOptions, keepLog: Bool = false) {
        self.options = options
        var rng = SplitMix64(seed: options.seed)
        let offers = OfferCatalog.bundled.offers
        scenario = Scenario.draw(
            seed: options.seed, rng: &rng, offers: offers, nodes: options.nodes, duration: options.duration,
            restartsPerDay: options.restartsPerDay)
        ids = SeededIDGenerator(seed: rng.next())
        draw = Draw(rng: rng)
        log = EventLog(keepLines: keepLog)
        cloud = FakeCloud(scenario: scenario, offers: offers)
        let enabled = Set(offers.map(\.provider))
        providers = enabled.sorted()
        regions = Set(offers.map(\.region)).sorted()
        gpuModels = [nil] + Set(offers.compactMap(\.gpuModel)).sorted().map { Optional($0) }
        sched = SimScheduler(variant: options.scheduler, offers: offers, enabledProviders: enabled)
        faultEnd = Simulation.start.adding(scenario.faultPhase)
    }

    // MARK: - Running

    /// Runs to convergence or the first violation. Returns the violation, if any.
    public func run() -> Violation? {
        write(
            "scenario seed=\(options.seed) scheduler=\(options.scheduler.rawValue) batch=\(options.batch ? "on" : "off")"
                + " \(scenario.description)")
        for (offer, spot) in scenario.baseFleet { addBaseNode(offer, spot: spot) }
        push(.heartbeatRound, after: Self.timing.heartbeatInterval)
        push(.arrive, after: .zero)
        push(.schedulingPass, after: Self.passInterval)
        push(.gc, after: Self.gcInterval)
        push(.priceChange, after: .seconds(3600))
        push(.faultPhaseEnds, at: faultEnd)
        scheduleFault(.partitionFault, perDay: scenario.partitionsPerNodeDay)
        scheduleFault(.crashFault, perDay: scenario.crashesPerNodeDay)
        scheduleFault(.preemptionFault, perDay: scenario.preemptionsPerSpotNodeDay)
        scheduleRestart()
        let deadline = faultEnd.adding(SimLimits.livenessMax)
        while let e = queue.pop() {
            if e.at > deadline {
                now = deadline
                checker.tick(now)
                checker.fail(
                    .notConverged, "no convergence \(SimLimits.livenessMax) after the fault phase: \(phaseCounts())")
                break
            }
            clock.advance(by: e.at.since(now))
            now = clock.now()
            checker.tick(now)
            stats.events += 1
            step(e.event)
            if checker.violation != nil || converged { break }
        }
        stats.simulated = now.since(Simulation.start)
        for w in workloads { stats.phases[w.phase, default: 0] += 1 }
        computeNaive()
        if let v = checker.violation { write("violation \(v.kind.rawValue) \(v.message)") }
        write("end converged=\(converged) workloads=\(workloads.count) events=\(stats.events)")
        return checker.violation
    }

    private func step(_ e: SimEvent) {
        switch e {
        case .arrive: arrive()
        case .heartbeatRound: heartbeatRound()
        case .lifecycleTick:
            guard tickAt == now else { return }
            tickAt = nil
            apply(lifecycle.onTick(now: now))
        case .toNode(let id, let cmd): nodeReceives(id, cmd)
        case .toController(let id, let report): controllerReceives(id, report)
        case .finish(let node, let w, let attempt): finish(node, w, attempt)
        case .partitionFault: partitionFault()
        case .crashFault: crashFault()
        case .preemptionFault: preemptionFault()
        case .heal(let id, let epoch): heal(id, epoch)
        case .fence(let id, let epoch): fence(id, epoch)
        case .preemptionNotice(let id): preemptionNotice(id)
        case .providerCall(let id): providerAnswers(id)
        case .boot(let name): boot(name)
        case .idleCheck(let id): idleCheck(id)
        case .priceChange:
            guard inFaultPhase else { return }
            let n = cloud.changePrices(draw: &draw)
            write("prices changed offers=\(n)")
            push(.refreshOffers, after: apiLatency())
            push(.priceChange, after: .seconds(3600))
        case .refreshOffers:
            sched.setOffers(cloud.offers)
            write("offers refreshed")
        case .schedulingPass: schedulingPass()
        case .gc:
            call(.list)
            push(.gc, after: Self.gcInterval)
        case .delete(let i): deleteWorkload(i)
        case .faultPhaseEnds:
            inFaultPhase = false
            cloud.faults = false
            write("fault phase ends; liveness phase begins")
            push(.convergenceCheck, after: SimLimits.offerUnavailableMax + Self.gcInterval * 2)
        case .convergenceCheck: convergenceCheck()
        case .controllerRestart: controllerRestart()
        }
    }

    // MARK: - Helpers

    private func push(_ e: SimEvent, after d: Duration) { queue.push(e, at: now.adding(d)) }
    private func push(_ e: SimEvent, at t: Timestamp) { queue.push(e, at: t) }

    private func write(_ line: String) {
        log.write("\(now.millisecondsSinceEpoch - Simulation.start.millisecondsSinceEpoch) \(line)")
    }

    private func apiLatency() -> Duration { .milliseconds(draw.int(20, max(21, scenario.apiLatencyMsMax))) }
    private func messageLatency() -> Duration { .milliseconds(draw.int(1, 200)) }

    private func phaseCounts() -> String {
        var c: [Phase: Int] = [:]
        for w in workloads { c[w.phase, default: 0] += 1 }
        return Phase.allCases.compactMap { p in c[p].map { "\(p.rawValue)=\($0)" } }.joined(separator: " ")
    }

    private func countFault(_ kind: String) { stats.faults[kind, default: 0] += 1 }

    // MARK: - Fleet

    private func addBaseNode(_ offer: Offer, spot: Bool) {
        let name = ids.next(prefix: "node")
        let inst = cloud.addBase(name: name, offer: offer, spot: spot)
        checker.instanceCreated(name, shape(inst), tag: nil)
        books[name] = BookEntry(key: inst.key, priceMicros: inst.priceMicros, state: .running)
        register(name, inst, provisioned: false)
    }

    private func shape(_ i: CloudInstance) -> MachineShape {
        MachineShape(capacity: i.offer.resources, provider: i.offer.provider, region: i.offer.region, spot: i.key.spot)
    }

    /// A machine's runtime comes up and registers with the controller.
    private func register(_ name: String, _ inst: CloudInstance, provisioned: Bool) {
        runtimes[name] = SimNode(lastAck: now)
        nodeOrder.append(name)
        var allocated = Resources.zero
        let waiting = books[name]?.waiting ?? []
        for w in waiting {
            if let i = workloadIndex[w], workloads[i].node == name, workloads[i].phase.holdsCapacity {
                allocated = allocated.adding(workloads[i].spec.resources)
            }
        }
        let info = NodeInfo(
            id: name, name: name, provider: inst.offer.provider, region: inst.offer.region,
            machineType: inst.offer.machineType, capacity: inst.offer.resources, allocated: allocated,
            runtimes: [.process, .container], pricePerHour: Double(inst.priceMicros) / 1_000_000, spot: inst.key.spot,
            state: .ready, registeredAt: now, lastHeartbeat: now)
        var node = ControllerNode(info: info, priceMicros: inst.priceMicros, provisioned: provisioned)
        for w in waiting {
            if let i = workloadIndex[w], workloads[i].node == name, workloads[i].phase.holdsCapacity {
                node.workloads.insert(w)
            }
        }
        nodes[name] = node
        sched.upsert(info, previous: nil)
        stats.peakNodes = max(stats.peakNodes, nodes.count)
        write(
            "node registered node=\(name) type=\(inst.offer.provider)/\(inst.offer.region)/\(inst.offer.machineType)"
                + "\(inst.key.spot ? "/spot" : "") price=\(inst.priceMicros)")
        apply(lifecycle.onRegister(name, now: now))
        books[name]?.waiting = []
        for w in waiting.sorted() {
            guard let i = workloadIndex[w], workloads[i].node == name, workloads[i].phase == .provisioning else {
                continue
            }
            transition(i, to: .starting, reason: "NodeReady")
            sendStart(i)
        }
        if provisioned && node.workloads.isEmpty { markIdle(name) }
    }

    private func setNodeState(_ id: String, _ state: NodeState) {
        guard var n = nodes[id], n.info.state != state else { return }
        let previous = n.info.state
        n.info.state = state
        n.lostSince = state == .lost ? now : nil
        nodes[id] = n
        sched.upsert(n.info, previous: previous)
        write("node \(state.rawValue) node=\(id)")
    }

    private func apply(_ directives: [NodeDirective]) {
        for d in directives {
            switch d {
            case .markReady(let id): setNodeState(id, .ready)
            case .markSuspect(let id): setNodeState(id, .suspect)
            case .markDraining(let id): setNodeState(id, .draining)
            case .markLost(let id):
                setNodeState(id, .lost)
                for w in (nodes[id]?.workloads ?? []).sorted() { workloadLost(w, reason: "NodeLost") }
            case .reconcile(let id):
                var keep: [String: Int] = [:]
                for w in (nodes[id]?.workloads ?? []) {
                    if let i = workloadIndex[w] { keep[w] = workloads[i].attempt }
                }
                write("node reconcile node=\(id) keep=\(keep.count)")
                send(id, .reconcile(keep))
            case .forget(let id): forget(id)
            case .scheduleCheck(let after):
                let t = now.adding(after)
                if tickAt == nil || t < tickAt! {
                    tickAt = t
                    push(.lifecycleTick, at: t)
                }
            }
        }
    }

    /// The controller drops a node (terminated, reclaimed or gone).
    private func forget(_ id: String) {
        guard nodes.removeValue(forKey: id) != nil else { return }
        sched.remove(nodeID: id)
        controllerOutbox[id] = nil
        write("node forgotten node=\(id)")
    }

    private func heartbeatRound() {
        var dead = 0
        for id in nodeOrder {
            guard let r = runtimes[id] else {
                dead += 1
                continue
            }
            guard r.alive, r.connected else { continue }
            runtimes[id]!.lastAck = now
            if awaitingRegistration.contains(id) {
                registerAgain(id)
                continue
            }
            let d = lifecycle.onHeartbeat(id, now: now)
            if !d.isEmpty { apply(d) }
        }
        if dead > nodeOrder.count / 2 { nodeOrder = nodeOrder.filter { runtimes[$0] != nil } }
        push(.heartbeatRound, after: Self.timing.heartbeatInterval)
    }

    // MARK: - Workloads

    private func arrive() {
        guard inFaultPhase, workloads.count < scenario.workloadCount else { return }
        let batch = scenario.arrival == .bursty && draw.chance(0.1) ? Int(draw.int(5, 50)) : 1
        for _ in 0..<min(batch, scenario.workloadCount - workloads.count) { newWorkload() }
        let phaseSeconds = Double(scenario.faultPhase.components.seconds)
        var mean = phaseSeconds / Double(scenario.workloadCount)
        switch scenario.arrival {
        case .steady: break
        case .bursty: mean *= 1 + 0.1 * 26.5  // the mean batch size, so the count still spreads over the phase
        case .diurnal:
            let t = Double(now.since(Simulation.start).components.seconds)
            mean /= 0.2 + 1.6 * (sin(2 * Double.pi * t / 86_400) + 1) / 2
        }
        push(.arrive, after: .milliseconds(Int64(draw.exponential(mean: mean) * 1000)))
    }

    private func newWorkload() {
        let i = workloads.count
        let id = ids.next(prefix: "wl")
        var r: Resources
        if draw.chance(scenario.gpuShare) {
            let g = draw.pick([1, 1, 1, 2, 4, 8])
            let model = draw.pick(gpuModels)
            r = Resources(
                cpuMillis: Int64(g) * draw.pick([2, 4, 8]) * 1000,
                memoryBytes: Int64(g) * draw.pick([8, 16, 32]) << 30,
                gpu: GPUSpec(count: g, model: model))
        } else {
            r = Resources(
                cpuMillis: draw.pick([250, 500, 1000, 2000, 4000, 8000]),
                memoryBytes: draw.pick([256 << 20, 512 << 20, 1 << 30, 2 << 30, 4 << 30, 8 << 30, 16 << 30]))
        }
        var p = PlacementConstraints()
        if draw.chance(scenario.constrainedShare / 2) { p.providers = [draw.pick(providers)] }
        if draw.chance(scenario.constrainedShare / 2) { p.regions = [draw.pick(regions)] }
        let s = draw.unit()
        p.spot =
            s < scenario.spotRequiredShare
            ? .required : s < scenario.spotRequiredShare + scenario.spotNeverShare ? .never : .allowed
        if draw.chance(scenario.maxPriceShare) { p.maxPricePerHour = draw.pick([0.1, 0.5, 1, 2, 5, 10, 30]) }
        let spec = WorkloadSpec(
            name: "w-\(i)", image: "sim/app:1", resources: r, placement: p,
            restartPolicy: draw.chance(0.5) ? .onFailure : .never)
        let runFor = Duration.seconds(
            Int64(
                draw.logUniform(
                    Double(SimLimits.workloadRunMin.components.seconds),
                    Double(SimLimits.workloadRunMax.components.seconds))))
        workloads.append(SimWorkload(id: id, spec: spec, runFor: runFor))
        workloadIndex[id] = i
        stats.arrived += 1
        let gpu = r.gpu.map { " gpu=\($0.count)x\($0.model ?? "any")" } ?? ""
        write(
            "arrive w=\(id) cpu=\(r.cpuMillis)m mem=\(r.memoryBytes)\(gpu) spot=\(p.spot.rawValue)"
                + " providers=\(p.providers ?? []) regions=\(p.regions ?? []) max=\(p.maxPricePerHour ?? 0)"
                + " run=\(runFor.components.seconds)s")
        if draw.chance(scenario.deleteShare) {
            push(.delete(i), after: .seconds(draw.int(1, runFor.components.seconds)))
        }
        enqueuePending(i)
        tryPlace(i)
    }

    /// Moves workload `i` to `to`, asserting the lifecycle allows it (the checker fails the run otherwise).
    private func transition(_ i: Int, to: Phase, reason: String) {
        let w = workloads[i]
        checker.transition(w.id, w.spec, from: w.phase, to: to, node: w.node, reason: reason)
        workloads[i].phase = to
        workloads[i].reason = reason
        write(
            "w=\(w.id) \(w.phase.rawValue)->\(to.rawValue) reason=\(reason) node=\(w.node ?? "-") attempt=\(w.attempt)")
    }

    private func enqueuePending(_ i: Int) {
        guard !workloads[i].inPendingList else { return }
        workloads[i].inPendingList = true
        pendingList.append(i)
    }

    /// Places a pending workload, now.
    private func tryPlace(_ i: Int) {
        guard workloads[i].phase == .pending, !workloads[i].queued else { return }
        refreshUnavailable()
        var w = workloads[i]
        var spec = w.spec
        var p: Placement? = nil
        if let avoid = w.avoidRegion {
            var elsewhere = spec
            elsewhere.placement.regions = (spec.placement.regions ?? regions).filter { $0 != avoid }
            if !(elsewhere.placement.regions ?? []).isEmpty, let q = sched.place(elsewhere) {
                p = q
                spec = elsewhere
            }
        }
        if p == nil { p = sched.place(spec) }
        stats.placements += 1
        if options.scheduler == .index, stats.placements % Self.referenceEvery == 0,
            stats.referenceChecks < SimLimits.referenceSamplesMax
        {
            stats.referenceChecks += 1
            let brute = sched.reference(spec)
            if brute?.pricePerHour != p?.pricePerHour {
                checker.fail(
                    .notCheapest,
                    "workload \(w.id): placed at \(p.map { "\($0.pricePerHour)" } ?? "nowhere"), the brute-force "
                        + "cheapest feasible is \(brute.map { "\($0.pricePerHour) on \($0.node ?? $0.machineType)" } ?? "nowhere")"
                )
            }
        }
        guard let p else {
            unplaceable(i)
            return
        }
        if let node = p.node {
            placeOnNode(i, node, price: p.pricePerHour)
        } else if options.batch {
            // A new machine is cheapest: the workload waits (pending) for the pass's batch, planned together.
            w.tries = 0
            w.queued = true
            w.reason = "AwaitingBatch"
            workloads[i] = w
            batchQueue.append((i, spec))
            write("awaiting batch w=\(w.id) price=\(p.pricePerHour)")
        } else {
            let key = OfferKey(provider: p.provider, region: p.region, machineType: p.machineType, spot: p.spot)
            provisionMachine(key, price: p.pricePerHour, for: [i])
        }
    }

    /// No feasible candidate: the workload stays pending and is tried again after a backoff.
    private func unplaceable(_ i: Int) {
        var w = workloads[i]
        w.tries += 1
        let backoff = min(SimLimits.pendingBackoffMax, Self.passInterval * (1 << min(w.tries - 1, 10)))
        w.nextTryAt = now.adding(backoff)
        w.reason = "NoFeasibleCandidate"
        workloads[i] = w
        stats.unplaceable += 1
        write("unplaceable w=\(w.id) tries=\(w.tries)")
    }

    /// A new attempt for workload `i`, charged `price` $/h the first time it is placed.
    private func beginAttempt(_ i: Int, price: Double) {
        workloads[i].tries = 0
        workloads[i].attempt += 1
        workloads[i].avoidRegion = nil
        workloads[i].queued = false
        if !workloads[i].placed {
            workloads[i].placed = true
            firstPlaced.append(workloads[i].spec)
            firstPlacedCost.append(price)
            stats.placementsCostPerHour += price
        }
    }

    private func placeOnNode(_ i: Int, _ node: String, price: Double) {
        beginAttempt(i, price: price)
        workloads[i].node = node
        stats.onNodes += 1
        write("placed w=\(workloads[i].id) node=\(node) price=\(price)")
        transition(i, to: .scheduled, reason: "Scheduled")
        allocate(i, on: node)
        transition(i, to: .starting, reason: "StartSent")
        sendStart(i)
    }

    /// Asks for one new machine in market `key` for workloads `members`: the name and the books entry are stored
    /// before the provider call, so a retry (or a restarted controller) asks again under the same name.
    private func provisionMachine(_ key: OfferKey, price: Double, for members: [Int]) {
        let name = ids.next(prefix: "node")
        let share = price / Double(members.count)
        for i in members {
            beginAttempt(i, price: share)
            workloads[i].node = name
            stats.onOffers += 1
        }
        let first = workloads[members[0]]
        let tag = "\(first.id)#\(first.attempt)"
        let names = members.map { workloads[$0].id }
        write("placed w=\(names.joined(separator: ",")) offer=\(key) price=\(price) machine=\(name)")
        books[name] = BookEntry(
            key: key, priceMicros: FakeCloud.micros(price), state: .provisioning, waiting: names, tag: tag)
        for i in members {
            transition(i, to: .scheduled, reason: "Scheduled")
            transition(i, to: .provisioning, reason: "Provisioning")
        }
        call(.provision(name: name, key: key, tag: tag))
    }

    /// Plans the workloads waiting for new machines together (`BatchPlanner` on the controller's snapshot) and
    /// provisions the planned machines. Returns whether any workload left pending.
    @discardableResult
    private func flushBatch() -> Bool {
        var queued: [(i: Int, spec: WorkloadSpec)] = []
        for e in batchQueue where workloads[e.i].queued {
            workloads[e.i].queued = false
            if workloads[e.i].phase == .pending { queued.append(e) }
        }
        batchQueue = []
        guard !queued.isEmpty else { return false }
        refreshUnavailable()
        let snapshot = sched.index.snapshot
        let plan = BatchPlanner().plan(snapshot, queued.map(\.spec))
        write(
            "batch workloads=\(queued.count) machines=\(plan.machines.count) onNodes=\(plan.onNodes.count)"
                + " unplaced=\(plan.unplaced.count) price=\(plan.newMachinesPerHour)")
        if !plan.machines.isEmpty { recordBatch(plan, queued.map(\.spec), snapshot) }
        for k in plan.onNodes.keys.sorted() {
            let p = plan.onNodes[k]!
            placeOnNode(queued[k].i, p.node!, price: p.pricePerHour)
        }
        for k in plan.unplaced.keys.sorted() { unplaceable(queued[k].i) }
        for m in plan.machines {
            let key = OfferKey(
                provider: m.offer.provider, region: m.offer.region, machineType: m.offer.machineType, spot: m.spot)
            provisionMachine(key, price: m.pricePerHour, for: m.workloads.map { queued[$0].i })
        }
        return !plan.onNodes.isEmpty || !plan.machines.isEmpty
    }

    /// Cost quality of one batch: the plan's new machines against one cheapest machine each and the naive
    /// baseline, and (when asked) the batch as a JSON line for the lower bound.
    private func recordBatch(_ plan: BatchPlanner.Plan, _ specs: [WorkloadSpec], _ snapshot: PlacementSnapshot) {
        let offersOnly = PlacementSnapshot(
            nodes: [], offers: snapshot.offers, enabledProviders: snapshot.enabledProviders,
            unavailableOffers: snapshot.unavailableOffers, includeOffers: true)
        let stack = PlacementStack()
        var offerOf: [String: Offer] = [:]
        for o in snapshot.offers { offerOf["\(o.provider)|\(o.region)|\(o.machineType)"] = o }
        var markets: [CostBatch.Market] = []
        var marketNumber: [String: Int] = [:]
        var lines: [CostBatch.Workload] = []
        var members: [WorkloadSpec] = []
        for m in plan.machines { for k in m.workloads { members.append(specs[k]) } }
        for w in members {
            let d = stack.select(offersOnly, w)
            stats.batchEachCostPerHour += d.placement?.pricePerHour ?? 0
            guard options.costBatchesPath != nil else { continue }
            var ms: [Int] = []
            for r in d.candidates where r.feasible {
                let key = "\(r.provider)|\(r.region)|\(r.machineType)|\(r.spot ? 1 : 0)"
                if let n = marketNumber[key] {
                    ms.append(n)
                    continue
                }
                guard let o = offerOf["\(r.provider)|\(r.region)|\(r.machineType)"] else { continue }
                marketNumber[key] = markets.count
                ms.append(markets.count)
                markets.append(
                    CostBatch.Market(
                        key: key, price: r.pricePerHour, cpu: o.resources.cpuMillis, memory: o.resources.memoryBytes,
                        gpu: o.resources.gpuCount))
            }
            let r = w.resources
            lines.append(CostBatch.Workload(cpu: r.cpuMillis, memory: r.memoryBytes, gpu: r.gpuCount, markets: ms))
        }
        stats.batches += 1
        stats.batchedWorkloads += members.count
        stats.batchMachines += plan.machines.count
        stats.batchPlanCostPerHour += plan.newMachinesPerHour
        let naive = Self.naiveFirstFit(members, offers: snapshot.offers)
        stats.batchNaiveCostPerHour += naive.cost
        stats.batchNaiveWorkloads += naive.hosted
        if options.costBatchesPath != nil {
            let batch = CostBatch(
                name: "seed\(options.seed)-t\(now.since(Simulation.start).components.seconds)",
                planCostPerHour: plan.newMachinesPerHour, markets: markets, workloads: lines)
            if let data = try? JSONEncoder().encode(batch), let text = String(data: data, encoding: .utf8) {
                costBatchLines.append(text)
            }
        }
    }

    /// The naive baseline: first fit, on-demand only, cheapest machine that fits when a new one is needed, on one
    /// provider (aws; a workload that aws cannot host or may not use goes to the first provider by name that can).
    /// Returns the $/h and how many of `workloads` it could host at all.
    static func naiveFirstFit(_ workloads: [WorkloadSpec], offers: [Offer]) -> (cost: Double, hosted: Int) {
        let byProvider = Dictionary(grouping: offers, by: \.provider).mapValues {
            $0.sorted { $0.onDemandPerHour < $1.onDemandPerHour }
        }
        let order = ["aws"] + byProvider.keys.filter { $0 != "aws" }.sorted()
        var open: [String: [(free: Resources, model: String?)]] = [:]
        var cost = 0.0
        var hosted = 0
        for w in workloads {
            let r = w.resources
            func modelOK(_ offered: String?) -> Bool {
                guard r.gpuCount > 0, let model = r.gpu?.model else { return true }
                guard let offered else { return false }
                return GPUModel.satisfies(offered: offered, requested: model)
            }
            for provider in order where w.placement.providers?.contains(provider) ?? true {
                if let i = open[provider]?.firstIndex(where: { $0.free.fits(r) && modelOK($0.model) }) {
                    open[provider]![i].free = open[provider]![i].free.subtracting(r)
                } else if let o = byProvider[provider]?.first(where: { $0.resources.fits(r) && modelOK($0.gpuModel) }) {
                    open[provider, default: []].append((o.resources.subtracting(r), o.gpuModel))
                    cost += o.onDemandPerHour
                } else {
                    continue
                }
                hosted += 1
                break
            }
        }
        return (cost, hosted)
    }

    private func allocate(_ i: Int, on node: String) {
        let r = workloads[i].spec.resources
        nodes[node]!.workloads.insert(workloads[i].id)
        nodes[node]!.info.allocated = nodes[node]!.info.allocated.adding(r)
        nodes[node]!.idleSince = nil
        sched.allocate(r, on: node)
    }

    /// Frees what workload `i` holds on its node (the workload left a capacity-holding phase).
    private func release(_ i: Int) {
        guard let node = workloads[i].node else { return }
        let id = workloads[i].id
        if nodes[node]?.workloads.remove(id) != nil {
            let r = workloads[i].spec.resources
            nodes[node]!.info.allocated = nodes[node]!.info.allocated.subtracting(r)
            sched.release(r, on: node)
            if nodes[node]!.provisioned && nodes[node]!.workloads.isEmpty { markIdle(node) }
        } else if var b = books[node] {
            b.waiting.removeAll { $0 == id }
            books[node] = b
        }
    }

    /// Back to pending (or failed when out of restarts), then placed again at once.
    private func requeue(_ i: Int, reason: String) {
        release(i)
        if workloads[i].restarts >= SimLimits.restartsMax {
            transition(i, to: .failed, reason: "RestartLimit")
            return
        }
        workloads[i].restarts += 1
        transition(i, to: .pending, reason: reason)
        workloads[i].node = nil
        enqueuePending(i)
        tryPlace(i)
    }

    private func workloadLost(_ w: String, reason: String) {
        guard let i = workloadIndex[w] else { return }
        switch workloads[i].phase {
        case .terminating:
            release(i)
            transition(i, to: .deleted, reason: reason)
        case .scheduled, .provisioning, .starting, .running:
            transition(i, to: .lost, reason: reason)
            requeue(i, reason: "Rescheduled")
        default: break
        }
    }

    private func deleteWorkload(_ i: Int) {
        switch workloads[i].phase {
        case .pending:
            transition(i, to: .deleted, reason: "Deleted")
        case .scheduled, .provisioning:
            transition(i, to: .terminating, reason: "DeleteRequested")
            release(i)
            transition(i, to: .deleted, reason: "Deleted")
        case .starting, .running:
            transition(i, to: .terminating, reason: "DeleteRequested")
            send(workloads[i].node!, .stop(workloads[i].id, attempt: workloads[i].attempt))
        default: break
        }
    }

    private func schedulingPass() {
        var tried = 0
        _ = passOverPending { i in
            guard self.workloads[i].nextTryAt <= self.now && tried < Self.pendingPerPassMax else { return }
            tried += 1
            self.tryPlace(i)
        }
        flushBatch()
        push(.schedulingPass, after: Self.passInterval)
    }

    /// Runs `body` on each pending workload in arrival-to-queue order and drops those no longer pending.
    /// Returns whether any left pending during the pass.
    private func passOverPending(_ body: (Int) -> Void) -> Bool {
        let current = pendingList
        pendingList = []
        var kept: [Int] = []
        var left = false
        for i in current {
            if workloads[i].phase == .pending { body(i) }
            if workloads[i].phase == .pending {
                kept.append(i)
            } else {
                workloads[i].inPendingList = false
                left = true
            }
        }
        // Workloads that became pending during the pass were appended to `pendingList` meanwhile.
        pendingList = kept + pendingList
        return left
    }

    // MARK: - Controller <-> node runtime

    private func sendStart(_ i: Int) {
        let w = workloads[i]
        let code: Int32 = draw.chance(scenario.failShare) ? 1 : 0
        send(w.node!, .start(w.id, attempt: w.attempt, runFor: w.runFor, exitCode: code))
    }

    /// When the next message on a node's link may arrive: links are FIFO, like the TCP stream under them.
    private func linkTime(_ key: String) -> Timestamp {
        let t = max(now.adding(messageLatency()), linkFree[key] ?? now)
        linkFree[key] = t
        return t
    }

    private func send(_ node: String, _ cmd: NodeCommand) {
        if runtimes[node]?.connected == true {
            push(.toNode(node, cmd), at: linkTime(">" + node))
        } else {
            controllerOutbox[node, default: []].append(cmd)
        }
    }

    private func report(_ node: String, _ r: NodeReport) {
        guard runtimes[node] != nil else { return }
        if runtimes[node]!.connected {
            push(.toController(node, r), at: linkTime("<" + node))
        } else {
            runtimes[node]!.outbox.append(r)
        }
    }

    private func nodeReceives(_ id: String, _ cmd: NodeCommand) {
        guard let r = runtimes[id], r.alive else { return }
        guard r.connected else {
            controllerOutbox[id, default: []].append(cmd)
            return
        }
        switch cmd {
        case .start(let w, let attempt, let runFor, let code):
            // A start sent again (after a controller restart) for an attempt this node already began is not run
            // twice: a running one is reported again, a finished one ignored.
            if let seen = r.started[w], seen >= attempt {
                if r.running[w]?.attempt == attempt { report(id, .started(w, attempt: attempt)) }
                return
            }
            runtimes[id]!.started[w] = attempt
            if let old = r.running[w] {
                runtimeStop(id, w)
                report(id, .stopped(w, attempt: old.attempt))
            }
            runtimes[id]!.running[w] = (attempt, code)
            checker.runtimeStarted(w, on: id)
            push(.finish(node: id, workload: w, attempt: attempt), after: runFor)
            report(id, .started(w, attempt: attempt))
        case .stop(let w, let attempt):
            if r.running[w]?.attempt == attempt { runtimeStop(id, w) }
            report(id, .stopped(w, attempt: attempt))
        case .reconcile(let keep):
            for (w, run) in r.running.sorted(by: { $0.key < $1.key }) where keep[w] != run.attempt {
                runtimeStop(id, w)
                write("node stops stale w=\(w) node=\(id) attempt=\(run.attempt)")
                report(id, .stopped(w, attempt: run.attempt))
            }
        }
    }

    private func runtimeStop(_ node: String, _ w: String) {
        runtimes[node]!.running[w] = nil
        checker.runtimeStopped(w, on: node)
    }

    private func finish(_ node: String, _ w: String, _ attempt: Int) {
        guard let r = runtimes[node], r.alive, let run = r.running[w], run.attempt == attempt else { return }
        runtimeStop(node, w)
        report(node, .exited(w, attempt: attempt, code: run.code))
    }

    private func controllerReceives(_ node: String, _ r: NodeReport) {
        let (w, attempt): (String, Int)
        switch r {
        case .started(let a, let b), .exited(let a, let b, _), .stopped(let a, let b), .fenced(let a, let b):
            (w, attempt) = (a, b)
        }
        guard let i = workloadIndex[w] else { return }
        let current = workloads[i].attempt == attempt && workloads[i].node == node
        let phase = workloads[i].phase
        switch r {
        case .started:
            if current && phase == .starting {
                transition(i, to: .running, reason: "Started")
            } else if !current || phase.isFinal || phase == .pending {
                write("stale start w=\(w) node=\(node) attempt=\(attempt)")
                send(node, .stop(w, attempt: attempt))
            }
        case .exited(_, _, let code):
            guard current else { return }
            if phase == .terminating {
                release(i)
                transition(i, to: .deleted, reason: "Deleted")
            } else if phase == .running || phase == .starting {
                if code == 0 {
                    release(i)
                    transition(i, to: .succeeded, reason: "Exited")
                } else if workloads[i].spec.restartPolicy == .onFailure {
                    requeue(i, reason: "RestartOnFailure")
                } else {
                    release(i)
                    transition(i, to: .failed, reason: "ExitCode\(code)")
                }
            }
        case .stopped:
            guard current, phase == .terminating else { return }
            release(i)
            transition(i, to: .deleted, reason: "Deleted")
        case .fenced:
            guard current else { return }
            if phase == .terminating {
                release(i)
                transition(i, to: .deleted, reason: "Deleted")
            } else if phase == .running || phase == .starting {
                requeue(i, reason: "Fenced")
            }
        }
    }

    // MARK: - Faults

    private func scheduleFault(_ e: SimEvent, perDay: Double) {
        let perSecond = perDay * Double(scenario.nodeCount) / 86_400
        guard perSecond > 0 else { return }
        let wait = draw.exponential(mean: 1 / perSecond)
        guard wait < Double(faultEnd.since(now).components.seconds) else { return }
        push(e, after: .milliseconds(Int64(wait * 1000)))
    }

    private func randomLiveNode() -> String? {
        guard !nodeOrder.isEmpty else { return nil }
        let id = nodeOrder[draw.below(nodeOrder.count)]
        guard let r = runtimes[id], r.alive else { return nil }
        return id
    }

    private func partitionFault() {
        defer { scheduleFault(.partitionFault, perDay: scenario.partitionsPerNodeDay) }
        guard inFaultPhase, let id = randomLiveNode(), runtimes[id]!.connected else { return }
        let u = draw.unit()
        let seconds = u < 0.4 ? draw.int(20, 80) : u < 0.75 ? draw.int(100, 230) : draw.int(250, 900)
        runtimes[id]!.connected = false
        runtimes[id]!.epoch += 1
        let epoch = runtimes[id]!.epoch
        countFault("partition")
        write("fault partition node=\(id) seconds=\(seconds)")
        push(.heal(id, epoch: epoch), after: .seconds(seconds))
        push(.fence(id, epoch: epoch), at: max(now, runtimes[id]!.lastAck.adding(Self.fenceAfter)))
    }

    private func heal(_ id: String, _ epoch: Int) {
        guard var r = runtimes[id], r.alive, r.epoch == epoch, !r.connected else { return }
        r.connected = true
        r.lastAck = now
        let reports = r.outbox
        r.outbox = []
        runtimes[id] = r
        write("heal node=\(id) reports=\(reports.count)")
        // A node that reconnects heartbeats at once: its lease is renewed before it takes any command, and a node
        // the controller declared lost is reconciled first (the reconcile goes ahead of the queued commands).
        if awaitingRegistration.contains(id) { registerAgain(id) } else { apply(lifecycle.onHeartbeat(id, now: now)) }
        for rep in reports { push(.toController(id, rep), at: linkTime("<" + id)) }
        let commands = controllerOutbox.removeValue(forKey: id) ?? []
        for cmd in commands {
            if case .start(let w, let attempt, _, _) = cmd {
                guard let i = workloadIndex[w], workloads[i].attempt == attempt, workloads[i].node == id,
                    workloads[i].phase == .starting
                else { continue }
            }
            push(.toNode(id, cmd), at: linkTime(">" + id))
        }
    }

    private func fence(_ id: String, _ epoch: Int) {
        guard let r = runtimes[id], r.alive, r.epoch == epoch, !r.connected else { return }
        for (w, run) in r.running.sorted(by: { $0.key < $1.key }) {
            runtimeStop(id, w)
            runtimes[id]!.outbox.append(.fenced(w, attempt: run.attempt))
        }
        write("node fenced itself node=\(id) stopped=\(r.running.count)")
    }

    private func crashFault() {
        defer { scheduleFault(.crashFault, perDay: scenario.crashesPerNodeDay) }
        guard inFaultPhase, let id = randomLiveNode() else { return }
        countFault("crash")
        write("fault crash node=\(id)")
        machineGone(id)
    }

    private func preemptionFault() {
        defer { scheduleFault(.preemptionFault, perDay: scenario.preemptionsPerSpotNodeDay) }
        guard inFaultPhase, let id = randomLiveNode(), cloud.instances[id]?.key.spot == true else { return }
        countFault("preemption")
        write("fault preemption node=\(id)")
        machineGone(id)
        push(.preemptionNotice(id), after: apiLatency())
    }

    /// The provider takes the machine away: the runtime and everything on it stop.
    private func machineGone(_ id: String) {
        cloud.remove(id)
        runtimeGone(id)
    }

    /// A machine no longer exists: its runtime and whatever ran there are gone.
    private func runtimeGone(_ id: String) {
        checker.instanceGone(id)
        linkFree[">" + id] = nil
        linkFree["<" + id] = nil
        guard let r = runtimes.removeValue(forKey: id) else { return }
        for w in r.running.keys.sorted() { checker.runtimeStopped(w, on: id) }
    }

    private func preemptionNotice(_ id: String) {
        write("preemption notice node=\(id)")
        let region = nodes[id]?.info.region
        let held = (nodes[id]?.workloads ?? []).sorted()
        // Forget the machine first, so nothing is placed again on it.
        if books[id]?.state == .running { books[id] = nil }
        apply(lifecycle.onDeregister(id))
        for w in held {
            guard let i = workloadIndex[w] else { continue }
            switch workloads[i].phase {
            case .terminating:
                release(i)
                transition(i, to: .deleted, reason: "Preempted")
            case .scheduled, .provisioning, .starting, .running:
                transition(i, to: .preempted, reason: "SpotReclaimed")
                workloads[i].avoidRegion = region
                requeue(i, reason: "Rescheduled")
            default: break
            }
        }
    }

    // MARK: - Controller restarts

    private func scheduleRestart() {
        let perSecond = scenario.restartsPerDay / 86_400
        guard perSecond > 0 else { return }
        let wait = draw.exponential(mean: 1 / perSecond)
        guard wait < Double(faultEnd.since(now).components.seconds) else { return }
        push(.controllerRestart, after: .milliseconds(Int64(wait * 1000)))
    }

    /// The controller crashes and comes back at once with only what a store holds: workloads (phase, node or
    /// machine, attempt), the machine books (name, market, client token and state, each stored before its provider
    /// call) and the node records. Everything else is lost or rebuilt: calls in flight still reach the provider
    /// but their answers are lost, commands queued for cut-off nodes are gone, and the node lifecycle, the offers
    /// marked unavailable, the placement index and the batch start afresh. Provisioning resumes under the stored
    /// machine names (the provider answers with the machine it already made), terminations are asked for again,
    /// and known nodes are suspect until they register again.
    private func controllerRestart() {
        defer { scheduleRestart() }
        guard inFaultPhase else { return }
        stats.restarts += 1
        write("fault controller restart calls=\(calls.count) nodes=\(nodes.count) books=\(books.count)")
        for id in calls.keys { calls[id]!.stale = true }
        controllerOutbox = [:]
        terminating = []
        unavailableUntil = [:]
        strikes = [:]
        nextExpiry = nil
        lastGCClean = nil
        batchQueue = []
        lifecycle = NodeLifecycle(timing: Self.timing)
        tickAt = nil

        // Workloads, from their records.
        pendingList = []
        var holding: [String: [Int]] = [:]
        for i in workloads.indices {
            workloads[i].queued = false
            workloads[i].inPendingList = false
            workloads[i].tries = 0
            workloads[i].nextTryAt = now
            workloads[i].avoidRegion = nil
            let w = workloads[i]
            if w.phase == .pending { enqueuePending(i) }
            if w.phase.holdsCapacity, let n = w.node { holding[n, default: []].append(i) }
        }
        // Machine books: who waits for each machine follows from the workloads.
        for name in books.keys { books[name]!.waiting = [] }
        for name in holding.keys.sorted() where books[name] != nil && nodes[name] == nil {
            books[name]!.waiting = holding[name]!.filter { workloads[$0].phase == .provisioning }.map {
                workloads[$0].id
            }
        }
        // Node records: allocations from the workloads; suspect until each registers again.
        let records = nodes
        nodes = [:]
        sched = SimScheduler(variant: options.scheduler, offers: cloud.offers, enabledProviders: Set(providers))
        awaitingRegistration = []
        for id in records.keys.sorted() {
            let rec = records[id]!
            var info = rec.info
            info.state = .ready
            info.allocated = .zero
            var node = ControllerNode(info: info, priceMicros: rec.priceMicros, provisioned: rec.provisioned)
            for i in holding[id] ?? [] {
                node.info.allocated = node.info.allocated.adding(workloads[i].spec.resources)
                node.workloads.insert(workloads[i].id)
            }
            nodes[id] = node
            sched.upsert(node.info, previous: nil)
            apply(lifecycle.onRestore(id, now: now))
            awaitingRegistration.insert(id)
            if node.provisioned && node.workloads.isEmpty { markIdle(id) }
        }
        // Provider calls resume under the stored names.
        var resumed = 0
        for name in books.keys.sorted() {
            let b = books[name]!
            switch b.state {
            case .provisioning: call(.provision(name: name, key: b.key, tag: b.tag))
            case .terminating: call(.terminate(name: name))
            case .running: continue
            }
            resumed += 1
        }
        write("controller restarted nodes=\(nodes.count) pending=\(pendingList.count) resumed=\(resumed)")
    }

    /// A node known from the store registers again after a controller restart: it is ready again, told which
    /// attempts to keep (anything else it runs is stale), and sent again what a lost outbox may have held.
    private func registerAgain(_ id: String) {
        awaitingRegistration.remove(id)
        guard let node = nodes[id] else { return }
        apply(lifecycle.onRegister(id, now: now))
        var keep: [String: Int] = [:]
        for w in node.workloads {
            if let i = workloadIndex[w] { keep[w] = workloads[i].attempt }
        }
        write("node registered again node=\(id) keep=\(keep.count)")
        send(id, .reconcile(keep))
        for w in node.workloads.sorted() {
            guard let i = workloadIndex[w] else { continue }
            switch workloads[i].phase {
            case .starting: sendStart(i)
            case .terminating: send(id, .stop(w, attempt: workloads[i].attempt))
            default: break
            }
        }
    }

    // MARK: - Provider calls

    private func call(_ kind: ProviderCall.Kind, tries: Int = 0, after: Duration? = nil) {
        nextCallID += 1
        calls[nextCallID] = ProviderCall(kind: kind, tries: tries)
        if case .terminate(let name) = kind { terminating.insert(name) }
        push(.providerCall(nextCallID), after: (after ?? .zero) + apiLatency())
    }

    private func retry(_ c: ProviderCall) -> Bool {
        guard c.tries < SimLimits.providerRetriesMax else { return false }
        let backoff = min(SimLimits.providerBackoffMax, .seconds(1) * (1 << c.tries))
        call(c.kind, tries: c.tries + 1, after: backoff)
        return true
    }

    private func providerAnswers(_ id: Int) {
        guard let c = calls.removeValue(forKey: id) else { return }
        switch c.kind {
        case .provision(let name, let key, let tag):
            let (result, inst, created) = cloud.provision(name: name, key: key, tag: tag, draw: &draw)
            if created, let inst {
                checker.instanceCreated(name, shape(inst), tag: tag)
                push(.boot(name), after: .seconds(draw.int(10, max(11, scenario.bootSecondsMax))))
            }
            write(
                "provider provision machine=\(name) offer=\(key) result=\(result) created=\(created)"
                    + (c.stale ? " answer lost to a restart" : ""))
            if result != .ok { countFault(result == .lostResponse ? "lost-response" : "\(result)") }
            guard !c.stale, books[name]?.state == .provisioning else { return }  // lost, or given up on meanwhile
            switch result {
            case .ok:
                books[name]!.state = .running
                books[name]!.priceMicros = inst!.priceMicros
                stats.provisioned += 1
            case .lostResponse, .rateLimited:
                if !retry(c) { abandon(name, reason: result == .rateLimited ? "RateLimited" : "ProvisionTimeout") }
            case .capacityError, .quotaError:
                markUnavailable(key, capacity: result == .capacityError)
                abandon(name, reason: result == .capacityError ? "CapacityError" : "QuotaExceeded")
            }
        case .terminate(let name):
            let existed = cloud.instances[name] != nil
            let result = cloud.terminate(name: name, draw: &draw)
            if existed && cloud.instances[name] == nil { runtimeGone(name) }
            write("provider terminate machine=\(name) result=\(result)" + (c.stale ? " answer lost to a restart" : ""))
            if result != .ok { countFault(result == .lostResponse ? "lost-response" : "\(result)") }
            if c.stale { return }
            if result == .ok {
                terminating.remove(name)
                books[name] = nil
                stats.terminated += 1
            } else if !retry(c) {
                terminating.remove(name)  // the next GC tries again
            }
        case .list:
            if c.stale { return }
            if cloud.faults && draw.chance(scenario.rateLimitShare) {
                countFault("rateLimited")
                write("provider list result=rateLimited")
                return
            }
            garbageCollect(cloud.instances.mapValues(\.priceMicros))
        }
    }

    /// The controller gives up on a machine it asked for; its workloads go back to pending. A machine that was
    /// made anyway is an orphan the next GC terminates.
    private func abandon(_ name: String, reason: String) {
        guard let b = books.removeValue(forKey: name) else { return }
        for w in b.waiting.sorted() {
            guard let i = workloadIndex[w], workloads[i].node == name, workloads[i].phase == .provisioning else {
                continue
            }
            requeue(i, reason: reason)
        }
    }

    private func markUnavailable(_ key: OfferKey, capacity: Bool) {
        var ttl = SimLimits.offerUnavailableTTL
        if capacity {
            let n = strikes[key, default: 0]
            strikes[key] = n + 1
            ttl = min(SimLimits.offerUnavailableMax, ttl * (1 << min(n, 8)))
        }
        let until = now.adding(ttl)
        unavailableUntil[key] = until
        nextExpiry = min(nextExpiry ?? until, until)
        sched.setUnavailableOffers(Set(unavailableUntil.keys))
        write("offer unavailable offer=\(key) seconds=\(ttl.components.seconds)")
    }

    private func refreshUnavailable() {
        guard let e = nextExpiry, e <= now else { return }
        unavailableUntil = unavailableUntil.filter { $0.value > now }
        nextExpiry = unavailableUntil.values.min()
        sched.setUnavailableOffers(Set(unavailableUntil.keys))
    }

    private func boot(_ name: String) {
        guard let inst = cloud.instances[name], runtimes[name] == nil else { return }
        if books[name]?.state == .provisioning {
            // The machine registers before the provision call's answer arrived (it was lost and the retry is still
            // out): the controller asked for this name, so registration is proof enough.
            books[name]!.state = .running
            books[name]!.priceMicros = inst.priceMicros
            stats.provisioned += 1
        }
        guard books[name]?.state == .running else {
            write("machine booted but unknown to the controller machine=\(name)")
            return  // the controller gave up on it: an orphan for GC
        }
        register(name, inst, provisioned: true)
    }

    private func markIdle(_ id: String) {
        nodes[id]!.idleSince = now
        push(.idleCheck(id), after: Self.idleAfter)
    }

    private func idleCheck(_ id: String) {
        guard let n = nodes[id], n.provisioned, n.workloads.isEmpty, n.info.state == .ready, let s = n.idleSince,
            now >= s.adding(Self.idleAfter)
        else { return }
        write("idle node=\(id)")
        terminate(id)
    }

    private func terminate(_ id: String) {
        apply(lifecycle.onDeregister(id))
        forget(id)
        if books[id] != nil { books[id]!.state = .terminating }
        call(.terminate(name: id))
    }

    /// Compares the provider's instance list with the books: orphans are terminated, vanished machines forgotten.
    private func garbageCollect(_ list: [String: Int64]) {
        var fixes = 0
        for name in list.keys.sorted() where books[name] == nil && !terminating.contains(name) {
            fixes += 1
            write("gc orphan machine=\(name)")
            books[name] = BookEntry(
                key: cloud.instances[name]!.key, priceMicros: list[name]!, state: .terminating, tag: "")
            call(.terminate(name: name))
        }
        for name in books.keys.sorted() {
            let b = books[name]!
            switch b.state {
            case .provisioning: continue
            case .running where list[name] == nil:
                fixes += 1
                write("gc machine gone machine=\(name)")
                let held = (nodes[name]?.workloads ?? []).sorted()
                books[name] = nil
                apply(lifecycle.onDeregister(name))
                forget(name)
                for w in held { workloadLost(w, reason: "MachineGone") }
            case .running:
                if let n = nodes[name], n.info.state == .lost, let since = n.lostSince,
                    now >= since.adding(Self.lostTerminateAfter)
                {
                    fixes += 1
                    write("gc lost too long node=\(name)")
                    terminate(name)
                }
            case .terminating where list[name] == nil:
                books[name] = nil
            case .terminating:
                if !terminating.contains(name) {
                    fixes += 1
                    call(.terminate(name: name))
                }
            }
        }
        write("gc instances=\(list.count) books=\(books.count) fixes=\(fixes)")
        if fixes == 0 && !inFaultPhase { lastGCClean = now } else { lastGCClean = nil }
    }

    // MARK: - Liveness

    private func convergenceCheck() {
        // Every pending workload gets one more try now, so a workload that could be placed is not taken for stuck.
        var placedAny = passOverPending { i in self.tryPlace(i) }
        placedAny = flushBatch() || placedAny
        let busy = workloads.contains { !$0.phase.isFinal && $0.phase != .pending }
        let inFlight = !calls.isEmpty || books.values.contains { $0.state != .running }
        guard !placedAny, !busy, !inFlight, lastGCClean != nil else {
            write("convergence check: not yet placed=\(placedAny) busy=\(busy) inFlight=\(inFlight)")
            push(.convergenceCheck, after: Self.gcInterval)
            return
        }
        write("converged \(phaseCounts())")
        finalChecks()
        converged = true
    }

    private func finalChecks() {
        // Instances: the provider's list against the books, and the books against the controller's nodes.
        let cloudList = cloud.instances.mapValues(\.priceMicros)
        let booked = books.mapValues(\.priceMicros)
        let nodePrices = nodes.values.reduce(Int64(0)) { $0 + $1.priceMicros }
        checker.checkInstances(cloud: cloudList, books: booked, nodePrices: nodePrices)
        // Pending workloads must be legitimately unplaceable: the brute force over the truth (markets with no
        // capacity left count as unavailable) finds nothing either.
        var truth = sched.index.snapshot
        truth.offers = cloud.offers
        truth.unavailableOffers = cloud.fullMarkets
        // Workloads with the same spec (but for the name) get the same answer: each distinct spec is judged once,
        // the first `finalChecksMax` by the brute force, the rest by a fresh index built from the truth (exact, and
        // independent of the controller's incrementally kept one).
        var judged: Set<WorkloadSpec> = []
        let fresh = PlacementIndex(snapshot: truth)
        for w in workloads where w.phase == .pending {
            var key = w.spec
            key.name = ""
            guard judged.insert(key).inserted else { continue }
            let found =
                judged.count <= SimLimits.finalChecksMax
                ? PlacementStack().select(truth, w.spec).placement : fresh.place(w.spec)
            if let p = found {
                checker.fail(
                    .notConverged,
                    "workload \(w.id) is pending (\(w.reason)) but fits on \(p.node ?? "\(p.provider)/\(p.machineType)")"
                )
                break
            }
        }
        for w in workloads where !w.phase.isFinal && w.phase != .pending {
            checker.fail(.notConverged, "workload \(w.id) is still \(w.phase.rawValue) after convergence")
            break
        }
        checker.checkNothingRunsFor { w in
            guard let i = self.workloadIndex[w] else { return true }
            return self.workloads[i].phase.isFinal || self.workloads[i].phase == .pending
        }
    }

    // MARK: - Naive baseline

    /// First fit on one provider (aws), on-demand only, over the workloads Fabric placed, all at once; only
    /// workloads that provider can host at all count, on both sides.
    private func computeNaive() {
        let own = cloud.catalog.filter { $0.provider == "aws" }.sorted { $0.onDemandPerHour < $1.onDemandPerHour }
        var open: [(free: Resources, model: String?)] = []
        for (k, w) in firstPlaced.enumerated() {
            let r = w.resources
            func modelOK(_ offered: String?) -> Bool {
                guard r.gpuCount > 0, let model = r.gpu?.model else { return true }
                guard let offered else { return false }
                return GPUModel.satisfies(offered: offered, requested: model)
            }
            if let i = open.firstIndex(where: { $0.free.fits(r) && modelOK($0.model) }) {
                open[i].free = open[i].free.subtracting(r)
            } else if let o = own.first(where: { $0.resources.fits(r) && modelOK($0.gpuModel) }) {
                open.append((o.resources.subtracting(r), o.gpuModel))
                stats.naiveCostPerHour += o.onDemandPerHour
            } else {
                continue
            }
            stats.naiveComparable += 1
            stats.fabricComparableCostPerHour += firstPlacedCost[k]
        }
    }
}
