// The core/v1 objects the Kubernetes driver sends and reads, as Codable subsets: only the fields Fabric uses, all
// optional when read (unknown fields are ignored), nil fields left out when written.
import FabricCore
import Foundation

/// Kubernetes wire types (core/v1 subsets).
public enum KubeWire {
    /// `metadata` of an object.
    public struct ObjectMeta: Codable, Sendable, Hashable {
        public var name: String?
        public var namespace: String?
        public var uid: String?
        public var labels: [String: String]?
        public var annotations: [String: String]?
        public var creationTimestamp: String?
        public var deletionTimestamp: String?
        public var resourceVersion: String?

        /// Metadata for a new object.
        public init(
            name: String? = nil, namespace: String? = nil, labels: [String: String]? = nil,
            annotations: [String: String]? = nil
        ) {
            self.name = name
            self.namespace = namespace
            self.labels = labels
            self.annotations = annotations
        }
    }

    /// A Pod.
    public struct Pod: Codable, Sendable, Hashable {
        public var apiVersion: String?
        public var kind: String?
        public var metadata: ObjectMeta?
        public var spec: PodSpec?
        public var status: PodStatus?

        /// A new `v1` Pod.
        public init(metadata: ObjectMeta, spec: PodSpec) {
            apiVersion = "v1"
            kind = "Pod"
            self.metadata = metadata
            self.spec = spec
        }
    }

    /// `spec` of a Pod.
    public struct PodSpec: Codable, Sendable, Hashable {
        public var restartPolicy: String?
        public var containers: [Container]?
        public var initContainers: [Container]?
        public var nodeName: String?
        public var nodeSelector: [String: String]?
        public var affinity: Affinity?
        public var tolerations: [Toleration]?
        public var terminationGracePeriodSeconds: Int?

        /// A spec with these containers.
        public init(containers: [Container]) { self.containers = containers }
    }

    /// One container of a pod.
    public struct Container: Codable, Sendable, Hashable {
        public var name: String
        public var image: String?
        public var command: [String]?
        public var env: [EnvVar]?
        public var resources: ResourceRequirements?

        /// A container with only its name set.
        public init(name: String) { self.name = name }
    }

    /// An environment variable with a literal value.
    public struct EnvVar: Codable, Sendable, Hashable {
        public var name: String
        public var value: String?

        /// `name=value`.
        public init(name: String, value: String) {
            self.name = name
            self.value = value
        }
    }

    /// Requests and limits, as quantity strings by resource name (`cpu`, `memory`, `nvidia.com/gpu`).
    public struct ResourceRequirements: Codable, Sendable, Hashable {
        public var requests: [String: String]?
        public var limits: [String: String]?

        /// Requests and limits by resource name.
        public init(requests: [String: String]?, limits: [String: String]?) {
            self.requests = requests
            self.limits = limits
        }
    }

    /// `spec.affinity` (only node affinity).
    public struct Affinity: Codable, Sendable, Hashable {
        public var nodeAffinity: NodeAffinity?
    }

    /// Required and preferred node selector terms.
    public struct NodeAffinity: Codable, Sendable, Hashable {
        public var requiredDuringSchedulingIgnoredDuringExecution: NodeSelector?
        public var preferredDuringSchedulingIgnoredDuringExecution: [PreferredSchedulingTerm]?
    }

    /// Terms ORed together; a node must match one.
    public struct NodeSelector: Codable, Sendable, Hashable {
        public var nodeSelectorTerms: [NodeSelectorTerm]
    }

    /// Requirements ANDed together.
    public struct NodeSelectorTerm: Codable, Sendable, Hashable {
        public var matchExpressions: [NodeSelectorRequirement]?
    }

    /// A weighted preferred term.
    public struct PreferredSchedulingTerm: Codable, Sendable, Hashable {
        public var weight: Int
        public var preference: NodeSelectorTerm
    }

    /// `key operator values` (operators `In`, `NotIn`, `Exists`, `DoesNotExist`).
    public struct NodeSelectorRequirement: Codable, Sendable, Hashable {
        public var key: String
        public var `operator`: String
        public var values: [String]?

        /// A requirement on a node label.
        public init(key: String, operator op: String, values: [String]?) {
            self.key = key
            self.operator = op
            self.values = values
        }
    }

    /// A pod's toleration of a node taint.
    public struct Toleration: Codable, Sendable, Hashable {
        public var key: String?
        public var `operator`: String?
        public var value: String?
        public var effect: String?

        /// A toleration (`operator` `Exists` or `Equal`).
        public init(key: String?, operator op: String?, value: String? = nil, effect: String?) {
            self.key = key
            self.operator = op
            self.value = value
            self.effect = effect
        }
    }

    /// `status` of a Pod.
    public struct PodStatus: Codable, Sendable, Hashable {
        public var phase: String?
        public var reason: String?
        public var message: String?
        public var podIP: String?
        public var conditions: [Condition]?
        public var containerStatuses: [ContainerStatus]?
    }

    /// A pod or node condition (`PodScheduled`, `Ready`).
    public struct Condition: Codable, Sendable, Hashable {
        public var type: String
        public var status: String
        public var reason: String?
        public var message: String?
        public var lastTransitionTime: String?
    }

    /// One container's state.
    public struct ContainerStatus: Codable, Sendable, Hashable {
        public var name: String?
        public var ready: Bool?
        public var restartCount: Int?
        public var state: ContainerState?
    }

    /// Exactly one of waiting, running or terminated is set.
    public struct ContainerState: Codable, Sendable, Hashable {
        public var waiting: Waiting?
        public var running: Running?
        public var terminated: Terminated?

        /// A container not running yet.
        public struct Waiting: Codable, Sendable, Hashable {
            public var reason: String?
            public var message: String?
        }

        /// A running container.
        public struct Running: Codable, Sendable, Hashable {
            public var startedAt: String?
        }

        /// A container that ended.
        public struct Terminated: Codable, Sendable, Hashable {
            public var exitCode: Int32?
            public var reason: String?
            public var message: String?
        }
    }

    /// A Node.
    public struct Node: Codable, Sendable, Hashable {
        public var metadata: ObjectMeta?
        public var spec: NodeSpec?
        public var status: NodeStatus?
    }

    /// `spec` of a Node.
    public struct NodeSpec: Codable, Sendable, Hashable {
        public var unschedulable: Bool?
        public var taints: [Taint]?
    }

    /// A node taint.
    public struct Taint: Codable, Sendable, Hashable {
        public var key: String
        public var value: String?
        public var effect: String
    }

    /// `status` of a Node.
    public struct NodeStatus: Codable, Sendable, Hashable {
        public var allocatable: [String: String]?
        public var capacity: [String: String]?
        public var conditions: [Condition]?
    }

    /// `metadata` of a list: the continue token of the next page.
    public struct ListMeta: Codable, Sendable, Hashable {
        public var resourceVersion: String?
        public var `continue`: String?
    }

    /// A PodList or NodeList.
    public struct List<Item: Codable & Sendable & Hashable>: Codable, Sendable, Hashable {
        public var kind: String?
        public var metadata: ListMeta?
        public var items: [Item]?
    }

    /// The error body every API error carries (`kind: Status`).
    public struct Status: Codable, Sendable, Hashable {
        public var kind: String?
        public var status: String?
        public var message: String?
        public var reason: String?
        public var code: Int?
        public var details: Details?

        /// What the error concerns, and for throttling how long to wait.
        public struct Details: Codable, Sendable, Hashable {
            public var name: String?
            public var kind: String?
            public var retryAfterSeconds: Int?
        }
    }

    /// DELETE options.
    public struct DeleteOptions: Codable, Sendable, Hashable {
        public var kind = "DeleteOptions"
        public var apiVersion = "v1"
        public var gracePeriodSeconds: Int
        public var propagationPolicy: String?
    }
}

/// Kubernetes resource quantities (`"96"`, `"500m"`, `"1056763860Ki"`, `"64Gi"`, `"1e3"`, `"0"`), leniently:
/// what the API server sends is already valid.
public enum KubeQuantity {
    static let suffixes: [(String, Double)] = [
        ("Ki", 0x1p10), ("Mi", 0x1p20), ("Gi", 0x1p30), ("Ti", 0x1p40), ("Pi", 0x1p50), ("Ei", 0x1p60),
        ("n", 1e-9), ("u", 1e-6), ("m", 1e-3), ("k", 1e3), ("M", 1e6), ("G", 1e9), ("T", 1e12), ("P", 1e15),
        ("E", 1e18),
    ]

    /// The quantity as a number of base units (cores, bytes, devices), or nil when it does not parse.
    public static func value(_ text: String) -> Double? {
        let s = text.trimmingCharacters(in: .whitespaces)
        guard !s.isEmpty else { return nil }
        for (suffix, factor) in suffixes where s.hasSuffix(suffix) {
            guard let number = Double(s.dropLast(suffix.count)) else { return nil }
            return number * factor
        }
        return Double(s)  // plain or with an exponent (`1e3`)
    }

    /// CPU in millicores (rounded up, as Kubernetes does), or nil.
    public static func cpuMillis(_ text: String) -> Int64? {
        value(text).map { Int64(($0 * 1000).rounded(.up)) }
    }

    /// Bytes or a device count (rounded up), or nil.
    public static func integer(_ text: String) -> Int64? {
        value(text).map { Int64($0.rounded(.up)) }
    }
}
