import FabricCore
import FabricProviders
import FabricScheduler
import Foundation

/// Limits of the simulated world, each a named constant with its unit.
public enum SimLimits {
    public static let nodesMin = 10
    public static let nodesMax = 10_000
    public static let workloadsMax = 200_000
    public static let workloadRunMin: Duration = .seconds(120)
    public static let workloadRunMax: Duration = .seconds(3 * 3600)
    /// How long the liveness phase may take to converge after the fault phase.
    public static let livenessMax: Duration = .seconds(8 * 3600)
    public static let restartsMax = 5
    public static let providerRetriesMax = 6
    public static let providerBackoffMax: Duration = .seconds(60)
    public static let pendingBackoffMax: Duration = .seconds(1800)
    /// Capacity errors mark an offer unavailable for this long, doubling on repeats up to `offerUnavailableMax`.
    public static let offerUnavailableTTL: Duration = .seconds(300)
    public static let offerUnavailableMax: Duration = .seconds(2400)
    public static let referenceSamplesMax = 200
    /// Distinct pending specs the brute force judges after convergence (a fresh index judges the rest).
    public static let finalChecksMax = 100
}

/// How workloads arrive over the fault phase.
public enum ArrivalPattern: String, Sendable, CaseIterable {
    /// Evenly spread (Poisson).
    case steady
    /// Quiet stretches and bursts of many at once.
    case bursty
    /// A day-night wave.
    case diurnal
}

/// Everything a run is made of, drawn from the seed (swarm testing: each seed is another world).
public struct Scenario: Sendable {
    public var seed: UInt64
    public var nodeCount: Int
    public var faultPhase: Duration
    /// Offers the base fleet's nodes are drawn from (with `spot` per node).
    public var baseFleet: [(offer: Offer, spot: Bool)]
    public var workloadCount: Int
    public var arrival: ArrivalPattern
    public var gpuShare: Double
    public var spotRequiredShare: Double
    public var spotNeverShare: Double
    public var constrainedShare: Double
    public var maxPriceShare: Double
    public var failShare: Double
    public var deleteShare: Double
    // Fault rates (fault phase only).
    public var partitionsPerNodeDay: Double
    public var crashesPerNodeDay: Double
    public var preemptionsPerSpotNodeDay: Double
    public var capacityErrorShare: Double
    public var quotaErrorShare: Double
    public var rateLimitShare: Double
    public var lostResponseShare: Double
    /// Instances each market (offer and spot or not) can give out at once.
    public var capacityPerMarket: [OfferKey: Int]
    public var apiLatencyMsMax: Int64
    public var bootSecondsMax: Int64
    /// Controller crashes and restarts per simulated day (fault phase only).
    public var restartsPerDay: Double

    public var description: String {
        "nodes=\(nodeCount) workloads=\(workloadCount) faultPhase=\(faultPhase.components.seconds)s arrival=\(arrival)"
            + " gpu=\(pct(gpuShare)) spotRequired=\(pct(spotRequiredShare)) constrained=\(pct(constrainedShare))"
            + " partitions/node/day=\(fmt(partitionsPerNodeDay)) crashes/node/day=\(fmt(crashesPerNodeDay))"
            + " preemptions/spot-node/day=\(fmt(preemptionsPerSpotNodeDay)) capacityErrors=\(pct(capacityErrorShare))"
            + " quotaErrors=\(pct(quotaErrorShare)) rateLimits=\(pct(rateLimitShare))"
            + " lostResponses=\(pct(lostResponseShare)) restarts/day=\(fmt(restartsPerDay))"
    }

    /// Draws a scenario from `rng` (the run's one generator); `nodes` and `duration` override the draws.
    public static func draw(
        seed: UInt64, rng: inout SplitMix64, offers: [Offer], nodes: Int?, duration: Duration?,
        restartsPerDay: Double? = nil
    ) -> Scenario {
        var r = Draw(rng: rng)
        defer { rng = r.rng }
        // Fleet size: log-uniform over 10...10,000, so small and large fleets are both common.
        let drawnNodes = Int(r.logUniform(Double(SimLimits.nodesMin), Double(SimLimits.nodesMax)).rounded())
        let nodeCount = nodes ?? drawnNodes
        let drawnHours = r.pick([1, 2, 3, 6, 12, 24])
        let faultPhase = duration ?? .seconds(Int64(drawnHours) * 3600)
        let cpuOffers = offers.filter { $0.gpuCount == 0 }
        let gpuOffers = offers.filter { $0.gpuCount > 0 }
        let gpuNodeShare = r.uniform(0.05, 0.4)
        let spotNodeShare = r.uniform(0, 0.5)
        var fleet: [(offer: Offer, spot: Bool)] = []
        fleet.reserveCapacity(nodeCount)
        for _ in 0..<nodeCount {
            let o = r.chance(gpuNodeShare) ? r.pick(gpuOffers) : r.pick(cpuOffers)
            fleet.append((o, o.spotPerHour != nil && r.chance(spotNodeShare)))
        }
        let hours = Double(faultPhase.components.seconds) / 3600
        let perNodeHour = r.logUniform(0.05, 1)
        let workloadCount = min(SimLimits.workloadsMax, max(50, Int(Double(nodeCount) * perNodeHour * hours)))
        var capacity: [OfferKey: Int] = [:]
        for o in offers {
            for spot in o.spotPerHour != nil ? [false, true] : [false] {
                let key = OfferKey(provider: o.provider, region: o.region, machineType: o.machineType, spot: spot)
                capacity[key] = Int(r.logUniform(2, 2000))
            }
        }
        // Drawn even when overridden, so an override changes nothing else in the world.
        let drawnRestarts = r.logUniform(0.5, 24)
        return Scenario(
            seed: seed, nodeCount: nodeCount, faultPhase: faultPhase, baseFleet: fleet, workloadCount: workloadCount,
            arrival: r.pick(ArrivalPattern.allCases), gpuShare: r.uniform(0.05, 0.5),
            spotRequiredShare: r.uniform(0, 0.2), spotNeverShare: r.uniform(0, 0.4),
            constrainedShare: r.uniform(0, 0.3), maxPriceShare: r.uniform(0, 0.2), failShare: r.uniform(0, 0.1),
            deleteShare: r.uniform(0, 0.05), partitionsPerNodeDay: r.logUniform(0.05, 3),
            crashesPerNodeDay: r.logUniform(0.005, 0.3), preemptionsPerSpotNodeDay: r.logUniform(0.05, 2),
            capacityErrorShare: r.uniform(0, 0.25), quotaErrorShare: r.uniform(0, 0.1),
            rateLimitShare: r.uniform(0, 0.3), lostResponseShare: r.uniform(0, 0.1), capacityPerMarket: capacity,
            apiLatencyMsMax: Int64(r.logUniform(50, 5000)), bootSecondsMax: Int64(r.uniform(20, 300)),
            restartsPerDay: restartsPerDay ?? drawnRestarts)
    }

    private func pct(_ x: Double) -> String { "\(Int((x * 100).rounded()))%" }
    private func fmt(_ x: Double) -> String { String(Double(Int(x * 1000)) / 1000) }
}

/// Draws from the run's generator: uniform, log-uniform, picks and coin flips.
struct Draw {
    var rng: SplitMix64

    /// Uniform in [0, 1).
    mutating func unit() -> Double { Double(rng.next() >> 11) * (1.0 / 9_007_199_254_740_992.0) }
    mutating func uniform(_ a: Double, _ b: Double) -> Double { a + (b - a) * unit() }
    mutating func logUniform(_ a: Double, _ b: Double) -> Double { Foundation.exp(log(a) + (log(b) - log(a)) * unit()) }
    mutating func chance(_ p: Double) -> Bool { unit() < p }
    mutating func below(_ n: Int) -> Int { Int(rng.next() % UInt64(n)) }
    mutating func int(_ a: Int64, _ b: Int64) -> Int64 { a + Int64(rng.next() % UInt64(b - a + 1)) }
    mutating func pick<T>(_ xs: [T]) -> T { xs[below(xs.count)] }
    /// An exponentially distributed wait with the given mean (Poisson arrivals and faults).
    mutating func exponential(mean: Double) -> Double { -mean * log(1 - unit()) }
}
