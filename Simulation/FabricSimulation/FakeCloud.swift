import FabricCore
import FabricScheduler

/// A machine at a fake provider.
struct CloudInstance {
    var name: String
    var key: OfferKey
    var offer: Offer
    /// What the provider bills for it, in micro-dollars per hour (the price when it was created).
    var priceMicros: Int64
    /// Part of the fleet from before the run (never created by a provision call).
    var base: Bool
    /// The client token of the provision call that created it (workload and attempt).
    var tag: String? = nil
}

/// What a provider call answered.
enum CloudResult: Equatable {
    case ok
    case capacityError
    case quotaError
    case rateLimited
    /// The provider did the work but the answer was lost (the caller times out and retries).
    case lostResponse
}

/// The fake providers: every catalog offer with a current price, a capacity per market, instances by name
/// (provisioning is idempotent by name), and injected faults drawn from the run's generator.
struct FakeCloud {
    /// The catalog as published, and the offers at today's prices.
    let catalog: [Offer]
    private(set) var offers: [Offer]
    let capacity: [OfferKey: Int]
    private(set) var used: [OfferKey: Int] = [:]
    private(set) var instances: [String: CloudInstance] = [:]
    /// Faults are injected only while this is set (the fault phase).
    var faults = true
    let scenario: Scenario

    init(scenario: Scenario, offers: [Offer]) {
        self.scenario = scenario
        catalog = offers
        self.offers = offers
        capacity = scenario.capacityPerMarket
    }

    static func price(_ o: Offer, spot: Bool) -> Double {
        spot ? (o.spotPerHour ?? o.onDemandPerHour) : o.onDemandPerHour
    }
    static func micros(_ p: Double) -> Int64 { Int64((p * 1_000_000).rounded()) }

    /// Adds a base-fleet machine (no call, no capacity limit).
    mutating func addBase(name: String, offer: Offer, spot: Bool) -> CloudInstance {
        let key = OfferKey(provider: offer.provider, region: offer.region, machineType: offer.machineType, spot: spot)
        let i = CloudInstance(
            name: name, key: key, offer: offer, priceMicros: Self.micros(Self.price(offer, spot: spot)), base: true)
        instances[name] = i
        return i
    }

    /// Provisions a machine named `name` in market `key`. Idempotent: a name that exists answers `ok` with the
    /// existing machine (`created` false).
    mutating func provision(name: String, key: OfferKey, tag: String, draw: inout Draw) -> (
        CloudResult, CloudInstance?, created: Bool
    ) {
        if faults && draw.chance(scenario.rateLimitShare) { return (.rateLimited, nil, false) }
        if let existing = instances[name] {
            return (faults && draw.chance(scenario.lostResponseShare) ? .lostResponse : .ok, existing, false)
        }
        if faults && draw.chance(scenario.quotaErrorShare) { return (.quotaError, nil, false) }
        if faults && draw.chance(scenario.capacityErrorShare) { return (.capacityError, nil, false) }
        guard used[key, default: 0] < capacity[key, default: 0],
            let offer = offers.first(where: {
                $0.provider == key.provider && $0.region == key.region && $0.machineType == key.machineType
            })
        else { return (.capacityError, nil, false) }
        let i = CloudInstance(
            name: name, key: key, offer: offer, priceMicros: Self.micros(Self.price(offer, spot: key.spot)),
            base: false, tag: tag)
        instances[name] = i
        used[key, default: 0] += 1
        let result: CloudResult = faults && draw.chance(scenario.lostResponseShare) ? .lostResponse : .ok
        return (result, i, true)
    }

    /// Terminates a machine (idempotent: an unknown name is already gone).
    mutating func terminate(name: String, draw: inout Draw) -> CloudResult {
        if faults && draw.chance(scenario.rateLimitShare) { return .rateLimited }
        remove(name)
        return faults && draw.chance(scenario.lostResponseShare) ? .lostResponse : .ok
    }

    /// The provider takes a machine away (host failure, spot reclaim).
    mutating func remove(_ name: String) {
        guard let i = instances.removeValue(forKey: name) else { return }
        if !i.base { used[i.key, default: 1] -= 1 }
    }

    /// Markets with no capacity left (what a legitimately pending workload may be waiting for).
    var fullMarkets: Set<OfferKey> {
        Set(capacity.keys.filter { used[$0, default: 0] >= capacity[$0]! })
    }

    /// Moves some prices by up to ±25% around the catalog's (hourly, in the fault phase).
    mutating func changePrices(draw: inout Draw) -> Int {
        var changed = 0
        for i in offers.indices where draw.chance(0.1) {
            let f = draw.uniform(0.75, 1.25)
            let c = catalog[i]
            offers[i].onDemandPerHour = (c.onDemandPerHour * f * 1000).rounded() / 1000
            if let s = c.spotPerHour { offers[i].spotPerHour = (s * f * 1000).rounded() / 1000 }
            changed += 1
        }
        return changed
    }
}
