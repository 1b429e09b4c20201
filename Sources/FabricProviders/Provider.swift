import FabricCore

/// What went wrong in a provider call, in one set every driver maps its own errors into.
public enum ProviderErrorKind: String, Sendable, Hashable, Codable, CaseIterable {
    /// The provider has no machines of that kind there now (AWS InsufficientInstanceCapacity, GCP
    /// ZONE_RESOURCE_POOL_EXHAUSTED, RunPod "no longer any instances available", a Kubernetes pod Unschedulable
    /// past its timeout): mark the offer unavailable for a while and try the next-cheapest.
    case capacityUnavailable
    /// An account limit (instances, vCPUs, GPUs): like capacity, but for the whole provider and region.
    case quotaExceeded
    /// Throttled: retry after `retryAfter` (from Retry-After where given) or with backoff.
    case rateLimited
    /// Credentials missing, wrong or expired; retrying does not help.
    case authFailed
    /// The provider refused the request as malformed or unsupported; retrying does not help.
    case invalidRequest
    /// The instance (or other object) does not exist.
    case notFound
    /// A network failure, timeout or 5xx: retry with backoff.
    case transient
}

/// A provider call that failed: the kind, the provider's own code and message, and where it was raised.
public struct ProviderError: Error, Sendable, Hashable, CustomStringConvertible {
    public var kind: ProviderErrorKind
    public var provider: String
    /// The provider's own error code (`InsufficientInstanceCapacity`, `429`, `Unschedulable` ...), if any.
    public var code: String?
    public var message: String
    /// How long the provider asked to wait (Retry-After), for `rateLimited`.
    public var retryAfter: Duration?
    public var file: String
    public var line: Int

    public init(
        _ kind: ProviderErrorKind, provider: String, code: String? = nil, _ message: String,
        retryAfter: Duration? = nil, file: String = #fileID, line: Int = #line
    ) {
        self.kind = kind
        self.provider = provider
        self.code = code
        self.message = message
        self.retryAfter = retryAfter
        self.file = file
        self.line = line
    }

    /// Whether the same call may succeed if made again later.
    public var isRetryable: Bool { kind == .rateLimited || kind == .transient }

    public var description: String {
        "\(provider): \(kind.rawValue)\(code.map { " (\($0))" } ?? ""): \(message)"
    }
}

/// A machine (or pod) Fabric asks a provider for. `name` is deterministic (derived from the workload and its
/// attempt) and doubles as the idempotency key (ClientToken, requestId, pod name), so a retried or repeated
/// call after a crash finds the instance it already made instead of making a second one.
public struct InstanceRequest: Sendable, Hashable, Codable {
    public var name: String
    public var region: String
    public var machineType: String
    public var spot: Bool
    /// What the workload needs (Kubernetes drivers set pod requests and limits from it).
    public var resources: Resources
    /// The container image to run directly (Kubernetes, RunPod), if the workload has one.
    public var image: String?
    public var command: [String]?
    public var env: [String: String]
    /// Labels/tags put on the instance: Fabric's ownership label and the workload ID among them.
    public var labels: [String: String]
    /// A boot script that starts shuttle and joins it to weaver (VM providers: user-data, startup-script).
    public var bootstrapScript: String?

    public init(
        name: String, region: String, machineType: String, spot: Bool, resources: Resources, image: String? = nil,
        command: [String]? = nil, env: [String: String] = [:], labels: [String: String] = [:],
        bootstrapScript: String? = nil
    ) {
        self.name = name
        self.region = region
        self.machineType = machineType
        self.spot = spot
        self.resources = resources
        self.image = image
        self.command = command
        self.env = env
        self.labels = labels
        self.bootstrapScript = bootstrapScript
    }

    /// The label every instance Fabric makes carries, so `list` can find them (and nothing else).
    public static let ownerLabel = "fabric-owner"
    /// The label carrying the workload ID.
    public static let workloadLabel = "fabric-workload"
}

/// Where an instance is in its life, mapped from each provider's own states.
public enum InstanceState: String, Sendable, Hashable, Codable, CaseIterable {
    /// Asked for, not running yet (AWS pending, GCP PROVISIONING/STAGING, pod Pending, RunPod CREATED).
    case pending
    case running
    /// Being stopped or deleted.
    case stopping
    /// Gone, or ended (a pod that Succeeded or Failed).
    case terminated
    /// Reclaimed by the provider (a spot instance taken back).
    case preempted
    case unknown
}

/// One instance as the provider reports it.
public struct Instance: Sendable, Hashable, Codable {
    /// The provider's own ID (`i-0abc…`, pod name, RunPod pod ID, GCP `zone/instance-name`).
    public var id: String
    /// Fabric's deterministic name for it (`InstanceRequest.name`).
    public var name: String
    public var provider: String
    public var region: String
    public var machineType: String
    public var spot: Bool
    public var state: InstanceState
    /// Why it is in that state, in the provider's words (e.g. a pod's Unschedulable message).
    public var stateReason: String?
    /// An address shuttle or the workload can be reached at, once known.
    public var address: String?
    public var labels: [String: String]
    /// How the workload ended, for providers that run it directly (a pod's container exit code).
    public var exitCode: Int32?
    /// Set while the instance is still `pending` when the provider will not bring it up as asked: the driver judged
    /// it failed (a Kubernetes pod Unschedulable past the driver's pending timeout is `capacityUnavailable`).
    /// The caller treats it as that error from `provision` (delete the instance, skip the offer, place again);
    /// `stateReason` says why. Nil otherwise. `provisioningError` builds the error.
    public var provisioningFailure: ProviderErrorKind?

    public init(
        id: String, name: String, provider: String, region: String, machineType: String, spot: Bool,
        state: InstanceState, stateReason: String? = nil, address: String? = nil, labels: [String: String] = [:],
        exitCode: Int32? = nil, provisioningFailure: ProviderErrorKind? = nil
    ) {
        self.provisioningFailure = provisioningFailure
        self.exitCode = exitCode
        self.id = id
        self.name = name
        self.provider = provider
        self.region = region
        self.machineType = machineType
        self.spot = spot
        self.state = state
        self.stateReason = stateReason
        self.address = address
        self.labels = labels
    }
}

extension Instance {
    /// The error a caller should act on for `provisioningFailure` (nil when it is not set): its kind, the
    /// provider, `stateReason` as the message and code `InstanceFailed`.
    public var provisioningError: ProviderError? {
        guard let kind = provisioningFailure else { return nil }
        return ProviderError(
            kind, provider: provider, code: Self.provisioningFailedCode,
            "instance \(name): \(stateReason ?? kind.rawValue)")
    }

    /// `ProviderError.code` of `provisioningError`.
    public static let provisioningFailedCode = "InstanceFailed"
}

/// Offers as a provider reports them now, or from the catalog, with the time the prices were observed.
public struct OfferList: Sendable, Hashable {
    public var offers: [Offer]
    /// `live` when read from the provider's API, `catalog` when taken from the offer catalog.
    public var origin: String
    public var asOf: Timestamp

    public init(offers: [Offer], origin: String, asOf: Timestamp) {
        self.offers = offers
        self.origin = origin
        self.asOf = asOf
    }
}

/// A cloud or cluster Fabric can run workloads on. Each driver is an actor (it holds tokens, rate-limit state
/// and in-flight calls), maps every failure into `ProviderError`, and makes `provision` idempotent by name.
public protocol Provider: Actor {
    /// The provider's configuration name (`aws`, `gcp`, `runpod`, `coreweave`, `k8s`).
    nonisolated var name: ProviderName { get }
    /// Offers with live prices and availability where the API gives them, else the catalog's.
    func offers() async throws -> OfferList
    /// Asks for an instance; returns the existing one when an instance of that name already exists.
    func provision(_ request: InstanceRequest) async throws -> Instance
    /// The instance with this name, or nil when the provider has none.
    func status(name: String, region: String) async throws -> Instance?
    /// Deletes the instance; an instance that is already gone is not an error.
    func terminate(name: String, region: String) async throws
    /// Every instance Fabric owns there (labelled with `InstanceRequest.ownerLabel`), for reconciling.
    func list() async throws -> [Instance]
}
