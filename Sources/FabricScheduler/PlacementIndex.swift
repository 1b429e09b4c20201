import FabricCore

/// A mutable fleet view that answers "where does this workload go" fast, with exactly the placement
/// `PlacementStack.select(snapshot, workload).placement` would choose (same cost, best fit and stable order).
///
/// The scheduler's hot path: weaver and the simulator keep one index, place workloads through it and tell it
/// about allocations, releases and node changes. `select` stays the reference (and the explanation: every
/// candidate with its reason); tests check both agree on random fleets.
public struct PlacementIndex: Sendable {
    /// The fleet as it stands now.
    public private(set) var snapshot: PlacementSnapshot
    public let costModel: CostModel

    /// Builds an index over `snapshot` (nodes in any order; ties break by node ID as in `select`).
    public init(snapshot: PlacementSnapshot, costModel: CostModel = .dominantShare) {
        self.snapshot = snapshot
        self.costModel = costModel
        self.snapshot.nodes.sort { $0.id < $1.id }
    }

    /// The cheapest feasible placement for `w`, or nil when nothing fits.
    public func place(_ w: WorkloadSpec) -> Placement? {
        PlacementStack(costModel: costModel).select(snapshot, w).placement
    }

    /// The node with this ID, as the index holds it.
    public func node(_ id: String) -> NodeInfo? {
        position(id).map { snapshot.nodes[$0] }
    }

    /// Adds a node, or replaces the one with the same ID (state, capacity, allocation, price ...).
    public mutating func upsert(_ node: NodeInfo) {
        if let i = position(node.id) {
            snapshot.nodes[i] = node
        } else {
            let i = snapshot.nodes.firstIndex { $0.id > node.id } ?? snapshot.nodes.count
            snapshot.nodes.insert(node, at: i)
        }
    }

    /// Forgets a node.
    public mutating func remove(nodeID: String) {
        if let i = position(nodeID) { snapshot.nodes.remove(at: i) }
    }

    /// Charges `r` to a node (a placement on it).
    public mutating func allocate(_ r: Resources, on nodeID: String) {
        guard let i = position(nodeID) else { return }
        snapshot.nodes[i].allocated = snapshot.nodes[i].allocated.adding(r)
    }

    /// Frees `r` on a node (a workload on it ended).
    public mutating func release(_ r: Resources, on nodeID: String) {
        guard let i = position(nodeID) else { return }
        snapshot.nodes[i].allocated = snapshot.nodes[i].allocated.subtracting(r)
    }

    /// Replaces the set of offers marked unavailable (capacity or quota errors within their TTL).
    public mutating func setUnavailableOffers(_ keys: Set<OfferKey>) {
        snapshot.unavailableOffers = keys
    }

    private func position(_ id: String) -> Int? {
        var lo = 0
        var hi = snapshot.nodes.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if snapshot.nodes[mid].id < id { lo = mid + 1 } else { hi = mid }
        }
        return lo < snapshot.nodes.count && snapshot.nodes[lo].id == id ? lo : nil
    }
}
