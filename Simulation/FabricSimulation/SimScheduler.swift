import FabricCore
import FabricScheduler

/// The scheduler a run places with: the production `PlacementIndex`, or a variant (the brute-force reference or a
/// deliberately broken one). Every variant keeps the same `PlacementIndex` as its fleet view, so node changes,
/// allocations and releases reach them all alike.
struct SimScheduler {
    let variant: SchedulerVariant
    private(set) var index: PlacementIndex
    private var enabledProviders: Set<String>
    private var unavailable: Set<OfferKey> = []

    init(variant: SchedulerVariant, offers: [Offer], enabledProviders: Set<String>) {
        self.variant = variant
        self.enabledProviders = enabledProviders
        index = PlacementIndex(
            snapshot: PlacementSnapshot(nodes: [], offers: offers, enabledProviders: enabledProviders))
    }

    /// The cheapest feasible placement for `w` as this variant sees it.
    func place(_ w: WorkloadSpec) -> Placement? {
        switch variant {
        case .index, .brokenDoubleBook: return index.place(w)
        case .reference: return PlacementStack().select(index.snapshot, w).placement
        case .brokenGPUType: return Self.gpuTypeBlind.select(index.snapshot, w).placement
        }
    }

    /// The brute-force reference over the same fleet view (the sampled cheapest-placement check).
    func reference(_ w: WorkloadSpec) -> Placement? {
        PlacementStack().select(index.snapshot, w).placement
    }

    /// A node joined (`previous` nil), changed state or price. `previous` is the state the controller held before.
    mutating func upsert(_ node: NodeInfo, previous: NodeState?) {
        var n = node
        if variant == .brokenDoubleBook, n.state == .ready, previous == nil || previous == .suspect || previous == .lost
        {
            n.allocated = .zero  // the bug: a node that joins or comes back is taken as empty
        }
        index.upsert(n)
    }

    mutating func remove(nodeID: String) { index.remove(nodeID: nodeID) }
    mutating func allocate(_ r: Resources, on id: String) { index.allocate(r, on: id) }
    mutating func release(_ r: Resources, on id: String) { index.release(r, on: id) }

    mutating func setUnavailableOffers(_ keys: Set<OfferKey>) {
        unavailable = keys
        index.setUnavailableOffers(keys)
    }

    /// New offer prices: the index is rebuilt over the same nodes (with their allocations).
    mutating func setOffers(_ offers: [Offer]) {
        index = PlacementIndex(
            snapshot: PlacementSnapshot(
                nodes: index.snapshot.nodes, offers: offers, enabledProviders: enabledProviders,
                unavailableOffers: unavailable))
    }

    /// `PlacementStack` with the GPU check replaced by one that counts GPUs but ignores their model.
    static let gpuTypeBlind = PlacementStack(
        checks: PlacementStack.defaultChecks.map { $0.name == "gpu" ? GPUCountOnlyCheck() : $0 })
}

/// Broken on purpose (`--scheduler broken-gpu-type`): enough GPUs of any model pass.
struct GPUCountOnlyCheck: FeasibilityCheck {
    let name = "gpu"
    func check(_ c: Candidate, price: Double, _ w: WorkloadSpec, _ s: PlacementSnapshot) -> String? {
        guard let want = w.resources.gpu, want.count > 0 else { return nil }
        return (c.free.gpu?.count ?? 0) >= want.count ? nil : Reason.insufficientGPU
    }
}
