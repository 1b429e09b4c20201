import FabricCore

/// A place a workload could go: free capacity on a registered node, or a new machine from a provider offer.
public enum Candidate: Sendable, Hashable {
    case node(NodeInfo)
    case offer(Offer, spot: Bool)

    public var provider: String {
        switch self {
        case .node(let n): n.provider
        case .offer(let o, _): o.provider
        }
    }

    public var region: String {
        switch self {
        case .node(let n): n.region
        case .offer(let o, _): o.region
        }
    }

    public var machineType: String {
        switch self {
        case .node(let n): n.machineType
        case .offer(let o, _): o.machineType
        }
    }

    public var spot: Bool {
        switch self {
        case .node(let n): n.spot
        case .offer(_, let spot): spot
        }
    }

    public var nodeID: String? {
        if case .node(let n) = self { return n.id }
        return nil
    }

    /// Resources still free on this candidate (a whole machine for an offer).
    public var free: Resources {
        switch self {
        case .node(let n): n.free
        case .offer(let o, _): o.resources
        }
    }

    /// Runtimes available: offers boot a shuttle that runs both containers and processes.
    public var runtimes: [RuntimeKind] {
        switch self {
        case .node(let n): n.runtimes
        case .offer: RuntimeKind.allCases
        }
    }

    /// A total order used as the last tie-break, so decisions are reproducible.
    var stableKey: String {
        switch self {
        case .node(let n): "0|\(n.id)"
        case .offer(let o, let spot): Self.offerKey(o.provider, o.region, o.machineType, spot)
        }
    }

    /// The stable key of an offer in one market (`stableKey` of `.offer`).
    static func offerKey(_ provider: String, _ region: String, _ machineType: String, _ spot: Bool) -> String {
        "1|\(provider)|\(region)|\(machineType)|\(spot ? 1 : 0)"
    }
}

/// Identifies an offer (one provider, region, machine type and market) for marking it unavailable.
public struct OfferKey: Sendable, Hashable, Codable, CustomStringConvertible {
    public var provider: String
    public var region: String
    public var machineType: String
    public var spot: Bool

    public init(provider: String, region: String, machineType: String, spot: Bool) {
        self.provider = provider
        self.region = region
        self.machineType = machineType
        self.spot = spot
    }

    public var description: String { "\(provider)/\(region)/\(machineType)\(spot ? "/spot" : "")" }
}

/// What the scheduler decides from: an immutable view of nodes, offers and provider state at one moment.
public struct PlacementSnapshot: Sendable {
    public var nodes: [NodeInfo]
    public var offers: [Offer]
    /// Providers whose offers may be used.
    public var enabledProviders: Set<String>
    /// Offers that recently failed with a capacity or quota error (TTL already applied by the caller).
    public var unavailableOffers: Set<OfferKey>
    /// Registered nodes cost their share of `pricePerHour`; offers cost their full price. When false, only
    /// nodes are candidates (real placements before provisioning exists).
    public var includeOffers: Bool

    public init(
        nodes: [NodeInfo], offers: [Offer] = [], enabledProviders: Set<String> = [],
        unavailableOffers: Set<OfferKey> = [], includeOffers: Bool = true
    ) {
        self.nodes = nodes
        self.offers = offers
        self.enabledProviders = enabledProviders
        self.unavailableOffers = unavailableOffers
        self.includeOffers = includeOffers
    }

    /// Every candidate of this snapshot, nodes first, then each offer on demand and (where priced) spot.
    public var candidates: [Candidate] {
        var out: [Candidate] = nodes.map { .node($0) }
        guard includeOffers else { return out }
        out.reserveCapacity(out.count + offers.count * 2)
        for o in offers {
            out.append(.offer(o, spot: false))
            if o.spotPerHour != nil { out.append(.offer(o, spot: true)) }
        }
        return out
    }
}

/// One candidate as the scheduler judged it: feasible with a price, or filtered with a reason.
public struct CandidateResult: Sendable, Hashable, Codable {
    public var provider: String
    public var region: String
    public var machineType: String
    public var spot: Bool
    /// The marginal $/h of placing the workload here (the offer price, or the node's share of its price).
    public var pricePerHour: Double
    public var node: String?
    public var feasible: Bool
    /// Why the candidate was filtered (a `Reason` constant), nil when feasible.
    public var reason: String?

    public init(candidate: Candidate, pricePerHour: Double, reason: String?) {
        provider = candidate.provider
        region = candidate.region
        machineType = candidate.machineType
        spot = candidate.spot
        self.pricePerHour = pricePerHour
        node = candidate.nodeID
        feasible = reason == nil
        self.reason = reason
    }

    public var placement: Placement {
        Placement(
            provider: provider, region: region, machineType: machineType, spot: spot, pricePerHour: pricePerHour,
            node: node)
    }
}

/// The outcome of placing one workload: the chosen placement (nil when nothing fits) and every candidate.
public struct PlacementDecision: Sendable, Hashable {
    public var placement: Placement?
    /// Feasible candidates first by price, then the filtered ones with their reasons.
    public var candidates: [CandidateResult]
    /// How many candidates each reason filtered.
    public var filtered: [String: Int]

    public init(placement: Placement?, candidates: [CandidateResult], filtered: [String: Int]) {
        self.placement = placement
        self.candidates = candidates
        self.filtered = filtered
    }
}
