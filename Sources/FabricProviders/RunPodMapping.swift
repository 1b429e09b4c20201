// Pure parts of the RunPod driver: the GraphQL documents, machine types, the pod → instance mapping and the error
// classification. Values always travel in `variables`, never inside the query text.
import FabricCore
import Foundation

/// RunPod's GraphQL documents (provider-apis.md §3). Each is constant text; every value is a variable.
public enum RunPodGraphQL {
    /// The fields read of every pod.
    static let podFields = """
        id name desiredStatus costPerHr gpuCount imageName env lastStatusChange \
        machine { gpuDisplayName } runtime { uptimeInSeconds ports { ip isIpPublic privatePort publicPort type } }
        """
    /// On-demand create.
    public static let deployOnDemand = """
        mutation FabricDeployOnDemand($input: PodFindAndDeployOnDemandInput!) { \
        podFindAndDeployOnDemand(input: $input) { \(podFields) } }
        """
    /// Spot (interruptible) create with a bid per GPU.
    public static let rentInterruptable = """
        mutation FabricRentInterruptable($input: PodRentInterruptableInput!) { \
        podRentInterruptable(input: $input) { \(podFields) } }
        """
    /// Terminate (returns a scalar, no selection set).
    public static let terminate = """
        mutation FabricTerminate($input: PodTerminateInput!) { podTerminate(input: $input) }
        """
    /// One pod by ID.
    public static let pod = """
        query FabricPod($input: PodFilter!) { pod(input: $input) { \(podFields) } }
        """
    /// Every pod of the account (no paging).
    public static let myPods = """
        query FabricMyPods { myself { pods { \(podFields) } } }
        """
    /// GPU types with their per-GPU prices.
    public static let gpuTypes = """
        query FabricGpuTypes { gpuTypes { id displayName memoryInGb securePrice communityPrice secureSpotPrice \
        communitySpotPrice } }
        """
}

/// RunPod wire types (GraphQL response subsets).
public enum RunPodWire {
    /// `{"data": …, "errors": […]}`.
    public struct Envelope<Data: Decodable>: Decodable {
        public var data: Data?
        public var errors: [GraphQLError]?
    }

    /// One GraphQL error.
    public struct GraphQLError: Decodable, Sendable, Hashable {
        public var message: String
        public var path: [String]?
        public var extensions: Extensions?

        /// `extensions.code` (`INTERNAL_SERVER_ERROR`, `GRAPHQL_VALIDATION_FAILED` …).
        public struct Extensions: Decodable, Sendable, Hashable {
            public var code: String?
        }

        enum CodingKeys: String, CodingKey { case message, path, extensions }

        /// Reads an error leniently: a missing message, mixed path elements.
        public init(from decoder: Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            message = (try? c.decode(String.self, forKey: .message)) ?? "unknown error"
            // Paths mix field names and list indices.
            if var list = try? c.nestedUnkeyedContainer(forKey: .path) {
                var parts: [String] = []
                while !list.isAtEnd {
                    if let s = try? list.decode(String.self) {
                        parts.append(s)
                    } else if let i = try? list.decode(Int.self) {
                        parts.append(String(i))
                    } else {
                        break
                    }
                }
                path = parts
            }
            extensions = try? c.decode(Extensions.self, forKey: .extensions)
        }

        /// An error with a message and path.
        public init(message: String, path: [String]? = nil) {
            self.message = message
            self.path = path
        }
    }

    /// A pod.
    public struct Pod: Decodable, Sendable, Hashable {
        public var id: String
        public var name: String?
        public var desiredStatus: String?
        public var costPerHr: Double?
        public var gpuCount: Int?
        public var imageName: String?
        /// `KEY=value` strings (objects `{key, value}` are read too).
        public var env: [String]?
        public var machine: Machine?
        public var runtime: Runtime?

        enum CodingKeys: String, CodingKey {
            case id, name, desiredStatus, costPerHr, gpuCount, imageName, env, machine, runtime
        }

        /// Reads a pod leniently: fields of unexpected types are left nil, env as strings or key/value pairs.
        public init(from decoder: Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            id = try c.decode(String.self, forKey: .id)
            name = try c.decodeIfPresent(String.self, forKey: .name)
            desiredStatus = try c.decodeIfPresent(String.self, forKey: .desiredStatus)
            costPerHr = try? c.decodeIfPresent(Double.self, forKey: .costPerHr)
            gpuCount = try? c.decodeIfPresent(Int.self, forKey: .gpuCount)
            imageName = try? c.decodeIfPresent(String.self, forKey: .imageName)
            if let strings = try? c.decodeIfPresent([String].self, forKey: .env) {
                env = strings
            } else if let pairs = try? c.decodeIfPresent([KeyValue].self, forKey: .env) {
                env = pairs.map { "\($0.key)=\($0.value)" }
            }
            machine = try? c.decodeIfPresent(Machine.self, forKey: .machine)
            runtime = try? c.decodeIfPresent(Runtime.self, forKey: .runtime)
        }

        struct KeyValue: Decodable {
            var key: String
            var value: String
        }

        /// The value of `KEY` in `env`.
        public func env(_ key: String) -> String? {
            let prefix = key + "="
            return env?.first { $0.hasPrefix(prefix) }.map { String($0.dropFirst(prefix.count)) }
        }
    }

    /// The host a pod runs on.
    public struct Machine: Decodable, Sendable, Hashable {
        public var gpuDisplayName: String?
    }

    /// Present once the container runs.
    public struct Runtime: Decodable, Sendable, Hashable {
        public var uptimeInSeconds: Int?
        public var ports: [Port]?
    }

    /// A port mapping.
    public struct Port: Decodable, Sendable, Hashable {
        public var ip: String?
        public var isIpPublic: Bool?
        public var privatePort: Int?
        public var publicPort: Int?
        public var type: String?
    }

    /// A GPU type with its prices per GPU-hour.
    public struct GPUType: Decodable, Sendable, Hashable {
        public var id: String
        public var displayName: String?
        public var memoryInGb: Int?
        public var securePrice: Double?
        public var communityPrice: Double?
        public var secureSpotPrice: Double?
        public var communitySpotPrice: Double?
    }

    /// `data` of the create mutations.
    public struct Created: Decodable {
        public var podFindAndDeployOnDemand: Pod?
        public var podRentInterruptable: Pod?
    }

    /// `data` of the pod query.
    public struct PodData: Decodable {
        public var pod: Pod?
    }

    /// `data` of the myself query.
    public struct MyselfData: Decodable {
        public var myself: Myself?

        /// The account.
        public struct Myself: Decodable {
            public var pods: [Pod]?
        }
    }

    /// `data` of the gpuTypes query.
    public struct GPUTypesData: Decodable {
        public var gpuTypes: [GPUType]?
    }
}

/// A RunPod machine type of the catalog: `<GPUs>x_<GPU>_<CLOUD>` (`8x_H100-SXM_SECURE`).
public struct RunPodMachineType: Sendable, Hashable {
    public var gpuCount: Int
    /// The catalog's GPU name (`H100-SXM`, `A100-80GB`, `RTX4090`).
    public var gpu: String
    /// `SECURE` or `COMMUNITY`.
    public var cloud: String

    /// Parses `8x_H100-SXM_SECURE`; nil for anything else (CPU types such as `cpu3c-2-4`).
    public init?(_ text: String) {
        let parts = text.split(separator: "_", omittingEmptySubsequences: false)
        guard parts.count == 3, parts[0].hasSuffix("x"), let count = Int(parts[0].dropLast()), count > 0,
            !parts[1].isEmpty, parts[2] == "SECURE" || parts[2] == "COMMUNITY"
        else { return nil }
        gpuCount = count
        gpu = String(parts[1])
        cloud = String(parts[2])
    }

    /// RunPod `gpuTypeId` per catalog GPU name (SkyPilot's `GPU_NAME_MAP`; the B200, MI300X, L4, L40, L40S, A40,
    /// A5000 and A4000 IDs follow RunPod's display names and are unconfirmed).
    public static let gpuTypeIDs: [String: String] = [
        "H100": "NVIDIA H100 PCIe", "H100-SXM": "NVIDIA H100 80GB HBM3", "H100-NVL": "NVIDIA H100 NVL",
        "H200-SXM": "NVIDIA H200", "A100-80GB": "NVIDIA A100 80GB PCIe", "A100-80GB-SXM": "NVIDIA A100-SXM4-80GB",
        "RTX4090": "NVIDIA GeForce RTX 4090", "RTXA6000": "NVIDIA RTX A6000", "RTXA5000": "NVIDIA RTX A5000",
        "RTXA4000": "NVIDIA RTX A4000", "A40": "NVIDIA A40", "L4": "NVIDIA L4", "L40": "NVIDIA L40",
        "L40S": "NVIDIA L40S", "B200": "NVIDIA B200", "MI300X": "AMD Instinct MI300X OAM",
    ]
}

/// The RunPod driver's pure translations.
public enum RunPodMapping {
    /// Environment variables Fabric sets on its pods, read back by `list` and `status`: the owner label.
    public static let ownerEnv = "FABRIC_OWNER"
    /// The workload ID (the workload label).
    public static let workloadEnv = "FABRIC_WORKLOAD"
    /// The offer's region (RunPod data center).
    public static let regionEnv = "FABRIC_REGION"
    /// The offer's machine type.
    public static let machineTypeEnv = "FABRIC_MACHINE_TYPE"
    /// `true` for a spot (interruptible) pod.
    public static let spotEnv = "FABRIC_SPOT"

    /// Phrases of RunPod's capacity refusals (provider-apis.md §3), matched case-insensitively.
    public static let capacityPhrases = [
        "no longer any instances available", "not enough free gpus", "no instances available",
        "no available instances", "out of stock",
    ]
    /// Phrases of account limits.
    public static let quotaPhrases = ["balance", "insufficient funds", "spend limit", "quota", "too many pods"]
    /// Phrases of credential problems.
    public static let authPhrases = ["unauthorized", "unauthenticated", "api key", "forbidden", "permission"]
    /// Phrases of an object that is not there.
    public static let notFoundPhrases = ["not found", "does not exist", "no pod"]

    /// The instance a pod is.
    ///
    /// | desiredStatus | runtime | state |
    /// |---|---|---|
    /// | CREATED, RESTARTING | – | pending |
    /// | RUNNING | nil (container not up) | pending |
    /// | RUNNING | set | running |
    /// | EXITED | – | preempted for a spot pod (reclaimed), terminated otherwise |
    /// | TERMINATED, DEAD | – | terminated |
    /// | PAUSED | – | stopping |
    public static func instance(from pod: RunPodWire.Pod, provider: String) -> Instance {
        let spot = pod.env(spotEnv) == "true"
        let status = pod.desiredStatus ?? "UNKNOWN"
        let state: InstanceState
        var reason = status
        switch status {
        case "CREATED", "RESTARTING": state = .pending
        case "RUNNING":
            state = pod.runtime == nil ? .pending : .running
            if pod.runtime == nil { reason = "RUNNING, container not up yet" }
        case "EXITED": state = spot ? .preempted : .terminated
        case "TERMINATED", "DEAD": state = .terminated
        case "PAUSED": state = .stopping
        default: state = .unknown
        }
        var labels: [String: String] = [:]
        if let owner = pod.env(ownerEnv) { labels[InstanceRequest.ownerLabel] = owner }
        if let workload = pod.env(workloadEnv) { labels[InstanceRequest.workloadLabel] = workload }
        let publicPort = pod.runtime?.ports?.first { $0.isIpPublic == true && $0.ip != nil }
        return Instance(
            id: pod.id, name: pod.name ?? pod.id, provider: provider, region: pod.env(regionEnv) ?? "",
            machineType: pod.env(machineTypeEnv) ?? "", spot: spot, state: state, stateReason: reason,
            address: publicPort?.ip, labels: labels)
    }

    /// The kind of a GraphQL error, from its message and code.
    public static func kind(of error: RunPodWire.GraphQLError) -> ProviderErrorKind {
        let m = error.message.lowercased()
        func any(_ phrases: [String]) -> Bool { phrases.contains { m.contains($0) } }
        if any(capacityPhrases) { return .capacityUnavailable }
        if any(authPhrases) { return .authFailed }
        if m.contains("rate limit") || m.contains("too many requests") { return .rateLimited }
        if any(quotaPhrases) { return .quotaExceeded }
        if any(notFoundPhrases) { return .notFound }
        switch error.extensions?.code {
        case "INTERNAL_SERVER_ERROR": return .transient
        default: return .invalidRequest
        }
    }

    /// A ProviderError for a response that is not a usable answer: HTTP 401/403 auth, 429 throttled, 5xx
    /// transient, any other 4xx invalid; a body whose `errors[]` says why is classified by `kind(of:)`.
    public static func error(
        _ response: HTTPResponse, errors: [RunPodWire.GraphQLError]?, provider: String, doing what: String,
        now: Timestamp
    ) -> ProviderError {
        let retryAfter = ProviderHTTP.retryAfter(response.header("Retry-After"), now: now)
        let detail = errors?.map(\.message).joined(separator: "; ") ?? ProviderHTTP.quote(response.body)
        let message = "\(what): HTTP \(response.status): \(detail)"
        switch response.status {
        case 401, 403:
            return ProviderError(.authFailed, provider: provider, code: String(response.status), message)
        case 429:
            return ProviderError(
                .rateLimited, provider: provider, code: "429", message, retryAfter: retryAfter)
        case 500...599:
            return ProviderError(
                .transient, provider: provider, code: String(response.status), message, retryAfter: retryAfter)
        default:
            guard let first = errors?.first else {
                return ProviderError(.invalidRequest, provider: provider, code: String(response.status), message)
            }
            let kind = kind(of: first)
            return ProviderError(
                kind, provider: provider, code: first.extensions?.code ?? "GraphQL", message,
                retryAfter: kind == .rateLimited ? retryAfter : nil)
        }
    }

    /// The container command as the `dockerArgs` string: arguments joined by spaces, each with a space, quote or
    /// shell metacharacter single-quoted.
    public static func dockerArgs(_ command: [String]) -> String {
        command.map { arg in
            let plain = !arg.isEmpty && arg.allSatisfy { $0.isLetter || $0.isNumber || "-_./=:,@%+".contains($0) }
            return plain ? arg : "'" + arg.replacingOccurrences(of: "'", with: "'\\''") + "'"
        }.joined(separator: " ")
    }
}
