// Pure translations for the Kubernetes driver: an InstanceRequest into a Pod, a Pod into an Instance, an API error
// into a ProviderError, nodes and their pods into free capacity. No I/O and no clock: `now` is a parameter.
import FabricCore
import Foundation

/// How node labels identify machine types, GPU models and regions on one cluster flavour.
///
/// Machine types of Kubernetes offers are `<GPU label value>-x<GPUs>` (`H100_NVLINK_80GB-x8`,
/// `NVIDIA-H100-80GB-HBM3-x8`) or `<CPU label value>-<vCPUs>` (`amd-epyc-milan-8`); the label value becomes a
/// required node affinity on `gpuKey` or `cpuKey`.
public struct KubernetesNodeLabels: Sendable, Hashable {
    /// The node label whose value names the GPU model or class.
    public var gpuKey: String
    /// The node label whose value names the CPU type, for CPU-only machine types; nil: CPU pods get no CPU
    /// affinity.
    public var cpuKey: String?
    /// The node label holding the region.
    public var regionKey: String
    /// The region nodes without `regionKey` belong to; pods for it get no region affinity.
    public var unlabelledRegion: String

    /// Labels for one cluster flavour; the region label defaults to `topology.kubernetes.io/region`.
    public init(
        gpuKey: String, cpuKey: String? = nil, regionKey: String = KubernetesNodeLabels.regionLabel,
        unlabelledRegion: String = KubernetesNodeLabels.defaultRegion
    ) {
        self.gpuKey = gpuKey
        self.cpuKey = cpuKey
        self.regionKey = regionKey
        self.unlabelledRegion = unlabelledRegion
    }

    /// The well-known region label.
    public static let regionLabel = "topology.kubernetes.io/region"
    /// The region of nodes that carry no region label.
    public static let defaultRegion = "default"
    /// NVIDIA GPU Feature Discovery's product label (`NVIDIA-H100-80GB-HBM3`).
    public static let gpuProductLabel = "nvidia.com/gpu.product"
    /// CoreWeave's GPU class label (`H100_NVLINK_80GB`).
    public static let coreWeaveGPUClassLabel = "gpu.nvidia.com/class"
    /// CoreWeave's CPU type label (`amd-epyc-milan`).
    public static let coreWeaveCPULabel = "node.coreweave.cloud/cpu"

    /// Any cluster with GPU Feature Discovery.
    public static let generic = KubernetesNodeLabels(gpuKey: gpuProductLabel)
    /// CoreWeave: GPU class and CPU type labels, regions such as `LAS1`.
    public static let coreWeave = KubernetesNodeLabels(gpuKey: coreWeaveGPUClassLabel, cpuKey: coreWeaveCPULabel)

    /// The label value and count a machine type names: (`H100_NVLINK_80GB`, 8, gpu) for `H100_NVLINK_80GB-x8`,
    /// (`amd-epyc-milan`, 8, cpu) for `amd-epyc-milan-8`; nil when it follows neither form.
    public static func parse(machineType: String) -> (value: String, count: Int, gpu: Bool)? {
        guard let dash = machineType.lastIndex(of: "-") else { return nil }
        let value = String(machineType[..<dash])
        var tail = machineType[machineType.index(after: dash)...]
        let gpu = tail.first == "x"
        if gpu { tail = tail.dropFirst() }
        guard !value.isEmpty, let count = Int(tail), count > 0 else { return nil }
        return (value, count, gpu)
    }

    /// `<value>-x<gpus>` or `<value>-<vcpus>`.
    public static func machineType(value: String, count: Int, gpu: Bool) -> String {
        gpu ? "\(value)-x\(count)" : "\(value)-\(count)"
    }
}

/// The Kubernetes driver's pure parts.
public enum KubernetesMapping {
    /// The extended resource name of NVIDIA GPUs.
    public static let gpuResource = "nvidia.com/gpu"
    /// The container that runs the workload.
    public static let containerName = "workload"
    /// Annotation keeping the offer's region on the pod.
    public static let regionAnnotation = "fabric.io/region"
    /// Annotation keeping the offer's machine type on the pod.
    public static let machineTypeAnnotation = "fabric.io/machine-type"
    /// The longest pod name (a DNS subdomain).
    public static let podNameLengthMax = 253
    /// The longest label value.
    public static let labelValueLengthMax = 63
    /// Offer memory from node capacity is rounded down to 1/`offerMemoryScale` GiB.
    public static let offerMemoryScale = 10.0
    /// `ProviderError.code` of a pod Unschedulable past the pending timeout.
    public static let unschedulableCode = "Unschedulable"

    // MARK: Request → Pod

    /// The Pod for a request: one container with requests equal to limits (CPU, memory, `nvidia.com/gpu`), a
    /// required node affinity on the machine type's label and the region, the `nvidia.com/gpu` NoSchedule
    /// toleration for GPU pods, the request's labels plus the owner label, and `restartPolicy: Never`.
    /// Throws `invalidRequest` for what no cluster would accept (a bad name or label, no image, spot).
    public static func pod(
        for request: InstanceRequest, namespace: String, labels nodeLabels: KubernetesNodeLabels, owner: String,
        defaultImage: String?, provider: String
    ) throws(ProviderError) -> KubeWire.Pod {
        func invalid(_ message: String) -> ProviderError {
            ProviderError(.invalidRequest, provider: provider, code: "InvalidRequest", message)
        }
        guard isDNSSubdomain(request.name) else {
            throw invalid(
                "pod name \"\(request.name)\" must be lower-case letters, digits, '-' and '.', at most "
                    + "\(podNameLengthMax) characters")
        }
        guard !request.spot else { throw invalid("\(provider) has no spot market; ask for on-demand") }
        guard let image = request.image ?? defaultImage, !image.isEmpty else {
            throw invalid("a pod needs a container image and the request has none")
        }
        var labels = request.labels
        if labels[InstanceRequest.ownerLabel] == nil { labels[InstanceRequest.ownerLabel] = owner }
        for (key, value) in labels where !isLabelValue(value) {
            throw invalid("label \(key)=\"\(value)\" is not a valid label value")
        }

        var quantities: [String: String] = [
            "cpu": Quantity.formatCPU(request.resources.cpuMillis),
            "memory": Quantity.formatMemory(request.resources.memoryBytes),
        ]
        let gpus = request.resources.gpuCount
        if gpus > 0 { quantities[gpuResource] = String(gpus) }
        var container = KubeWire.Container(name: containerName)
        container.image = image
        container.command = request.command
        container.env =
            request.env.isEmpty ? nil : request.env.keys.sorted().map { .init(name: $0, value: request.env[$0]!) }
        container.resources = .init(requests: quantities, limits: quantities)

        var spec = KubeWire.PodSpec(containers: [container])
        spec.restartPolicy = "Never"
        let requirements = nodeRequirements(for: request, labels: nodeLabels)
        if !requirements.isEmpty {
            spec.affinity = .init(
                nodeAffinity: .init(
                    requiredDuringSchedulingIgnoredDuringExecution: .init(nodeSelectorTerms: [
                        .init(matchExpressions: requirements)
                    ])))
        }
        if gpus > 0 {
            spec.tolerations = [.init(key: gpuResource, operator: "Exists", effect: "NoSchedule")]
        }
        let meta = KubeWire.ObjectMeta(
            name: request.name, namespace: namespace, labels: labels,
            annotations: [regionAnnotation: request.region, machineTypeAnnotation: request.machineType])
        return KubeWire.Pod(metadata: meta, spec: spec)
    }

    /// The node requirements of a request: the machine type's GPU (or CPU) label value and the region.
    public static func nodeRequirements(
        for request: InstanceRequest, labels: KubernetesNodeLabels
    ) -> [KubeWire.NodeSelectorRequirement] {
        var result: [KubeWire.NodeSelectorRequirement] = []
        if let type = KubernetesNodeLabels.parse(machineType: request.machineType) {
            if type.gpu {
                result.append(.init(key: labels.gpuKey, operator: "In", values: [type.value]))
            } else if let cpuKey = labels.cpuKey {
                result.append(.init(key: cpuKey, operator: "In", values: [type.value]))
            }
        }
        if request.region != labels.unlabelledRegion, !request.region.isEmpty {
            result.append(.init(key: labels.regionKey, operator: "In", values: [request.region]))
        }
        return result
    }

    // MARK: Pod → Instance

    /// The Instance a pod is, at `now`.
    ///
    /// ```
    ///  Pending ──(PodScheduled=False, Unschedulable)──► pending, stateReason "Unschedulable: <message>"
    ///     │                   └── older than pendingTimeout ──► pending + provisioningFailure = capacityUnavailable
    ///     ├──(waiting: ContainerCreating, ErrImagePull …)──► pending, stateReason = the waiting reason
    ///  Running ──► running          Succeeded ──► terminated, exit code 0
    ///  Failed ──► terminated, exit code and reason of the container
    ///  deletionTimestamp set ──► stopping          Unknown ──► unknown
    /// ```
    public static func instance(
        from pod: KubeWire.Pod, provider: String, now: Timestamp, pendingTimeout: Duration,
        fallbackRegion: String
    ) -> Instance {
        let meta = pod.metadata ?? KubeWire.ObjectMeta()
        let name = meta.name ?? ""
        let status = pod.status
        let container =
            status?.containerStatuses?.first { $0.name == containerName } ?? status?.containerStatuses?.first
        let terminated = container?.state?.terminated
        var state: InstanceState
        var reason: String?
        var failure: ProviderErrorKind?
        var exitCode: Int32?
        switch status?.phase ?? "Pending" {
        case "Pending":
            state = .pending
            if let scheduled = status?.conditions?.first(where: { $0.type == "PodScheduled" }),
                scheduled.status == "False", scheduled.reason == unschedulableCode
            {
                reason = "\(unschedulableCode): \(scheduled.message ?? "no node fits")"
                let since = meta.creationTimestamp.flatMap(RFC3339.parse).map(Timestamp.init)
                if let since, now.since(since) >= pendingTimeout {
                    failure = .capacityUnavailable
                    reason! += " (pending for \(now.since(since)), past the timeout of \(pendingTimeout))"
                }
            } else if let waiting = container?.state?.waiting {
                reason = waiting.reason.map { r in waiting.message.map { "\(r): \($0)" } ?? r }
            } else {
                reason = status?.reason
            }
        case "Running":
            state = .running
            let ready = status?.conditions?.first { $0.type == "Ready" }?.status == "True"
            reason = ready ? "Ready" : "NotReady"
        case "Succeeded":
            state = .terminated
            exitCode = terminated?.exitCode ?? 0
            reason = "Succeeded"
        case "Failed":
            state = .terminated
            exitCode = terminated?.exitCode ?? 1
            reason = "Failed: " + (terminated?.reason ?? status?.reason ?? "Error")
            if let message = terminated?.message ?? status?.message { reason! += ": " + message }
        default:
            state = .unknown
            reason = status?.reason
        }
        if meta.deletionTimestamp != nil, state != .terminated {
            state = .stopping
            reason = "Terminating"
            failure = nil
        }
        let annotations = meta.annotations ?? [:]
        return Instance(
            id: name, name: name, provider: provider, region: annotations[regionAnnotation] ?? fallbackRegion,
            machineType: annotations[machineTypeAnnotation] ?? "", spot: false, state: state, stateReason: reason,
            address: status?.podIP, labels: meta.labels ?? [:], exitCode: exitCode, provisioningFailure: failure)
    }

    // MARK: Errors

    /// A ProviderError for a non-2xx response, from its `Status` body (reason, message) and status code.
    ///
    /// | HTTP | reason | kind |
    /// |---|---|---|
    /// | 400, 422 | BadRequest, Invalid | invalidRequest |
    /// | 401 | Unauthorized | authFailed |
    /// | 403 | Forbidden "exceeded quota" | quotaExceeded |
    /// | 403 | Forbidden (RBAC) | authFailed |
    /// | 404 | NotFound | notFound |
    /// | 409 | AlreadyExists | invalidRequest (provision reads it before this) |
    /// | 409 | Conflict | transient |
    /// | 410 | Expired | transient (a list restarts before this) |
    /// | 429 | TooManyRequests | rateLimited, Retry-After |
    /// | 5xx | InternalError, ServiceUnavailable … | transient (Retry-After kept) |
    public static func error(
        _ response: HTTPResponse, provider: String, doing what: String, now: Timestamp
    ) -> ProviderError {
        let status = try? JSONDecoder().decode(KubeWire.Status.self, from: response.body)
        let reason = status?.reason
        let detail = status?.message ?? ProviderHTTP.quote(response.body)
        let message = "\(what): HTTP \(response.status)\(reason.map { " \($0)" } ?? ""): \(detail)"
        let retryAfter =
            ProviderHTTP.retryAfter(response.header("Retry-After"), now: now)
            ?? status?.details?.retryAfterSeconds.map { min(.seconds($0), ProviderHTTP.retryAfterMax) }
        let code = reason ?? String(response.status)
        let kind: ProviderErrorKind
        switch response.status {
        case 400, 422: kind = .invalidRequest
        case 401: kind = .authFailed
        case 403: kind = isQuotaMessage(detail) ? .quotaExceeded : .authFailed
        case 404: kind = .notFound
        case 409: kind = reason == "AlreadyExists" ? .invalidRequest : .transient
        case 410: kind = .transient
        case 429: kind = .rateLimited
        case 500...599: kind = .transient
        default: kind = .invalidRequest
        }
        return ProviderError(
            kind, provider: provider, code: code, message,
            retryAfter: kind == .rateLimited || kind == .transient ? retryAfter : nil)
    }

    /// Whether a 403 message is a ResourceQuota refusal (`exceeded quota: …`, `forbidden: exceeded quota`).
    public static func isQuotaMessage(_ message: String) -> Bool {
        message.range(of: "exceeded quota", options: .caseInsensitive) != nil
    }

    // MARK: Nodes → capacity

    /// Each node's allocatable and requested resources and what is left, with its readiness.
    /// `pods` are the non-terminal pods of the whole cluster; a pod counts on the node it is bound to.
    public static func capacity(
        nodes: [KubeWire.Node], pods: [KubeWire.Pod], labels: KubernetesNodeLabels
    ) -> [KubernetesNodeCapacity] {
        var requested: [String: Resources] = [:]
        for pod in pods {
            guard let node = pod.spec?.nodeName, !["Succeeded", "Failed"].contains(pod.status?.phase ?? "") else {
                continue
            }
            let r = requests(of: pod)
            var sum = requested[node] ?? .zero
            sum.cpuMillis += r.cpuMillis
            sum.memoryBytes += r.memoryBytes
            let gpus = sum.gpuCount + r.gpuCount
            sum.gpu = gpus > 0 ? GPUSpec(count: gpus) : nil
            requested[node] = sum
        }
        return nodes.compactMap { node in
            guard let name = node.metadata?.name else { return nil }
            let nodeLabels = node.metadata?.labels ?? [:]
            let alloc = node.status?.allocatable ?? [:]
            let gpuModel = nodeLabels[labels.gpuKey]
            let gpuCount = Int(alloc[gpuResource].flatMap(KubeQuantity.integer) ?? 0)
            let allocatable = Resources(
                cpuMillis: alloc["cpu"].flatMap(KubeQuantity.cpuMillis) ?? 0,
                memoryBytes: alloc["memory"].flatMap(KubeQuantity.integer) ?? 0,
                gpu: gpuCount > 0 ? GPUSpec(count: gpuCount, model: gpuModel) : nil)
            let used = requested[name] ?? .zero
            let freeGPUs = max(0, gpuCount - used.gpuCount)
            let free = Resources(
                cpuMillis: max(0, allocatable.cpuMillis - used.cpuMillis),
                memoryBytes: max(0, allocatable.memoryBytes - used.memoryBytes),
                gpu: freeGPUs > 0 ? GPUSpec(count: freeGPUs, model: gpuModel) : nil)
            let ready = node.status?.conditions?.first { $0.type == "Ready" }?.status == "True"
            let blockingTaints = (node.spec?.taints ?? []).filter {
                ($0.effect == "NoSchedule" || $0.effect == "NoExecute") && $0.key != gpuResource
            }
            let schedulable = node.spec?.unschedulable != true && blockingTaints.isEmpty
            return KubernetesNodeCapacity(
                name: name, region: nodeLabels[labels.regionKey] ?? labels.unlabelledRegion, labels: nodeLabels,
                ready: ready, schedulable: schedulable, gpuLabel: gpuModel,
                cpuLabel: labels.cpuKey.flatMap { nodeLabels[$0] }, allocatable: allocatable, requested: used,
                free: free)
        }
    }

    /// What a pod asks for: the sum of its containers' requests, or its largest init container where that is
    /// more (the scheduler's rule).
    public static func requests(of pod: KubeWire.Pod) -> Resources {
        func sum(_ containers: [KubeWire.Container]) -> (Int64, Int64, Int) {
            var cpu: Int64 = 0
            var memory: Int64 = 0
            var gpu = 0
            for c in containers {
                // A resource without a request is requested at its limit (the API server's default).
                let r = (c.resources?.limits ?? [:]).merging(c.resources?.requests ?? [:]) { _, request in request }
                cpu += r["cpu"].flatMap(KubeQuantity.cpuMillis) ?? 0
                memory += r["memory"].flatMap(KubeQuantity.integer) ?? 0
                gpu += Int(r[gpuResource].flatMap(KubeQuantity.integer) ?? 0)
            }
            return (cpu, memory, gpu)
        }
        var (cpu, memory, gpu) = sum(pod.spec?.containers ?? [])
        for c in pod.spec?.initContainers ?? [] {
            let (ic, im, ig) = sum([c])
            cpu = max(cpu, ic)
            memory = max(memory, im)
            gpu = max(gpu, ig)
        }
        return Resources(cpuMillis: cpu, memoryBytes: memory, gpu: gpu > 0 ? GPUSpec(count: gpu) : nil)
    }

    /// Offers from node capacity: one per region and machine type among ready, schedulable nodes with room, sized
    /// to the largest free slice of any such node, priced per GPU-hour and vCPU-hour, `source` `live`.
    public static func offers(
        from nodes: [KubernetesNodeCapacity], provider: String, pricing: KubernetesNodePricing, asOf: String
    ) -> [Offer] {
        var best: [String: Offer] = [:]
        for node in nodes where node.ready && node.schedulable {
            let vcpus = Int(node.free.cpuMillis / 1000)
            let memoryGiB =
                (Double(node.free.memoryBytes) / 0x1p30 * offerMemoryScale).rounded(.down) / offerMemoryScale
            guard vcpus >= 1, memoryGiB > 0 else { continue }
            let allocGPUs = node.allocatable.gpuCount
            let machineType: String
            if allocGPUs > 0, let gpuLabel = node.gpuLabel {
                machineType = KubernetesNodeLabels.machineType(value: gpuLabel, count: allocGPUs, gpu: true)
            } else {
                let cpuType = node.cpuLabel ?? KubernetesNodePricing.cpuMachinePrefix
                machineType = KubernetesNodeLabels.machineType(
                    value: cpuType, count: Int(node.allocatable.cpuMillis / 1000), gpu: false)
            }
            let gpus = allocGPUs > 0 ? node.free.gpuCount : 0
            let model = gpus > 0 ? node.gpuLabel.map(GPUModel.canonical) : nil
            let price =
                Double(gpus) * pricing.perGPUHour + Double(vcpus) * pricing.perVCPUHour + memoryGiB
                * pricing.perGiBHour
            let offer = Offer(
                provider: provider, region: node.region, machineType: machineType, vcpus: vcpus,
                memoryGiB: memoryGiB, gpuModel: model, gpuCount: gpus,
                gpuMemoryGiB: model.flatMap { GPUModel.memoryGiB[$0] }, onDemandPerHour: price, spotPerHour: nil,
                source: "live", asOf: asOf)
            let key = "\(node.region)/\(machineType)"
            if let current = best[key], (current.gpuCount, current.vcpus) >= (offer.gpuCount, offer.vcpus) { continue }
            best[key] = offer
        }
        return best.keys.sorted().map { best[$0]! }
    }

    // MARK: Names

    /// A DNS-1123 subdomain: lower-case alphanumerics, '-' and '.', starting and ending alphanumeric.
    public static func isDNSSubdomain(_ s: String) -> Bool {
        let u = Array(s.utf8)
        guard !u.isEmpty, u.count <= podNameLengthMax else { return false }
        func alnum(_ c: UInt8) -> Bool { (97...122).contains(c) || (48...57).contains(c) }
        guard alnum(u.first!), alnum(u.last!) else { return false }
        return u.allSatisfy { alnum($0) || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: ".") }
    }

    /// A label value: empty, or up to 63 alphanumerics, '-', '_' and '.', starting and ending alphanumeric.
    public static func isLabelValue(_ s: String) -> Bool {
        let u = Array(s.utf8)
        guard u.count <= labelValueLengthMax else { return false }
        guard !u.isEmpty else { return true }
        func alnum(_ c: UInt8) -> Bool { (97...122).contains(c) || (65...90).contains(c) || (48...57).contains(c) }
        guard alnum(u.first!), alnum(u.last!) else { return false }
        return u.allSatisfy {
            alnum($0) || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: "_") || $0 == UInt8(ascii: ".")
        }
    }
}

/// One node's capacity as the Kubernetes driver reads it.
public struct KubernetesNodeCapacity: Sendable, Hashable {
    public var name: String
    /// The node's region label, or the configured unlabelled region.
    public var region: String
    public var labels: [String: String]
    /// The `Ready` condition is True.
    public var ready: Bool
    /// Not cordoned, and no NoSchedule/NoExecute taint other than the tolerated `nvidia.com/gpu` one.
    public var schedulable: Bool
    /// The value of the GPU label, if the node has one.
    public var gpuLabel: String?
    /// The value of the CPU type label, if configured and present.
    public var cpuLabel: String?
    /// `status.allocatable`.
    public var allocatable: Resources
    /// The requests of the node's non-terminal pods.
    public var requested: Resources
    /// `allocatable - requested`, never below zero.
    public var free: Resources

    /// One node's figures.
    public init(
        name: String, region: String, labels: [String: String], ready: Bool, schedulable: Bool, gpuLabel: String?,
        cpuLabel: String?, allocatable: Resources, requested: Resources, free: Resources
    ) {
        self.name = name
        self.region = region
        self.labels = labels
        self.ready = ready
        self.schedulable = schedulable
        self.gpuLabel = gpuLabel
        self.cpuLabel = cpuLabel
        self.allocatable = allocatable
        self.requested = requested
        self.free = free
    }
}

/// What capacity on a cluster costs Fabric, for offers built from nodes (zero: already paid for).
public struct KubernetesNodePricing: Sendable, Hashable {
    public var perGPUHour: Double
    public var perVCPUHour: Double
    public var perGiBHour: Double

    /// Prices per hour; all zero by default.
    public init(perGPUHour: Double = 0, perVCPUHour: Double = 0, perGiBHour: Double = 0) {
        self.perGPUHour = perGPUHour
        self.perVCPUHour = perVCPUHour
        self.perGiBHour = perGiBHour
    }

    /// The label value of CPU machine types on clusters without a CPU type label (`cpu-16`).
    public static let cpuMachinePrefix = "cpu"
}
