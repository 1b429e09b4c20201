/// How a workload may be placed: which providers and regions, spot or not, and a price ceiling.
public struct PlacementConstraints: Sendable, Hashable, Codable {
    public var providers: [String]?
    public var regions: [String]?
    public var spot: SpotPolicy
    public var maxPricePerHour: Double?

    public init(
        providers: [String]? = nil, regions: [String]? = nil, spot: SpotPolicy = .allowed,
        maxPricePerHour: Double? = nil
    ) {
        self.providers = providers
        self.regions = regions
        self.spot = spot
        self.maxPricePerHour = maxPricePerHour
    }

    public static let any = PlacementConstraints()
}

/// Whether a workload may run on spot (preemptible) capacity.
public enum SpotPolicy: String, Sendable, Hashable, Codable, CaseIterable {
    case never, allowed, required
}

/// What happens when a workload's process exits or its node is lost.
public enum RestartPolicy: String, Sendable, Hashable, Codable, CaseIterable {
    case never
    case onFailure = "onFailure"
    case always
}

/// What a user asks to run. Validated at the edge by `WorkloadSpecParser`.
public struct WorkloadSpec: Sendable, Hashable, Codable {
    public var name: String
    public var image: String?
    public var command: [String]?
    public var env: [String: String]
    public var workingDir: String?
    public var resources: Resources
    public var placement: PlacementConstraints
    public var restartPolicy: RestartPolicy
    public var labels: [String: String]

    public init(
        name: String, image: String? = nil, command: [String]? = nil, env: [String: String] = [:],
        workingDir: String? = nil, resources: Resources = WorkloadSpec.defaultResources,
        placement: PlacementConstraints = .any, restartPolicy: RestartPolicy = .never, labels: [String: String] = [:]
    ) {
        self.name = name
        self.image = image
        self.command = command
        self.env = env
        self.workingDir = workingDir
        self.resources = resources
        self.placement = placement
        self.restartPolicy = restartPolicy
        self.labels = labels
    }

    /// Resources a workload gets when its spec names none: a quarter core and 256 MiB.
    public static let defaultResources = Resources(cpuMillis: 250, memoryBytes: 256 << 20)

    /// The runtime kind this workload needs: containers for images, processes for bare commands.
    public var runtimeKind: RuntimeKind { image == nil ? .process : .container }
}

/// The kinds of runtime a node can offer.
public enum RuntimeKind: String, Sendable, Hashable, Codable, CaseIterable {
    /// Supervised host processes (`command` without `image`).
    case process
    /// OCI containers through containerd (`image`).
    case container
}

/// The workload lifecycle.
///
/// ```
///   pending ──► scheduled ──► provisioning ──► starting ──► running ──► succeeded | failed
///      ▲            │                              │           │
///      │            └──────────────┬───────────────┴───────────┤
///      │                           ▼                           ▼
///      └──────────── lost | preempted (rescheduled or failed by restartPolicy)
///   any non-final ──► terminating ──► deleted        (DELETE)
/// ```
public enum Phase: String, Sendable, Hashable, Codable, CaseIterable {
    case pending, scheduled, provisioning, starting, running, succeeded, failed, terminating, deleted, lost, preempted

    /// Final phases never change again.
    public var isFinal: Bool { self == .succeeded || self == .failed || self == .deleted }

    /// Phases in which the workload holds capacity on a node.
    public var holdsCapacity: Bool {
        switch self {
        case .scheduled, .provisioning, .starting, .running, .terminating: true
        default: false
        }
    }

    /// Whether the lifecycle allows moving from this phase to `next`.
    public func canTransition(to next: Phase) -> Bool {
        if self == .deleted { return false }
        if isFinal { return next == .deleted }  // DELETE of a finished workload
        switch (self, next) {
        case (_, .terminating): return self != .terminating
        case (.terminating, .deleted): return true
        case (.pending, .deleted): return true
        case (.pending, .scheduled), (.pending, .failed): return true
        case (.scheduled, .provisioning), (.scheduled, .starting), (.scheduled, .pending): return true
        case (.provisioning, .starting), (.provisioning, .pending): return true
        case (.starting, .running): return true
        case (.running, .succeeded): return true
        case (.scheduled, .failed), (.provisioning, .failed), (.starting, .failed), (.running, .failed): return true
        case (.scheduled, .lost), (.provisioning, .lost), (.starting, .lost), (.running, .lost): return true
        case (.scheduled, .preempted), (.provisioning, .preempted), (.starting, .preempted), (.running, .preempted):
            return true
        case (.lost, .pending), (.lost, .failed), (.preempted, .pending), (.preempted, .failed): return true
        case (.starting, .succeeded): return true  // a process can exit before it was seen running
        case (.starting, .pending), (.running, .pending): return true  // restarted by restartPolicy
        default: return false
        }
    }
}

/// Where a workload was placed: a node (existing capacity) or an offer (new capacity).
public struct Placement: Sendable, Hashable, Codable {
    public var provider: String
    public var region: String
    public var machineType: String
    public var spot: Bool
    public var pricePerHour: Double
    public var node: String?

    public init(
        provider: String, region: String, machineType: String, spot: Bool, pricePerHour: Double, node: String?
    ) {
        self.provider = provider
        self.region = region
        self.machineType = machineType
        self.spot = spot
        self.pricePerHour = pricePerHour
        self.node = node
    }
}

/// The provider instance (a machine or a pod) made for a workload placed on an offer.
///
/// Its `name` is stored before the provider is called and is the call's idempotency key, so a weaver that crashes
/// between the call and storing the answer asks again with the same name after restart and gets the same instance.
public struct InstanceRef: Sendable, Hashable, Codable {
    public var name: String
    public var provider: String
    public var region: String
    public var machineType: String
    public var spot: Bool
    /// The provider's ID, once it answered.
    public var id: String?
    /// What the instance costs per hour, as priced when it was asked for. A machine planned for several workloads
    /// costs this once; each of them carries its share in its placement's `pricePerHour`.
    public var pricePerHour: Double?

    public init(
        name: String, provider: String, region: String, machineType: String, spot: Bool, id: String? = nil,
        pricePerHour: Double? = nil
    ) {
        self.name = name
        self.provider = provider
        self.region = region
        self.machineType = machineType
        self.spot = spot
        self.id = id
        self.pricePerHour = pricePerHour
    }
}

/// A workload's observed state.
public struct WorkloadStatus: Sendable, Hashable, Codable {
    public var phase: Phase
    /// Machine-readable reason of the latest transition, e.g. `Scheduled`, `Exited`, `NoFeasibleCandidate`.
    public var reason: String
    public var message: String?
    public var node: String?
    public var placement: Placement?
    public var exitCode: Int32?
    public var signal: Int32?
    /// How many times the workload was started (restarts add one).
    public var attempts: Int
    /// While pending: why each candidate was filtered, as reason -> count.
    public var pendingReasons: [String: Int]?
    public var startedAt: Timestamp?
    public var finishedAt: Timestamp?
    /// The provider instance made for it, when it was placed on an offer.
    public var instance: InstanceRef?

    public init(phase: Phase, reason: String, message: String? = nil) {
        self.phase = phase
        self.reason = reason
        self.message = message
        self.attempts = 0
    }
}

/// A stored workload: what was asked (`spec`) and what is (`status`).
public struct Workload: Sendable, Hashable, Codable {
    public var id: String
    public var spec: WorkloadSpec
    public var status: WorkloadStatus
    public var createdAt: Timestamp
    public var updatedAt: Timestamp
    /// Incremented by every stored change; the store refuses an update whose expected version is stale.
    public var version: Int

    public init(id: String, spec: WorkloadSpec, status: WorkloadStatus, createdAt: Timestamp, version: Int = 1) {
        self.id = id
        self.spec = spec
        self.status = status
        self.createdAt = createdAt
        self.updatedAt = createdAt
        self.version = version
    }

    public var name: String { spec.name }
    public var phase: Phase { status.phase }
}

/// One stored transition of a workload, listed by `GET /v1/workloads/:id/events`.
public struct WorkloadEvent: Sendable, Hashable, Codable {
    public var workloadID: String
    /// Per-workload sequence number, starting at 1.
    public var seq: Int64
    public var at: Timestamp
    public var from: Phase?
    public var to: Phase
    public var reason: String
    public var message: String?

    public init(
        workloadID: String, seq: Int64, at: Timestamp, from: Phase?, to: Phase, reason: String, message: String? = nil
    ) {
        self.workloadID = workloadID
        self.seq = seq
        self.at = at
        self.from = from
        self.to = to
        self.reason = reason
        self.message = message
    }
}
