import FabricCore
import FabricProviders
import FabricScheduler
import Synchronization

/// The clouds' current price list: what weaver's offer view reads (synchronously, in its scheduling pass) and what
/// an instance is billed at when it is made. Prices change hourly in the fault phase.
final class PriceBook: @unchecked Sendable {
    private let state: Mutex<(offers: [Offer], changedAt: [String: Timestamp])>
    let catalog: [Offer]

    init(_ offers: [Offer]) {
        catalog = offers
        state = Mutex((offers, [:]))
    }

    var offers: [Offer] { state.withLock { $0.offers } }

    /// The offer as priced now.
    func offer(provider: String, region: String, machineType: String) -> Offer? {
        state.withLock { s in
            s.offers.first { $0.provider == provider && $0.region == region && $0.machineType == machineType }
        }
    }

    /// When this offer's price last changed.
    func changedAt(_ o: Offer) -> Timestamp? {
        state.withLock { $0.changedAt["\(o.provider)/\(o.region)/\(o.machineType)"] }
    }

    /// Moves about a tenth of the prices by -25%..+25% of their catalog price; returns how many changed.
    func change(draw: inout Draw, at now: Timestamp) -> Int {
        state.withLock { s in
            var n = 0
            for i in s.offers.indices where draw.chance(0.1) {
                let f = draw.uniform(0.75, 1.25)
                let c = catalog[i]
                s.offers[i].onDemandPerHour = (c.onDemandPerHour * f * 1000).rounded() / 1000
                if let spot = c.spotPerHour { s.offers[i].spotPerHour = (spot * f * 1000).rounded() / 1000 }
                s.changedAt["\(c.provider)/\(c.region)/\(c.machineType)"] = now
                n += 1
            }
            return n
        }
    }
}

/// A machine cloud (AWS- or GCP-like) behind production's `Provider` protocol: offers at catalog prices, instances
/// that boot after a delay and join as nodes, capacity per market, and seeded faults (capacity and quota errors,
/// throttling with Retry-After, answers lost after the instance was made, API latency, spot preemptions).
///
/// Provisioning is idempotent by name, as the real drivers are (ClientToken, requestId): the duplicate-instance
/// invariant holds only if weaver never asks twice under two names for one placement.
actor SimProvider: Provider {
    struct Live {
        var instance: Instance
        var offer: Offer
        var price: Double
        var workload: String?
        var madeAt: Timestamp
    }

    nonisolated let name: ProviderName
    let prices: PriceBook
    let scenario: Scenario
    let timer: TaskClock
    let clock: VirtualWallClock
    private var rng: SplitMix64
    private var nextID = 0
    /// Instances that exist (pending, running or stopping), by name.
    private(set) var live: [String: Live] = [:]
    /// Every name ever made, with how many instances were made under it (must stay 1).
    private(set) var made: [String: Int] = [:]
    private var inUse: [OfferKey: Int] = [:]
    /// Faults are drawn only while this is set (the fault phase).
    var faulty = true
    /// Called when an instance has booted (the simulator starts its node) and when one is gone (it stops it).
    let booted: @Sendable (String, Offer, Bool, Double) async -> Void
    let gone: @Sendable (String) async -> Void
    let log: @Sendable (String) -> Void
    private(set) var calls = 0
    private(set) var faultsInjected = 0
    /// Dollars billed for instances that ended (price × hours from made to gone).
    private var billedDollars = 0.0

    /// Dollars billed so far: ended instances, and the ones that exist until `now`.
    func spend(at now: Timestamp) -> Double {
        live.keys.sorted().reduce(billedDollars) { $0 + Self.cost(live[$1]!, until: now) }
    }

    private static func cost(_ l: Live, until end: Timestamp) -> Double {
        let d = end.since(l.madeAt)
        return l.price * (Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18) / 3600
    }

    init(
        name: ProviderName, prices: PriceBook, scenario: Scenario, seed: UInt64, timer: TaskClock,
        clock: VirtualWallClock, booted: @escaping @Sendable (String, Offer, Bool, Double) async -> Void,
        gone: @escaping @Sendable (String) async -> Void, log: @escaping @Sendable (String) -> Void
    ) {
        self.name = name
        self.prices = prices
        self.scenario = scenario
        self.timer = timer
        self.clock = clock
        self.rng = SplitMix64(seed: seed)
        self.booted = booted
        self.gone = gone
        self.log = log
    }

    private func unit() -> Double { Double(rng.next() >> 11) * (1.0 / 9_007_199_254_740_992.0) }
    private func chance(_ p: Double) -> Bool { faulty && unit() < p }

    /// API latency, then maybe throttling.
    private func call(_ what: String) async throws {
        calls += 1
        let ms = Int64(unit() * Double(max(20, min(scenario.apiLatencyMsMax, 2000))))
        try await timer.sleep(for: .milliseconds(ms))
        if chance(scenario.rateLimitShare / 4) {
            faultsInjected += 1
            log("cloud \(name.rawValue) throttles \(what)")
            throw ProviderError(
                .rateLimited, provider: name.rawValue, code: "RequestLimitExceeded", "simulated throttling",
                retryAfter: .seconds(Int64(1 + unit() * 5)))
        }
    }

    func offers() async throws -> OfferList {
        OfferList(offers: prices.offers.filter { $0.provider == name.rawValue }, origin: "catalog", asOf: clock.now())
    }

    func provision(_ request: InstanceRequest) async throws -> Instance {
        try await call("provision \(request.name)")
        if let l = live[request.name] { return l.instance }
        guard
            let offer = prices.offer(provider: name.rawValue, region: request.region, machineType: request.machineType)
        else {
            throw ProviderError(.invalidRequest, provider: name.rawValue, code: "InvalidParameter", "no such offer")
        }
        let key = OfferKey(
            provider: offer.provider, region: offer.region, machineType: offer.machineType, spot: request.spot)
        if chance(scenario.capacityErrorShare) || inUse[key, default: 0] >= scenario.capacityPerMarket[key, default: 0]
        {
            if faulty { faultsInjected += 1 }
            log("cloud \(name.rawValue) has no capacity for \(request.name) in \(key)")
            throw ProviderError(
                .capacityUnavailable, provider: name.rawValue, code: "InsufficientInstanceCapacity",
                "simulated: no \(offer.machineType) in \(offer.region)")
        }
        if chance(scenario.quotaErrorShare) {
            faultsInjected += 1
            log("cloud \(name.rawValue) refuses \(request.name): quota")
            throw ProviderError(
                .quotaExceeded, provider: name.rawValue, code: "VcpuLimitExceeded", "simulated quota")
        }
        nextID += 1
        let instance = Instance(
            id: "\(name.rawValue)-i-\(nextID)", name: request.name, provider: name.rawValue, region: offer.region,
            machineType: offer.machineType, spot: request.spot, state: .pending, labels: request.labels)
        let price = request.spot ? (offer.spotPerHour ?? offer.onDemandPerHour) : offer.onDemandPerHour
        live[request.name] = Live(
            instance: instance, offer: offer, price: price, workload: request.labels[InstanceRequest.workloadLabel],
            madeAt: clock.now())
        made[request.name, default: 0] += 1
        inUse[key, default: 0] += 1
        log("cloud \(name.rawValue) makes \(request.name) \(offer.machineType) \(offer.region) spot=\(request.spot)")
        let boot = Duration.seconds(Int64(10 + unit() * Double(max(10, scenario.bootSecondsMax))))
        let spot = request.spot
        Task {
            try? await self.timer.sleep(for: boot)
            await self.boot(request.name, offer: offer, spot: spot, price: price)
        }
        if chance(scenario.lostResponseShare) {
            faultsInjected += 1
            log("cloud \(name.rawValue) loses the answer for \(request.name)")
            throw ProviderError(.transient, provider: name.rawValue, code: "InternalError", "simulated lost answer")
        }
        return instance
    }

    private func boot(_ name: String, offer: Offer, spot: Bool, price: Double) async {
        guard var l = live[name], l.instance.state == .pending else { return }
        l.instance.state = .running
        live[name] = l
        await booted(name, offer, spot, price)
    }

    func status(name: String, region: String) async throws -> Instance? {
        try await call("status \(name)")
        return live[name]?.instance
    }

    func terminate(name: String, region: String) async throws {
        try await call("terminate \(name)")
        await end(name, why: "terminated")
    }

    func list() async throws -> [Instance] {
        try await call("list")
        return live.keys.sorted().compactMap { live[$0]?.instance }
    }

    /// An instance ends (terminated or taken back): its node goes with it.
    func end(_ name: String, why: String) async {
        guard let l = live.removeValue(forKey: name) else { return }
        billedDollars += Self.cost(l, until: clock.now())
        let key = OfferKey(
            provider: l.offer.provider, region: l.offer.region, machineType: l.offer.machineType, spot: l.instance.spot)
        inUse[key, default: 1] -= 1
        log("cloud \(self.name.rawValue) ends \(name): \(why)")
        await gone(name)
    }

    /// A spot preemption of a running spot instance, drawn by `pick` (nil when none runs).
    func preempt(pick: Int) async -> String? {
        let spot = live.keys.sorted().filter { live[$0]?.instance.spot == true && live[$0]?.instance.state == .running }
        guard !spot.isEmpty else { return nil }
        let name = spot[pick % spot.count]
        // The provider reports it as preempted while it lingers, then it is gone.
        live[name]?.instance.state = .preempted
        await gone(name)
        let n = name
        Task {
            try? await self.timer.sleep(for: .seconds(120))
            self.forget(n)
        }
        return name
    }

    private func forget(_ name: String) {
        guard let l = live.removeValue(forKey: name) else { return }
        billedDollars += Self.cost(l, until: clock.now())
        let key = OfferKey(
            provider: l.offer.provider, region: l.offer.region, machineType: l.offer.machineType, spot: l.instance.spot)
        inUse[key, default: 1] -= 1
    }

    /// What is billed now: every instance that exists, with its price.
    func bill() -> [String: (price: Double, workload: String?, state: InstanceState, repriced: Bool)] {
        live.mapValues { l in
            // Whether the price changed in the 10 minutes before the instance was made: weaver may have placed it at
            // the old price (a legitimate difference the cost check skips).
            let changed =
                prices.changedAt(l.offer).map {
                    $0 <= l.madeAt && l.madeAt.since($0) < .seconds(600)
                } ?? false
            return (l.price, l.workload, l.instance.state, changed)
        }
    }
}
