import FabricCore

/// Why a candidate was filtered. Stable strings: the API and the handbook show them.
public enum Reason {
    public static let providerDisabled = "provider-disabled"
    public static let providerNotAllowed = "provider-not-allowed"
    public static let regionNotAllowed = "region-not-allowed"
    public static let nodeNotReady = "node-not-ready"
    public static let runtimeUnavailable = "runtime-unavailable"
    public static let spotNotAllowed = "spot-not-allowed"
    public static let spotRequired = "spot-required"
    public static let gpuTypeMismatch = "gpu-type-mismatch"
    public static let insufficientGPU = "insufficient-gpu"
    public static let insufficientCPU = "insufficient-cpu"
    public static let insufficientMemory = "insufficient-memory"
    public static let offerUnavailable = "offer-unavailable"
    public static let overMaxPrice = "over-max-price"

    /// What each reason means, for messages a person reads.
    public static let explanations: [String: String] = [
        providerDisabled: "the provider is disabled in the settings",
        providerNotAllowed: "placement.providers excludes it",
        regionNotAllowed: "placement.regions excludes it",
        nodeNotReady: "the node is not ready (suspect, lost, draining or deregistered)",
        runtimeUnavailable: "no container runtime: images need containerd, which this node does not offer",
        spotNotAllowed: "spot capacity, and placement.spot is never",
        spotRequired: "on-demand capacity, and placement.spot is required",
        gpuTypeMismatch: "GPUs of a different model",
        insufficientGPU: "not enough free GPUs (or none at all)",
        insufficientCPU: "not enough free CPU",
        insufficientMemory: "not enough free memory",
        offerUnavailable: "the offer recently failed with a capacity or quota error",
        overMaxPrice: "costs more than placement.maxPricePerHour",
    ]

    /// Every reason, for documentation and tests.
    public static let all = [
        providerDisabled, providerNotAllowed, regionNotAllowed, nodeNotReady, runtimeUnavailable, spotNotAllowed,
        spotRequired, gpuTypeMismatch, insufficientGPU, insufficientCPU, insufficientMemory, offerUnavailable,
        overMaxPrice,
    ]
}

/// One feasibility test. Returns nil when the candidate passes, else the reason it is filtered.
public protocol FeasibilityCheck: Sendable {
    var name: String { get }
    func check(_ c: Candidate, price: Double, _ w: WorkloadSpec, _ s: PlacementSnapshot) -> String?
}

/// Offers of disabled providers are not candidates for placement.
struct ProviderEnabledCheck: FeasibilityCheck {
    let name = "provider-enabled"
    func check(_ c: Candidate, price: Double, _ w: WorkloadSpec, _ s: PlacementSnapshot) -> String? {
        guard case .offer(let o, _) = c else { return nil }
        return s.enabledProviders.contains(o.provider) ? nil : Reason.providerDisabled
    }
}

/// The workload's `placement.providers` and `placement.regions` constraints.
struct LocationCheck: FeasibilityCheck {
    let name = "location"
    func check(_ c: Candidate, price: Double, _ w: WorkloadSpec, _ s: PlacementSnapshot) -> String? {
        if let providers = w.placement.providers, !providers.contains(c.provider) { return Reason.providerNotAllowed }
        if let regions = w.placement.regions, !regions.contains(c.region) { return Reason.regionNotAllowed }
        return nil
    }
}

/// Nodes must be ready (not suspect, lost, draining or deregistered).
struct NodeReadyCheck: FeasibilityCheck {
    let name = "node-ready"
    func check(_ c: Candidate, price: Double, _ w: WorkloadSpec, _ s: PlacementSnapshot) -> String? {
        guard case .node(let n) = c else { return nil }
        return n.state.isSchedulable ? nil : Reason.nodeNotReady
    }
}

/// Images need a container runtime; bare commands need the process runtime.
struct RuntimeCheck: FeasibilityCheck {
    let name = "runtime"
    func check(_ c: Candidate, price: Double, _ w: WorkloadSpec, _ s: PlacementSnapshot) -> String? {
        c.runtimes.contains(w.runtimeKind) ? nil : Reason.runtimeUnavailable
    }
}

/// `placement.spot`: never, allowed or required.
struct SpotCheck: FeasibilityCheck {
    let name = "spot"
    func check(_ c: Candidate, price: Double, _ w: WorkloadSpec, _ s: PlacementSnapshot) -> String? {
        switch w.placement.spot {
        case .never: c.spot ? Reason.spotNotAllowed : nil
        case .required: c.spot ? nil : Reason.spotRequired
        case .allowed: nil
        }
    }
}

/// GPU model and count.
struct GPUCheck: FeasibilityCheck {
    let name = "gpu"
    func check(_ c: Candidate, price: Double, _ w: WorkloadSpec, _ s: PlacementSnapshot) -> String? {
        guard let want = w.resources.gpu, want.count > 0 else { return nil }
        let have = c.free.gpu
        let capacityGPUs: Int
        switch c {
        case .node(let n): capacityGPUs = n.capacity.gpuCount
        case .offer(let o, _): capacityGPUs = o.gpuCount
        }
        if capacityGPUs == 0 { return Reason.insufficientGPU }  // no GPUs at all: not a model question
        if let model = want.model {
            guard let offered = have?.model ?? capacityModel(c), GPUModel.satisfies(offered: offered, requested: model)
            else { return Reason.gpuTypeMismatch }
        }
        return (have?.count ?? 0) >= want.count ? nil : Reason.insufficientGPU
    }

    private func capacityModel(_ c: Candidate) -> String? {
        if case .node(let n) = c { return n.capacity.gpu?.model }
        return nil
    }
}

/// CPU and memory.
struct CPUMemoryCheck: FeasibilityCheck {
    let name = "cpu-memory"
    func check(_ c: Candidate, price: Double, _ w: WorkloadSpec, _ s: PlacementSnapshot) -> String? {
        let free = c.free
        if free.cpuMillis < w.resources.cpuMillis { return Reason.insufficientCPU }
        if free.memoryBytes < w.resources.memoryBytes { return Reason.insufficientMemory }
        return nil
    }
}

/// Offers marked unavailable after a capacity or quota error.
struct OfferAvailableCheck: FeasibilityCheck {
    let name = "offer-available"
    func check(_ c: Candidate, price: Double, _ w: WorkloadSpec, _ s: PlacementSnapshot) -> String? {
        guard case .offer(let o, let spot) = c, !s.unavailableOffers.isEmpty else { return nil }
        let key = OfferKey(provider: o.provider, region: o.region, machineType: o.machineType, spot: spot)
        return s.unavailableOffers.contains(key) ? Reason.offerUnavailable : nil
    }
}
