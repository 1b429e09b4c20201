/// The node lifecycle state.
public enum NodeState: String, Sendable, Hashable, Codable, CaseIterable {
    case ready, suspect, lost, draining, deregistered

    /// Whether new workloads may be placed on a node in this state.
    public var isSchedulable: Bool { self == .ready }
}

/// A node that runs workloads: the embedded local node, a shuttle, or a provisioned machine.
public struct NodeInfo: Sendable, Hashable, Codable {
    public var id: String
    public var name: String
    /// `local` for the embedded node, otherwise the provider that supplied the machine.
    public var provider: String
    public var region: String
    public var machineType: String
    public var capacity: Resources
    public var allocated: Resources
    public var labels: [String: String]
    public var runtimes: [RuntimeKind]
    /// What the whole node costs per hour (0 for machines Fabric does not pay for).
    public var pricePerHour: Double
    public var spot: Bool
    public var state: NodeState
    public var registeredAt: Timestamp
    public var lastHeartbeat: Timestamp?
    /// The sequence number of the node's last published event (`fabric.events.node.<id>`).
    public var eventSeq: Int?

    public init(
        id: String, name: String, provider: String = "local", region: String = "local",
        machineType: String = "local", capacity: Resources, allocated: Resources = .zero,
        labels: [String: String] = [:], runtimes: [RuntimeKind] = [.process], pricePerHour: Double = 0,
        spot: Bool = false, state: NodeState = .ready, registeredAt: Timestamp, lastHeartbeat: Timestamp? = nil
    ) {
        self.id = id
        self.name = name
        self.provider = provider
        self.region = region
        self.machineType = machineType
        self.capacity = capacity
        self.allocated = allocated
        self.labels = labels
        self.runtimes = runtimes
        self.pricePerHour = pricePerHour
        self.spot = spot
        self.state = state
        self.registeredAt = registeredAt
        self.lastHeartbeat = lastHeartbeat
    }

    /// Capacity not yet allocated.
    public var free: Resources {
        var f = Resources(
            cpuMillis: capacity.cpuMillis - allocated.cpuMillis,
            memoryBytes: capacity.memoryBytes - allocated.memoryBytes)
        if let g = capacity.gpu { f.gpu = GPUSpec(count: g.count - allocated.gpuCount, model: g.model) }
        return f
    }
}

/// A machine a provider sells: one row of the offer catalog (or of a live price list).
public struct Offer: Sendable, Hashable, Codable {
    public var provider: String
    public var region: String
    public var machineType: String
    public var vcpus: Int
    public var memoryGiB: Double
    public var gpuModel: String?
    public var gpuCount: Int
    /// Memory of one GPU, in GiB.
    public var gpuMemoryGiB: Int?
    public var onDemandPerHour: Double
    public var spotPerHour: Double?
    /// Where the price came from (a URL, a catalog file and commit, or `live`).
    public var source: String
    /// When the price was observed, `YYYY-MM-DD`.
    public var asOf: String

    public init(
        provider: String, region: String, machineType: String, vcpus: Int, memoryGiB: Double, gpuModel: String?,
        gpuCount: Int, gpuMemoryGiB: Int?, onDemandPerHour: Double, spotPerHour: Double?, source: String,
        asOf: String
    ) {
        self.provider = provider
        self.region = region
        self.machineType = machineType
        self.vcpus = vcpus
        self.memoryGiB = memoryGiB
        self.gpuModel = gpuModel.map(GPUModel.canonical)
        self.gpuCount = gpuCount
        self.gpuMemoryGiB = gpuMemoryGiB
        self.onDemandPerHour = onDemandPerHour
        self.spotPerHour = spotPerHour
        self.source = source
        self.asOf = asOf
    }

    /// The resources one machine of this offer provides.
    public var resources: Resources {
        Resources(
            cpuMillis: Int64(vcpus) * 1000, memoryBytes: Int64(memoryGiB * 1024 * 1024 * 1024),
            gpu: gpuCount > 0 ? GPUSpec(count: gpuCount, model: gpuModel) : nil)
    }
}

/// The providers Fabric knows, by their configuration name.
public enum ProviderName: String, Sendable, Hashable, Codable, CaseIterable {
    case local, k8s, runpod, coreweave, aws, gcp
}
