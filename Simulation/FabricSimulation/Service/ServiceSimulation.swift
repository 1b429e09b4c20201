import FabricActors
import FabricCore
import FabricLog
import FabricProviders
import FabricRuntime
import FabricStore
import Foundation
import Shuttle
import Synchronization
import Weaver

/// The fleet simulation with production's control plane in the loop: weaver's `WorkloadService` (scheduler,
/// lifecycle, recovery, provisioning), `ControlPlane` and `ShuttleNode` distributed actors on production's actor
/// system, production `NodeAgent`s and `ShuttleRunner`s, all unchanged. Replaced are only the seams: the clock
/// (`VirtualClock`, for waits and timestamps), IDs (seeded), the store (`MemoryStore`), the network
/// (`FaultyTransport` over a loopback network: loss, duplication, delay and reordering, partitions), the
/// providers (`SimProvider`) and the container runtime (`SimRuntime`). Every job runs on the
/// `DeterministicExecutor`, so a seed fixes the interleaving and the event log is byte-identical between runs.
///
/// Invariants are checked outside production code, by `Ground` (what machines really run) at every start, and
/// after the liveness phase by reading the store and the clouds.
public final class ServiceSimulation: @unchecked Sendable {
    public struct Options: Sendable {
        public var seed: UInt64
        public var nodes: Int?
        public var duration: Duration?
        /// Weaver crashes per simulated day in the fault phase (nil: drawn).
        public var restartsPerDay: Double?
        /// Shuttles fence their workloads when their link stays down (`cluster.link_fencing`).
        public var linkFencing = true
        /// weaver's `scheduler.batch_window`: how long workloads needing a new machine wait to share one.
        public var batchWindow: Duration = .seconds(2)
        public init(seed: UInt64, nodes: Int? = nil, duration: Duration? = nil, restartsPerDay: Double? = nil) {
            self.seed = seed
            self.nodes = nodes
            self.duration = duration
            self.restartsPerDay = restartsPerDay
        }
    }

    /// Limits of this mode: production's full stack per node costs far more than the core simulator's records.
    public enum Limits {
        public static let nodesMin = SimOptions.serviceNodes.lowerBound
        public static let nodesMax = SimOptions.serviceNodes.upperBound
        public static let durationMax: Duration = SimOptions.serviceDurationMax
        public static let workloadsMax = 5_000
        public static let liveness: Duration = .seconds(24 * 3600)
    }

    public struct Stats: Sendable {
        public var submitted = 0
        public var deleted = 0
        public var starts = 0
        public var instancesMade = 0
        /// Dollars the clouds billed for the run's machines.
        public var cloudSpend = 0.0
        public var providerCalls = 0
        public var cloudFaults = 0
        public var partitions = 0
        public var nodeCrashes = 0
        public var preemptions = 0
        public var weaverRestarts = 0
        public var priceChanges = 0
        public var jobs = 0
        public var simulated: Duration = .zero
        public var phases: [Phase: Int] = [:]
        public var network: FaultyTransport.Counts? = nil
    }

    public let options: Options
    public let scenario: Scenario
    let log: EventLog
    let clock: VirtualClock
    let wall: VirtualWallClock
    let timer: TaskClock
    let ids: SeededIDGenerator
    let ground = Ground()
    let network = LoopbackNetwork()
    let database = MemoryDatabase()
    let offers: [Offer]
    let prices: PriceBook
    private var draw: Draw
    public private(set) var stats = Stats()
    private let logger: Logger

    // Control plane (replaced on a restart).
    private var store: MemoryStore?
    private var service: WorkloadService?
    private var weaverSystem: NATSActorSystem?
    private var weaverTransport: FaultyTransport?
    private var control: ControlPlane?
    private var providers: [ProviderName: SimProvider] = [:]

    /// A node: its actor system over its own faulty link, agent, runtime and runner.
    final class Host: @unchecked Sendable {
        let name: String
        let system: NATSActorSystem
        let transport: FaultyTransport
        let agent: NodeAgent
        let actor: ShuttleNode
        let runtime: SimRuntime
        var runner: Task<Void, Never>?
        /// Set while the node is partitioned: its own link is down (what NATS's connection state tells a shuttle).
        let linkDown = Mutex(false)
        init(
            name: String, system: NATSActorSystem, transport: FaultyTransport, agent: NodeAgent, actor: ShuttleNode,
            runtime: SimRuntime
        ) {
            self.name = name
            self.system = system
            self.transport = transport
            self.agent = agent
            self.actor = actor
            self.runtime = runtime
        }
    }
    private var hosts: [String: Host] = [:]
    private var hostOrder: [String] = []
    private var baseNodes: [String: (offer: Offer, spot: Bool)] = [:]
    private var partitioned: Set<String> = []
    private var submitted: [String] = []
    private var inFaultPhase = true
    private var finished = false
    private var violation: Violation?

    static let start = Timestamp(millisecondsSinceEpoch: 1_800_000_000_000)
    static let providerNames: [ProviderName] = [.aws, .gcp]

    public init(options: Options, keepLog: Bool = false) {
        self.options = options
        var rng = SplitMix64(seed: options.seed)
        let all = OfferCatalog.bundled.offers.filter { o in Self.providerNames.contains { $0.rawValue == o.provider } }
        offers = all
        prices = PriceBook(all)
        var drawn = Scenario.draw(
            seed: options.seed, rng: &rng, offers: all, nodes: options.nodes, duration: options.duration,
            restartsPerDay: options.restartsPerDay)
        var d = Draw(rng: rng)
        // This mode's own bounds: a smaller fleet and a shorter fault phase than the core simulator's draws.
        let nodes = options.nodes ?? Int(d.logUniform(Double(Limits.nodesMin), 60).rounded())
        drawn.nodeCount = min(max(nodes, Limits.nodesMin), Limits.nodesMax)
        drawn.baseFleet = Array(drawn.baseFleet.prefix(drawn.nodeCount))
        while drawn.baseFleet.count < drawn.nodeCount { drawn.baseFleet.append(d.pick(drawn.baseFleet)) }
        let phase = options.duration ?? .seconds(Int64(d.pick([1, 2, 3])) * 3600)
        drawn.faultPhase = min(phase, Limits.durationMax)
        let hours = Double(drawn.faultPhase.components.seconds) / 3600
        drawn.workloadCount = min(
            Limits.workloadsMax, max(20, Int(Double(drawn.nodeCount) * d.uniform(0.5, 3) * hours)))
        scenario = drawn
        ids = SeededIDGenerator(seed: d.rng.next())
        draw = d
        log = EventLog(keepLines: keepLog)
        clock = VirtualClock(start: Self.start)
        wall = VirtualWallClock(clock)
        timer = TaskClock(clock)
        logger = Logger(
            component: "sim", level: .error, sink: NullSink(), clock: { [wall] in wall.now().millisecondsSinceEpoch })
        ground.now = { [wall] in wall.now() }
        ground.log = { [unowned self] in self.write($0) }
    }

    func write(_ line: String) {
        let ms = clock.now.offset.components
        let t = ms.seconds * 1000 + ms.attoseconds / 1_000_000_000_000_000
        log.write("t=\(t) \(line)")
    }

    // MARK: - Running

    /// Runs the fault phase and the liveness phase on the deterministic executor. Returns the first violation.
    public func run() -> Violation? {
        let exec = DeterministicExecutor.shared
        let end = Instant(offset: scenario.faultPhase + Limits.liveness)
        Task.detached { await self.main() }
        defer { stats.simulated = clock.now.offset }
        while true {
            stats.jobs += exec.runUntilIdle()
            if let v = ground.violation ?? violation { return v }
            if finished { break }
            guard let next = clock.nextDeadline() else {
                return Violation(
                    kind: .notConverged, message: "the simulation stalled: nothing runs or sleeps", at: wall.now())
            }
            if next > end {
                return Violation(
                    kind: .notConverged, message: "no convergence within \(Limits.liveness) after the fault phase",
                    at: wall.now())
            }
            clock.advance(to: next)
        }
        stats.simulated = clock.now.offset
        return ground.violation ?? violation
    }

    typealias Instant = VirtualClock.Instant

    private func sleep(until t: Duration) async {
        let now = clock.now.offset
        if t > now { try? await timer.sleep(for: t - now) }
    }

    private func main() async {
        do {
            try await setUp()
            try await faultPhase()
            await livenessPhase()
        } catch {
            violation = Violation(kind: .notConverged, message: "simulation setup failed: \(error)", at: wall.now())
        }
        finished = true
    }

    private func setUp() async throws {
        write("scenario seed=\(scenario.seed) \(scenario.description) mode=service")
        for p in Self.providerNames {
            providers[p] = SimProvider(
                name: p, prices: prices, scenario: scenario, seed: draw.rng.next(), timer: timer, clock: wall,
                booted: { [unowned self] name, offer, spot, price in
                    await self.machineBooted(name, offer: offer, spot: spot, price: price)
                },
                gone: { [unowned self] name in await self.machineGone(name) },
                log: { [unowned self] in self.write($0) })
        }
        try await startWeaver()
        for (i, m) in scenario.baseFleet.enumerated() {
            let name = "base-\(i)"
            baseNodes[name] = m
            let price = m.spot ? (m.offer.spotPerHour ?? m.offer.onDemandPerHour) : m.offer.onDemandPerHour
            try await startHost(name, offer: m.offer, spot: m.spot, price: price)
        }
    }

    private func startWeaver() async throws {
        let store = MemoryStore(database: database)
        let transport = FaultyTransport(
            network.endpoint(clock: timer), faults: .none, seed: draw.rng.next(), clock: timer)
        let system = try NATSActorSystem(
            node: NodeProtocolLimits.controlPlaneNode, transport: transport, clock: clock, ids: ids,
            logger: logger.with(component: "actors"))
        var o = WorkloadServiceOptions()
        o.offerUnavailableFor = .seconds(300)
        o.machineBatchWindow = options.batchWindow
        let prices = self.prices
        let service = WorkloadService(
            store: RecordingStore(store, log: { [unowned self] in self.write($0) }), clock: wall, ids: ids,
            logger: logger.with(component: "workloads"), options: o,
            offerView: { OfferView(offers: prices.offers, enabledProviders: Set(Self.providerNames.map(\.rawValue))) },
            providers: Self.providerNames.compactMap { providers[$0] }, timer: timer)
        let control = try ControlPlane.serve(registry: service, on: system)
        self.store = store
        self.weaverTransport = transport
        self.weaverSystem = system
        self.service = service
        self.control = control
        for n in partitioned { cut(n, true) }
        try await service.start()
        write("weaver up")
    }

    private func crashWeaver() async {
        guard let service, let store, let weaverSystem else { return }
        write("fault weaver crashes")
        stats.weaverRestarts += 1
        // Unstored writes are lost, as in a crash: the store closes first.
        await store.close()
        await weaverSystem.shutdown()
        await service.shutdown()
        self.service = nil
        self.store = nil
        self.weaverSystem = nil
        self.control = nil
    }

    private func startHost(_ name: String, offer: Offer, spot: Bool, price: Double) async throws {
        let transport = FaultyTransport(
            network.endpoint(clock: timer), faults: .none, seed: draw.rng.next(), clock: timer)
        let system = try NATSActorSystem(
            node: name, transport: transport, clock: clock, ids: ids, logger: logger.with(component: "actors"))
        let runtime = SimRuntime(node: name, ground: ground, timer: timer)
        let info = NodeInfo(
            id: name, name: name, provider: offer.provider, region: offer.region, machineType: offer.machineType,
            capacity: offer.resources, runtimes: [.container], pricePerHour: price, spot: spot,
            registeredAt: wall.now())
        let agent = NodeAgent(info: info, runtimes: [runtime], logger: logger.with(component: "node"), timer: timer)
        let actor = try ShuttleNode.serve(agent: agent, on: system)
        let host = Host(name: name, system: system, transport: transport, agent: agent, actor: actor, runtime: runtime)
        ground.machineUp(name, capacity: offer.resources)
        hosts[name] = host
        hostOrder.append(name)
        let runner = ShuttleRunner(
            agent: agent, control: try ControlPlane.proxy(on: system),
            options: runnerOptions(host),
            logger: logger.with(component: "shuttle"))
        host.runner = Task { try? await runner.run() }
        if partitioned.contains(name) { cut(name, true) }
        write("node up \(name) \(offer.provider)/\(offer.region)/\(offer.machineType) spot=\(spot)")
    }

    private func runnerOptions(_ host: Host) -> ShuttleRunner.Options {
        var o = ShuttleRunner.Options(joinToken: "", session: ids.next(prefix: "session"), version: "sim", timer: timer)
        if options.linkFencing { o.linkUp = { [host] in !host.linkDown.withLock { $0 } } }
        return o
    }

    private func stopHost(_ name: String, why: String) async {
        guard let host = hosts.removeValue(forKey: name) else { return }
        hostOrder.removeAll { $0 == name }
        host.runtime.kill()
        host.runner?.cancel()
        await host.agent.finish()
        await host.system.shutdown()
        ground.machineGone(name)
        write("node down \(name): \(why)")
    }

    private func machineBooted(_ name: String, offer: Offer, spot: Bool, price: Double) async {
        stats.instancesMade += 1
        try? await startHost(name, offer: offer, spot: spot, price: price)
    }

    private func machineGone(_ name: String) async { await stopHost(name, why: "instance ended") }

    /// Cuts a node off the control plane (both directions), or heals it.
    private func cut(_ name: String, _ on: Bool) {
        let prefix = ActorID.subjectPrefix + ActorID.subjectToken(name) + "."
        if let host = hosts[name] {
            host.transport.setFaults(on ? NetworkFaults(partitioned: [""]) : Self.lossy)
            host.linkDown.withLock { $0 = on }
        }
        var cutOff = Set(partitioned.map { ActorID.subjectPrefix + ActorID.subjectToken($0) + "." })
        if on { cutOff.insert(prefix) } else { cutOff.remove(prefix) }
        weaverTransport?.setFaults(
            NetworkFaults(dropRate: 0.001, duplicateRate: 0.002, delayMax: .milliseconds(20), partitioned: cutOff))
    }

    /// The network in the fault phase: a little loss, duplication and reordering everywhere.
    static let lossy = NetworkFaults(dropRate: 0.001, duplicateRate: 0.002, delayMax: .milliseconds(20))

    // MARK: - Phases

    private enum Action {
        case arrive, delete(String), partition, heal(String), crash, reboot(String), preempt, weaverCrash, prices
    }

    private func faultPhase() async throws {
        for name in hostOrder { hosts[name]?.transport.setFaults(Self.lossy) }
        weaverTransport?.setFaults(Self.lossy)
        var queue = EventQueue<Action>()
        let t0 = wall.now()
        func at(_ d: Duration) -> Timestamp { t0.adding(d) }
        let phase = scenario.faultPhase
        let phaseSeconds = Double(phase.components.seconds)
        // Arrivals spread over the first 80% of the phase.
        for _ in 0..<scenario.workloadCount {
            queue.push(.arrive, at: at(.milliseconds(Int64(draw.unit() * phaseSeconds * 800))))
        }
        let nodeDays = Double(scenario.nodeCount) * phaseSeconds / 86_400
        func spread(_ perDay: Double, _ a: Action) {
            let n = Int((perDay * nodeDays).rounded())
            for _ in 0..<min(n, 200) { queue.push(a, at: at(.milliseconds(Int64(draw.unit() * phaseSeconds * 1000)))) }
        }
        // A fleet of tens of nodes over hours sees few faults at production rates: this mode's phase is denser.
        spread(scenario.partitionsPerNodeDay * 4, .partition)
        spread(scenario.crashesPerNodeDay * 20, .crash)
        spread(scenario.preemptionsPerSpotNodeDay * 5, .preempt)
        let restarts = Int((scenario.restartsPerDay * 4 * phaseSeconds / 86_400).rounded(.up))
        for h in stride(from: 3600, to: Int(phaseSeconds), by: 3600) { queue.push(.prices, at: at(.seconds(Int64(h)))) }
        for _ in 0..<min(restarts, 10) {
            queue.push(.weaverCrash, at: at(.milliseconds(Int64(draw.unit() * phaseSeconds * 1000))))
        }
        while let e = queue.pop() {
            if ground.violation != nil { return }
            await sleep(until: e.at.since(Self.start))
            switch e.event {
            case .arrive:
                try await arrive(&queue)
            case .delete(let id):
                if let service {
                    if (try? await service.delete(id)) != nil {
                        stats.deleted += 1
                        write("delete \(id)")
                    }
                }
            case .partition:
                let candidates = hostOrder.filter { !partitioned.contains($0) }
                guard !candidates.isEmpty else { continue }
                let n = draw.pick(candidates)
                partitioned.insert(n)
                cut(n, true)
                stats.partitions += 1
                write("fault partition \(n)")
                queue.push(.heal(n), at: wall.now().adding(.seconds(draw.int(5, 120))))
            case .heal(let n):
                partitioned.remove(n)
                cut(n, false)
                write("heal \(n)")
            case .crash:
                let candidates = hostOrder.filter { baseNodes[$0] != nil }
                guard !candidates.isEmpty else { continue }
                let n = draw.pick(candidates)
                stats.nodeCrashes += 1
                write("fault crash \(n)")
                await stopHost(n, why: "crashed")
                queue.push(.reboot(n), at: wall.now().adding(.seconds(draw.int(30, 600))))
            case .reboot(let n):
                if let m = baseNodes[n], hosts[n] == nil {
                    let price = m.spot ? (m.offer.spotPerHour ?? m.offer.onDemandPerHour) : m.offer.onDemandPerHour
                    try await startHost(n, offer: m.offer, spot: m.spot, price: price)
                }
            case .preempt:
                let p = draw.pick(Self.providerNames)
                if let name = await providers[p]?.preempt(pick: draw.below(1 << 20)) {
                    stats.preemptions += 1
                    write("fault preempt \(name)")
                }
            case .prices:
                let n = prices.change(draw: &draw, at: wall.now())
                stats.priceChanges += n
                write("prices change for \(n) offers")
            case .weaverCrash:
                await crashWeaver()
                await sleep(until: clock.now.offset + .seconds(draw.int(2, 60)))
                try await startWeaver()
            }
        }
        await sleep(until: phase)
    }

    private func arrive(_ queue: inout EventQueue<Action>) async throws {
        guard let service else { return }
        let i = submitted.count
        var r: Resources
        let gpuModels = [nil] + Array(Set(offers.compactMap(\.gpuModel))).sorted().map { Optional($0) }
        if draw.chance(scenario.gpuShare) {
            let g = draw.pick([1, 1, 1, 2, 4, 8])
            r = Resources(
                cpuMillis: Int64(g) * draw.pick([2, 4]) * 1000, memoryBytes: Int64(g) * draw.pick([8, 16]) << 30,
                gpu: GPUSpec(count: g, model: draw.pick(gpuModels)))
        } else {
            r = Resources(
                cpuMillis: draw.pick([250, 500, 1000, 2000, 4000]),
                memoryBytes: draw.pick([256 << 20, 512 << 20, 1 << 30, 2 << 30, 4 << 30, 8 << 30]))
        }
        var p = PlacementConstraints()
        if draw.chance(scenario.constrainedShare / 2) { p.providers = [draw.pick(Self.providerNames).rawValue] }
        let s = draw.unit()
        p.spot =
            s < scenario.spotRequiredShare
            ? .required : s < scenario.spotRequiredShare + scenario.spotNeverShare ? .never : .allowed
        if draw.chance(scenario.maxPriceShare) { p.maxPricePerHour = draw.pick([0.5, 2, 10, 40]) }
        // Failing workloads fail fast (a crash loop), as they do in practice; with `onFailure` they restart up to
        // `Limits.restartsMax` times, each on a new machine, which the liveness phase must leave room for.
        let code = draw.chance(scenario.failShare) ? 1 : 0
        let seconds = code == 0 ? Int64(draw.logUniform(120, 3 * 3600)) : Int64(draw.logUniform(5, 120))
        let spec = WorkloadSpec(
            name: "w-\(i)", image: "sim/app:1", command: ["sleep", String(seconds), String(code)], resources: r,
            placement: p, restartPolicy: draw.chance(0.5) ? .onFailure : .never)
        let deleteAfter: Int64? = draw.chance(scenario.deleteShare) ? draw.int(1, seconds) : nil
        do {
            let w = try await service.submit(spec)
            submitted.append(w.id)
            stats.submitted += 1
            write(
                "arrive \(w.id) cpu=\(r.cpuMillis)m mem=\(r.memoryBytes) gpu=\(r.gpu.map { "\($0.count)x\($0.model ?? "any")" } ?? "-")"
                    + " spot=\(p.spot.rawValue) run=\(seconds)s exit=\(code)")
            if let deleteAfter { queue.push(.delete(w.id), at: wall.now().adding(.seconds(deleteAfter))) }
        } catch {
            write("arrive refused: \(error)")
        }
    }

    private func livenessPhase() async {
        inFaultPhase = false
        write("liveness: faults stop")
        for p in providers.values { await p.setFaulty(false) }
        for n in partitioned.sorted() { cut(n, false) }
        partitioned.removeAll()
        for name in hostOrder { hosts[name]?.transport.setFaults(.none) }
        weaverTransport?.setFaults(.none)
        let deadline = clock.now.offset + Limits.liveness
        var last: Violation?
        while clock.now.offset < deadline {
            await sleep(until: clock.now.offset + .seconds(60))
            if ground.violation != nil { return }
            let (unsettled, broken) = await check()
            if let broken {
                violation = broken
                return
            }
            last = unsettled
            if unsettled == nil {
                write("converged")
                await summarise()
                return
            }
        }
        violation = last
        await summarise()
    }

    /// Reads the store and the clouds. `broken`: an invariant that does not hold (stops the run). `unsettled`: why the
    /// world has not converged yet (a violation only if it lasts past the liveness phase); nil once every workload
    /// is final or pending with a reason, nothing runs on any machine and no instance is left.
    private func check() async -> (unsettled: Violation?, broken: Violation?) {
        guard let store else { return (Violation(kind: .notConverged, message: "weaver is down", at: wall.now()), nil) }
        let all: [Workload]
        do { all = try await Self.allWorkloads(store) } catch {
            return (Violation(kind: .notConverged, message: "the store cannot be read: \(error)", at: wall.now()), nil)
        }
        var bills: [String: (price: Double, workload: String?, state: InstanceState, repriced: Bool)] = [:]
        for p in Self.providerNames { for (k, v) in await providers[p]?.bill() ?? [:] { bills[k] = v } }
        var unsettled: Violation?
        func wait(_ kind: Violation.Kind, _ message: String) {
            if unsettled == nil { unsettled = Violation(kind: kind, message: message, at: wall.now()) }
        }
        var byID: [String: Workload] = [:]
        var holders: [String: [Workload]] = [:]  // instance name → the unfinished workloads that hold it
        for w in all {
            byID[w.id] = w
            if w.phase.isFinal { continue }
            if let i = w.status.instance { holders[i.name, default: []].append(w) }
            if w.phase == .pending {
                if (w.status.pendingReasons ?? [:]).isEmpty {
                    wait(.notConverged, "\(w.id) is pending without a reason")
                }
                continue
            }
            wait(.notConverged, "\(w.id) is still \(w.phase.rawValue) (\(w.status.reason))")
            // $/h: a running workload's instance is billed at the price weaver recorded for it.
            if w.phase == .running, let i = w.status.instance, let b = bills[i.name], b.state == .running, !b.repriced,
                let believed = i.pricePerHour ?? w.status.placement?.pricePerHour, abs(b.price - believed) > 1e-9
            {
                return (
                    nil,
                    Violation(
                        kind: .costMismatch,
                        message: "\(w.id): instance \(i.name) is billed \(b.price) $/h, its placement says \(believed)",
                        at: wall.now())
                )
            }
        }
        for w in ground.runningOn.keys.sorted() {
            let node = ground.runningOn[w]!
            guard let s = byID[w], s.phase == .running || s.phase == .starting || s.phase == .terminating,
                s.status.node == node
            else {
                wait(.doubleRun, "\(w) runs on \(node) but the store has it \(byID[w]?.phase.rawValue ?? "unknown")")
                continue
            }
        }
        for name in bills.keys.sorted() {
            guard let b = bills[name], b.state != .preempted else { continue }
            guard let sharing = holders[name], !sharing.isEmpty else {
                wait(.orphanInstance, "instance \(name) of \(b.workload ?? "no workload") is billed for nothing")
                continue
            }
            // The shares of a machine's price the workloads it was planned for carry add up to no more than the
            // machine's price (those placed in its free room later carry their marginal price on the node).
            let shares = sharing.filter { $0.status.placement?.node == nil }
                .reduce(0.0) { $0 + ($1.status.placement?.pricePerHour ?? 0) }
            if let whole = sharing[0].status.instance?.pricePerHour, shares > whole + 1e-9 {
                return (
                    nil,
                    Violation(
                        kind: .costMismatch,
                        message: "the \(sharing.count) workloads on \(name) carry \(shares) $/h of its \(whole) $/h",
                        at: wall.now())
                )
            }
        }
        for p in Self.providerNames {
            for (name, count) in await providers[p]?.made ?? [:] where count > 1 {
                return (
                    nil,
                    Violation(kind: .duplicateInstance, message: "\(count) instances named \(name)", at: wall.now())
                )
            }
        }
        return (unsettled, nil)
    }

    private static func allWorkloads(_ store: MemoryStore) async throws -> [Workload] {
        var out: [Workload] = []
        var cursor: String?
        repeat {
            let page = try await store.listWorkloads(WorkloadFilter(limit: 1000, cursor: cursor))
            out += page.items
            cursor = page.nextCursor
        } while cursor != nil
        return out
    }

    private func summarise() async {
        if let store, let all = try? await Self.allWorkloads(store) {
            for w in all { stats.phases[w.phase, default: 0] += 1 }
        }
        for p in Self.providerNames {
            stats.providerCalls += await providers[p]?.calls ?? 0
            stats.cloudFaults += await providers[p]?.faultsInjected ?? 0
            stats.cloudSpend += await providers[p]?.spend(at: wall.now()) ?? 0
        }
        var counts: FaultyTransport.Counts? = weaverTransport?.counts
        for h in hosts.values {
            let c = h.transport.counts
            counts?.delivered += c.delivered
            counts?.dropped += c.dropped
            counts?.duplicated += c.duplicated
            counts?.cutOff += c.cutOff
        }
        stats.network = counts
        stats.starts = ground.starts
        let phases = stats.phases.keys.sorted { $0.rawValue < $1.rawValue }.map {
            "\($0.rawValue)=\(stats.phases[$0]!)"
        }
        write("converged phases \(phases.joined(separator: " "))")
    }

    public var eventLogHash: String { log.sha256Hex() }
    public var eventCount: Int { log.lineCount }
}

extension SimProvider {
    func setFaulty(_ on: Bool) { faulty = on }
}

/// Discards log lines (production's logs would only slow the simulation; the event log says what happened).
struct NullSink: LogSink {
    func write(_ line: String) {}
}

extension ServiceSimulation {
    /// The run's figures, a line each (printed before the hash line).
    public func summary(wallSeconds: Double) -> [String] {
        let s = stats
        let simSeconds = Double(s.simulated.components.seconds) + Double(s.simulated.components.attoseconds) / 1e18
        let speed = wallSeconds > 0 ? simSeconds / wallSeconds : 0
        let phases = Phase.allCases.compactMap { p in s.phases[p].map { "\(p.rawValue)=\($0)" } }
            .joined(separator: " ")
        let net =
            s.network.map {
                "delivered=\($0.delivered) dropped=\($0.dropped) duplicated=\($0.duplicated) cut-off=\($0.cutOff)"
            } ?? "-"
        return [
            "seed:             \(options.seed) (mode service: weaver's WorkloadService and actors in the loop)",
            "nodes:            \(scenario.nodeCount) at start, \(s.instancesMade) machines provisioned"
                + " ($\(fixed(s.cloudSpend, 2)) billed; batch window \(options.batchWindow))",
            "workloads:        \(s.submitted) submitted, \(s.deleted) deleted (\(phases))",
            "starts:           \(s.starts) process starts on machines",
            "faults:           partitions=\(s.partitions) node-crashes=\(s.nodeCrashes) preemptions=\(s.preemptions)"
                + " weaver-restarts=\(s.weaverRestarts) price-changes=\(s.priceChanges) cloud=\(s.cloudFaults) of \(s.providerCalls) provider calls",
            "network:          \(net)",
            "events:           \(eventCount) log lines, \(s.jobs) executor jobs",
            "simulated:        \(fixed(simSeconds, 0)) s in \(fixed(wallSeconds, 2)) s wall"
                + " (\(fixed(speed, 0)) simulated s per wall s)",
        ]
    }

    public var hashLine: String { "event-log sha256=\(log.sha256Hex())" }

    /// The event log's lines (only when made with `keepLog`).
    public var logLines: [String] { log.lines }
}
