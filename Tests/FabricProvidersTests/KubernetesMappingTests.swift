// The Kubernetes driver's pure parts: pod manifests, pod → instance, error mapping, quantities, capacity.
import FabricCore
import Foundation
import Testing

@testable import FabricProviders

/// A request with the labels weaver puts on every instance.
func request(
    _ name: String = "fabric-wl-1-2", region: String = "LAS1", machineType: String = "H100_NVLINK_80GB-x8",
    cpu: Int64 = 8000, memoryGiB: Int64 = 64, gpus: Int = 1, image: String? = "ghcr.io/acme/train:1", spot: Bool = false
) -> InstanceRequest {
    InstanceRequest(
        name: name, region: region, machineType: machineType, spot: spot,
        resources: Resources(
            cpuMillis: cpu, memoryBytes: memoryGiB << 30, gpu: gpus > 0 ? GPUSpec(count: gpus, model: "H100") : nil),
        image: image, command: ["python", "train.py"], env: ["B": "2", "A": "1"],
        labels: [InstanceRequest.ownerLabel: "fabric", InstanceRequest.workloadLabel: "wl-1"])
}

/// A fixed `now` for pure mappings.
let testNow = Timestamp(millisecondsSinceEpoch: 1_800_000_000_000)

@Suite("Kubernetes mapping")
struct KubernetesMappingTests {
    @Test("a GPU request becomes a pod with requests = limits, class and region affinity, the GPU toleration")
    func gpuPod() throws {
        let pod = try KubernetesMapping.pod(
            for: request(gpus: 2), namespace: "ml", labels: .coreWeave, owner: "fabric", defaultImage: nil,
            provider: "coreweave")
        let json = try #require(FakeJSON.object(try JSONEncoder().encode(pod)))
        let meta = try #require(json["metadata"] as? [String: Any])
        #expect(meta["name"] as? String == "fabric-wl-1-2")
        #expect(meta["namespace"] as? String == "ml")
        #expect(meta["labels"] as? [String: String] == ["fabric-owner": "fabric", "fabric-workload": "wl-1"])
        #expect(
            meta["annotations"] as? [String: String] == [
                "fabric.io/region": "LAS1", "fabric.io/machine-type": "H100_NVLINK_80GB-x8",
            ])
        let spec = try #require(json["spec"] as? [String: Any])
        #expect(spec["restartPolicy"] as? String == "Never")
        let container = try #require((spec["containers"] as? [[String: Any]])?.first)
        #expect(container["image"] as? String == "ghcr.io/acme/train:1")
        #expect(container["command"] as? [String] == ["python", "train.py"])
        #expect(
            container["env"] as? [[String: String]] == [["name": "A", "value": "1"], ["name": "B", "value": "2"]])
        let resources = try #require(container["resources"] as? [String: [String: String]])
        #expect(resources["requests"] == ["cpu": "8", "memory": "64Gi", "nvidia.com/gpu": "2"])
        #expect(resources["limits"] == resources["requests"])
        let affinity = try #require(
            ((spec["affinity"] as? [String: Any])?["nodeAffinity"] as? [String: Any])?[
                "requiredDuringSchedulingIgnoredDuringExecution"] as? [String: Any])
        let terms = try #require(affinity["nodeSelectorTerms"] as? [[String: Any]])
        #expect(terms.count == 1)
        let expressions = try #require(terms[0]["matchExpressions"] as? [[String: Any]])
        #expect(expressions.map { $0["key"] as? String } == ["gpu.nvidia.com/class", "topology.kubernetes.io/region"])
        #expect(expressions.map { $0["operator"] as? String } == ["In", "In"])
        #expect(expressions.map { $0["values"] as? [String] } == [["H100_NVLINK_80GB"], ["LAS1"]])
        #expect(
            spec["tolerations"] as? [[String: String]] == [
                ["key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"]
            ])
    }

    @Test("a CPU machine type pins the CPU label; no GPU toleration; generic clusters skip the unlabelled region")
    func cpuPod() throws {
        let pod = try KubernetesMapping.pod(
            for: request(region: "ORD1", machineType: "amd-epyc-rome-6", cpu: 500, memoryGiB: 1, gpus: 0),
            namespace: "default", labels: .coreWeave, owner: "fabric", defaultImage: nil, provider: "coreweave")
        let container = try #require(pod.spec?.containers?.first)
        #expect(container.resources?.limits == ["cpu": "500m", "memory": "1Gi"])
        #expect(pod.spec?.tolerations == nil)
        let expressions = pod.spec?.affinity?.nodeAffinity?.requiredDuringSchedulingIgnoredDuringExecution?
            .nodeSelectorTerms.first?.matchExpressions
        #expect(expressions?.map(\.key) == ["node.coreweave.cloud/cpu", "topology.kubernetes.io/region"])
        #expect(expressions?.first?.values == ["amd-epyc-rome"])

        let generic = try KubernetesMapping.pod(
            for: request(region: "default", machineType: "NVIDIA-H100-80GB-HBM3-x8"), namespace: "default",
            labels: .generic, owner: "fabric", defaultImage: nil, provider: "k8s")
        let g = generic.spec?.affinity?.nodeAffinity?.requiredDuringSchedulingIgnoredDuringExecution?
            .nodeSelectorTerms.first?.matchExpressions
        #expect(g == [.init(key: "nvidia.com/gpu.product", operator: "In", values: ["NVIDIA-H100-80GB-HBM3"])])
    }

    @Test(
        "requests no cluster would take are refused before any call",
        arguments: [
            (request("Fabric_WL"), "pod name"),
            (request(spot: true), "no spot market"),
            (request(image: nil), "container image"),
            (
                InstanceRequest(
                    name: "ok", region: "LAS1", machineType: "x", spot: false,
                    resources: Resources(cpuMillis: 1000, memoryBytes: 1 << 30),
                    image: "i", labels: ["team": "not a label value!"]), "label team"
            ),
        ])
    func refused(r: InstanceRequest, expected: String) {
        #expect {
            try KubernetesMapping.pod(
                for: r, namespace: "default", labels: .generic, owner: "fabric", defaultImage: nil, provider: "k8s")
        } throws: { error in
            (error as? ProviderError)?.kind == .invalidRequest
                && (error as? ProviderError)?.message.contains(expected) == true
        }
    }

    @Test(
        "API errors map to one kind each",
        arguments: [
            (400, "BadRequest", "bad", nil, ProviderErrorKind.invalidRequest, nil as Int64?),
            (401, "Unauthorized", "Unauthorized", nil, .authFailed, nil),
            (403, "Forbidden", "pods is forbidden: User \"x\" cannot create resource \"pods\"", nil, .authFailed, nil),
            (
                403, "Forbidden",
                "pods \"p\" is forbidden: exceeded quota: gpu, requested: requests.nvidia.com/gpu=1, used: "
                    + "requests.nvidia.com/gpu=8, limited: requests.nvidia.com/gpu=8", nil, .quotaExceeded, nil
            ),
            (404, "NotFound", "pods \"p\" not found", nil, .notFound, nil),
            (409, "AlreadyExists", "pods \"p\" already exists", nil, .invalidRequest, nil),
            (409, "Conflict", "the object has been modified", nil, .transient, nil),
            (410, "Expired", "too old", nil, .transient, nil),
            (422, "Invalid", "Pod \"p\" is invalid", nil, .invalidRequest, nil),
            (429, "TooManyRequests", "storage is (re)initializing", "7", .rateLimited, 7),
            (500, "InternalError", "etcdserver: request timed out", nil, .transient, nil),
            (503, "ServiceUnavailable", "the server is currently unable to handle the request", "3", .transient, 3),
        ])
    func errors(
        status: Int, reason: String, message: String, retryAfter: String?, kind: ProviderErrorKind, wait: Int64?
    ) {
        let body = FakeKubernetes.statusBody(status, reason, message)
        let response = HTTPResponse(
            status: status, headers: retryAfter.map { ["retry-after": $0] } ?? [:], body: Data(body.utf8))
        let e = KubernetesMapping.error(response, provider: "k8s", doing: "create pod p", now: testNow)
        #expect(e.kind == kind)
        #expect(e.code == reason)
        #expect(e.retryAfter == wait.map { .seconds($0) })
        #expect(e.message.contains(message))
        #expect(e.message.hasPrefix("create pod p: HTTP \(status) \(reason)"))
    }

    @Test("a 429 without Retry-After takes details.retryAfterSeconds; a non-Status body is quoted")
    func retryAfterInDetails() {
        let body = FakeKubernetes.statusBody(429, "TooManyRequests", "slow down", retryAfterSeconds: 4)
        let e = KubernetesMapping.error(
            HTTPResponse(status: 429, body: Data(body.utf8)), provider: "k8s", doing: "x", now: testNow)
        #expect(e.retryAfter == .seconds(4))
        let html = KubernetesMapping.error(
            HTTPResponse(status: 502, body: Data("<html>Bad Gateway</html>".utf8)), provider: "k8s", doing: "x",
            now: testNow)
        #expect(html.kind == .transient)
        #expect(html.code == "502")
        #expect(html.message.contains("<html>Bad Gateway</html>"))
    }

    @Test(
        "quantities",
        arguments: [
            ("96", 96_000 as Int64?, 96 as Int64?), ("500m", 500, 1), ("0", 0, 0),
            ("1056763860Ki", nil, 1_082_126_192_640),
            ("64Gi", nil, 68_719_476_736), ("1e3", 1_000_000, 1000), ("2k", nil, 2000), ("junk", nil, nil),
        ])
    func quantities(text: String, millis: Int64?, integer: Int64?) {
        if let millis { #expect(KubeQuantity.cpuMillis(text) == millis) }
        #expect(KubeQuantity.integer(text) == integer)
    }

    @Test(
        "machine types",
        arguments: [
            ("H100_NVLINK_80GB-x8", "H100_NVLINK_80GB", 8, true),
            ("NVIDIA-A100-SXM4-80GB-x1", "NVIDIA-A100-SXM4-80GB", 1, true),
            ("amd-epyc-milan-32", "amd-epyc-milan", 32, false), ("cpu-16", "cpu", 16, false),
        ])
    func machineTypes(type: String, value: String, count: Int, gpu: Bool) throws {
        let parsed = try #require(KubernetesNodeLabels.parse(machineType: type))
        #expect(parsed.value == value && parsed.count == count && parsed.gpu == gpu)
        #expect(KubernetesNodeLabels.machineType(value: value, count: count, gpu: gpu) == type)
        #expect(KubernetesNodeLabels.parse(machineType: "p5.48xlarge") == nil)
    }

    @Test("pod phases and conditions map to instance states; Unschedulable fails only past the timeout")
    func phases() throws {
        let now = Timestamp(millisecondsSinceEpoch: 1_800_000_600_000)
        func pod(_ phase: String, created: String = "2027-01-15T08:00:00Z", extra: String = "") throws -> KubeWire.Pod {
            let json = """
                {"metadata":{"name":"p","creationTimestamp":"\(created)","labels":{"fabric-owner":"fabric"},
                 "annotations":{"fabric.io/region":"LAS1","fabric.io/machine-type":"A40-x1"}},
                 "status":{"phase":"\(phase)",\(extra)"podIP":"10.1.2.3"}}
                """
            return try JSONDecoder().decode(KubeWire.Pod.self, from: Data(json.utf8))
        }
        func map(_ p: KubeWire.Pod) -> Instance {
            KubernetesMapping.instance(
                from: p, provider: "k8s", now: now, pendingTimeout: .seconds(300), fallbackRegion: "d")
        }
        let unschedulable = """
            "conditions":[{"type":"PodScheduled","status":"False","reason":"Unschedulable",
            "message":"0/3 nodes are available: 3 Insufficient nvidia.com/gpu."}],
            """
        // 2027-01-15T08:00:00Z is now − 10 s; 07:50:00Z is now − 610 s.
        let fresh = map(
            try pod("Pending", created: RFC3339.format(now.millisecondsSinceEpoch - 10_000), extra: unschedulable))
        #expect(fresh.state == .pending)
        #expect(fresh.stateReason == "Unschedulable: 0/3 nodes are available: 3 Insufficient nvidia.com/gpu.")
        #expect(fresh.provisioningFailure == nil)
        let old = map(
            try pod("Pending", created: RFC3339.format(now.millisecondsSinceEpoch - 610_000), extra: unschedulable))
        #expect(old.state == .pending)
        #expect(old.provisioningFailure == .capacityUnavailable)
        #expect(old.provisioningError?.kind == .capacityUnavailable)
        #expect(old.provisioningError?.message.contains("Insufficient nvidia.com/gpu") == true)

        let pulling = map(
            try pod(
                "Pending",
                extra: """
                    "containerStatuses":[{"name":"workload","state":{"waiting":{"reason":"ImagePullBackOff","message":"back-off"}}}],
                    """))
        #expect(pulling.state == .pending && pulling.stateReason == "ImagePullBackOff: back-off")
        #expect(pulling.provisioningFailure == nil)

        let running = map(try pod("Running", extra: "\"conditions\":[{\"type\":\"Ready\",\"status\":\"True\"}],"))
        #expect(running.state == .running && running.stateReason == "Ready" && running.address == "10.1.2.3")
        #expect(
            running.region == "LAS1" && running.machineType == "A40-x1" && running.labels["fabric-owner"] == "fabric")

        let done = map(
            try pod(
                "Succeeded",
                extra: "\"containerStatuses\":[{\"name\":\"workload\",\"state\":{\"terminated\":{\"exitCode\":0}}}],"))
        #expect(done.state == .terminated && done.exitCode == 0 && done.stateReason == "Succeeded")

        let oom = map(
            try pod(
                "Failed",
                extra: """
                    "containerStatuses":[{"name":"workload","state":{"terminated":{"exitCode":137,"reason":"OOMKilled"}}}],
                    """))
        #expect(oom.state == .terminated && oom.exitCode == 137 && oom.stateReason == "Failed: OOMKilled")

        var deleting = try pod("Running")
        deleting.metadata?.deletionTimestamp = "2027-01-15T08:09:00Z"
        #expect(map(deleting).state == .stopping)
        #expect(map(try pod("Unknown")).state == .unknown)
    }

    @Test("capacity: allocatable minus requests of non-terminal pods; NotReady, cordoned and tainted nodes flagged")
    func capacity() throws {
        func node(_ name: String, gpus: Int, ready: Bool = true, cordoned: Bool = false, taint: String? = nil)
            -> KubeWire.Node
        {
            let json = """
                {"metadata":{"name":"\(name)","labels":{"gpu.nvidia.com/class":"A40","topology.kubernetes.io/region":"ORD1"}},
                 "spec":{"unschedulable":\(cordoned),"taints":[{"key":"nvidia.com/gpu","effect":"NoSchedule"}\(taint.map { ",{\"key\":\"\($0)\",\"effect\":\"NoSchedule\"}" } ?? "")]},
                 "status":{"allocatable":{"cpu":"15500m","memory":"64Gi","nvidia.com/gpu":"\(gpus)","pods":"110"},
                           "conditions":[{"type":"Ready","status":"\(ready ? "True" : "False")"}]}}
                """
            return try! JSONDecoder().decode(KubeWire.Node.self, from: Data(json.utf8))
        }
        func pod(on node: String, cpu: String, gpus: Int, phase: String = "Running", initCPU: String? = nil)
            -> KubeWire.Pod
        {
            let initPart =
                initCPU.map {
                    ",\"initContainers\":[{\"name\":\"i\",\"resources\":{\"requests\":{\"cpu\":\"\($0)\"}}}]"
                } ?? ""
            let json = """
                {"spec":{"nodeName":"\(node)","containers":[{"name":"a","resources":{"requests":{"cpu":"\(cpu)","memory":"1Gi"},
                 "limits":{"nvidia.com/gpu":"\(gpus)"}}}]\(initPart)},"status":{"phase":"\(phase)"}}
                """
            return try! JSONDecoder().decode(KubeWire.Pod.self, from: Data(json.utf8))
        }
        let nodes = [
            node("a", gpus: 8), node("b", gpus: 4, ready: false), node("c", gpus: 4, cordoned: true),
            node("d", gpus: 4, taint: "maintenance"),
        ]
        let pods = [
            pod(on: "a", cpu: "2", gpus: 3), pod(on: "a", cpu: "500m", gpus: 1, initCPU: "4"),
            pod(on: "a", cpu: "8", gpus: 4, phase: "Succeeded"),
        ]
        let capacity = KubernetesMapping.capacity(nodes: nodes, pods: pods, labels: .coreWeave)
        let a = try #require(capacity.first { $0.name == "a" })
        #expect(a.allocatable.cpuMillis == 15_500 && a.allocatable.gpuCount == 8)
        #expect(a.requested.cpuMillis == 6000)  // 2 + max(0.5, init 4)
        #expect(a.requested.gpuCount == 4)
        #expect(a.free.cpuMillis == 9500 && a.free.gpuCount == 4 && a.free.memoryBytes == 62 << 30)
        #expect(a.ready && a.schedulable && a.region == "ORD1" && a.gpuLabel == "A40")
        #expect(capacity.map(\.ready) == [true, false, true, true])
        #expect(capacity.map(\.schedulable) == [true, true, false, false])

        let offers = KubernetesMapping.offers(
            from: capacity, provider: "k8s", pricing: KubernetesNodePricing(perGPUHour: 1.5), asOf: "2027-01-15")
        #expect(offers.count == 1)
        #expect(offers.first?.machineType == "A40-x8")
        #expect(offers.first?.gpuCount == 4 && offers.first?.vcpus == 9 && offers.first?.onDemandPerHour == 6)
        #expect(offers.first?.gpuModel == "A40" && offers.first?.region == "ORD1" && offers.first?.source == "live")
    }
}
