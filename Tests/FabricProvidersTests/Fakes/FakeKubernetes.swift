// A stateful fake Kubernetes API server (core/v1 pods and nodes) on loopback, after provider-apis.md §1: Status
// error bodies, chunked lists with continue tokens that can be expired (410 Expired), a tiny scheduler that binds
// a pod to a node with room or marks it PodScheduled=False/Unschedulable with the real message shape, ResourceQuota
// refusals, bearer-token auth, and scripted faults.
import FabricCore
import FabricHTTP
import Foundation
import Synchronization

/// A node of the fake cluster.
struct FakeNode: Sendable {
    var name: String
    var labels: [String: String] = [:]
    var cpuMillis: Int64 = 8000
    var memoryBytes: Int64 = 32 << 30
    var gpus = 0
    var ready = true
    var unschedulable = false
    /// (key, value, effect)
    var taints: [FakeTaint] = []

    /// A GPU node with the `nvidia.com/gpu` NoSchedule taint GPU operators put on.
    static func gpu(_ name: String, gpus: Int, labels: [String: String], cpu: Int64 = 64, memoryGiB: Int64 = 512)
        -> FakeNode
    {
        FakeNode(
            name: name, labels: labels, cpuMillis: cpu * 1000, memoryBytes: memoryGiB << 30, gpus: gpus,
            taints: [FakeTaint(key: "nvidia.com/gpu", value: "present", effect: "NoSchedule")])
    }
}

/// A node taint.
struct FakeTaint: Sendable {
    var key: String
    var value: String
    var effect: String
}

/// A pod of the fake cluster: its metadata, the spec as sent (JSON) and what the fake scheduler made of it.
struct FakePod: Sendable {
    var name: String
    var namespace: String
    var uid: String
    var labels: [String: String]
    var annotations: [String: String]
    var specJSON: Data
    var cpuMillis: Int64
    var memoryBytes: Int64
    var gpus: Int
    /// Required node selector terms (ORed), each a list of (key, operator, values) (ANDed).
    var affinity: [[(key: String, op: String, values: [String])]]
    var nodeSelector: [String: String]
    /// (key, operator, effect) of each toleration.
    var tolerations: [(key: String?, op: String, effect: String?)]
    var created: Timestamp
    var deleted: Timestamp?
    var nodeName: String?
    var phase = "Pending"
    var unschedulableMessage: String?
    var started = false
    var exitCode: Int32?
    var terminatedReason: String?
    var ip: String?
    var resourceVersion: Int
}

/// The fake API server. Start it with `start()`, point a `KubernetesConnection` at `baseURL`.
final class FakeKubernetes: Sendable {
    struct State {
        var nodes: [String: FakeNode] = [:]
        var pods: [String: FakePod] = [:]  // key: namespace/name
        var resourceVersion = 100
        /// Continue tokens carry the generation they were issued in; expiring bumps it.
        var tokenGeneration = 0
        /// Requests with a continue token answered 410 before the next one is served.
        var expireNextContinues = 0
        /// Pods bound to a node start running at once unless this is false (then they wait in ContainerCreating).
        var startOnBind = true
        /// Pods are removed at once on DELETE unless this is false (then they get a deletionTimestamp).
        var deleteImmediately = true
        /// GPU requests allowed per namespace (a ResourceQuota on requests.nvidia.com/gpu).
        var gpuQuota: [String: Int] = [:]
        var nextIP = 10
    }

    let state = Mutex(State())
    let faults = FaultScript()
    let log = RequestLog()
    let clock: ManualClock
    /// The bearer token every request must carry; nil: no auth.
    let token: String?
    private let server = Mutex<LoopbackServer?>(nil)

    init(clock: ManualClock, token: String? = nil) {
        self.clock = clock
        self.token = token
    }

    /// Starts serving on a free loopback port.
    func start() throws {
        var router = Router()
        router.refusesUnknownQuery = false  // the real API ignores query parameters it does not know
        router.add(middleware: LogMiddleware(log: log))
        router.add(middleware: AuthMiddleware(token: token))
        router.add(
            middleware: FaultMiddleware(faults: faults) { r in
                r.method.rawValue + " " + r.path + (r.query["continue"] != nil ? " continue" : "")
            })
        router.post("/api/v1/namespaces/:ns/pods") { [self] in try createPod($0) }
        router.get("/api/v1/namespaces/:ns/pods") { [self] in listPods($0, namespace: try $0.parameter("ns")) }
        router.get("/api/v1/pods") { [self] in listPods($0, namespace: nil) }
        router.get("/api/v1/namespaces/:ns/pods/:name") { [self] in try getPod($0) }
        router.delete("/api/v1/namespaces/:ns/pods/:name") { [self] in try deletePod($0) }
        router.get("/api/v1/nodes") { [self] in listNodes($0) }
        let s = try LoopbackServer(router)
        server.withLock { $0 = s }
    }

    func stop() async {
        let s = server.withLock { $0 }
        await s?.stop()
    }

    var baseURL: String { server.withLock { $0!.baseURL } }

    // MARK: Test hooks

    func addNode(_ node: FakeNode) {
        state.withLock {
            $0.nodes[node.name] = node
            Self.scheduleAll(&$0, now: clock.now())
        }
    }

    /// Adds a pod directly (another tenant's, or one Fabric made before a crash), then schedules it.
    func addPod(
        name: String, namespace: String = "default", labels: [String: String] = [:], cpuMillis: Int64 = 1000,
        memoryBytes: Int64 = 1 << 30, gpus: Int = 0, nodeName: String? = nil, phase: String = "Pending"
    ) {
        state.withLock {
            $0.resourceVersion += 1
            var pod = FakePod(
                name: name, namespace: namespace, uid: "uid-\(name)", labels: labels, annotations: [:],
                specJSON: Self.specJSON(cpuMillis: cpuMillis, memoryBytes: memoryBytes, gpus: gpus),
                cpuMillis: cpuMillis, memoryBytes: memoryBytes, gpus: gpus, affinity: [], nodeSelector: [:],
                tolerations: [(key: "nvidia.com/gpu", op: "Exists", effect: "NoSchedule")], created: clock.now(),
                nodeName: nodeName, phase: phase, resourceVersion: $0.resourceVersion)
            if nodeName != nil { pod.started = phase == "Running" }
            $0.pods["\(namespace)/\(name)"] = pod
            Self.scheduleAll(&$0, now: clock.now())
        }
    }

    /// The spec of a pod added by `addPod`: one container with its requests (GPUs as limits only, as users write).
    private static func specJSON(cpuMillis: Int64, memoryBytes: Int64, gpus: Int) -> Data {
        var resources: [String: Any] = ["requests": ["cpu": "\(cpuMillis)m", "memory": String(memoryBytes)]]
        if gpus > 0 { resources["limits"] = ["nvidia.com/gpu": String(gpus)] }
        let spec: [String: Any] = ["containers": [["name": "main", "image": "busybox", "resources": resources]]]
        return (try? JSONSerialization.data(withJSONObject: spec)) ?? Data()
    }

    /// Ends a running pod's container with `exitCode` (Succeeded for 0, else Failed with `reason`).
    func finish(_ name: String, namespace: String = "default", exitCode: Int32, reason: String? = nil) {
        state.withLock {
            guard var pod = $0.pods["\(namespace)/\(name)"] else { return }
            pod.phase = exitCode == 0 ? "Succeeded" : "Failed"
            pod.exitCode = exitCode
            pod.terminatedReason = reason ?? (exitCode == 0 ? "Completed" : "Error")
            $0.pods["\(namespace)/\(name)"] = pod
            Self.scheduleAll(&$0, now: clock.now())
        }
    }

    /// Removes pods that were marked for deletion (when `deleteImmediately` is false).
    func finalizeDeletes() {
        state.withLock {
            $0.pods = $0.pods.filter { $0.value.deleted == nil }
            Self.scheduleAll(&$0, now: clock.now())
        }
    }

    /// Makes every continue token issued so far invalid (the etcd compaction that expires them).
    func expireContinueTokens() { state.withLock { $0.tokenGeneration += 1 } }

    /// Expires the tokens when the next `count` requests carrying one arrive (each answered 410).
    func expireNextContinue(count: Int = 1) { state.withLock { $0.expireNextContinues += count } }

    func pod(_ name: String, namespace: String = "default") -> FakePod? {
        state.withLock { $0.pods["\(namespace)/\(name)"] }
    }

    var podNames: [String] { state.withLock { $0.pods.values.map(\.name).sorted() } }

    var requests: [SeenRequest] { log.all }

    // MARK: Handlers

    private func createPod(_ request: Request) throws -> Response {
        let namespace = try request.parameter("ns")
        guard let body = FakeJSON.object(request.body) else {
            return Self.status(400, "BadRequest", "the body of the request was in an unknown format")
        }
        let meta = body["metadata"] as? [String: Any] ?? [:]
        guard let name = meta["name"] as? String, !name.isEmpty else {
            return Self.status(
                422, "Invalid", "Pod \"\" is invalid: metadata.name: Required value: name or generateName is required")
        }
        if let ns = meta["namespace"] as? String, ns != namespace {
            return Self.status(
                400, "BadRequest",
                "the namespace of the provided object does not match the namespace sent on the request")
        }
        let spec = body["spec"] as? [String: Any] ?? [:]
        let containers = spec["containers"] as? [[String: Any]] ?? []
        guard !containers.isEmpty else {
            return Self.status(
                422, "Invalid", "Pod \"\(name)\" is invalid: spec.containers: Required value", name: name)
        }
        var cpu: Int64 = 0
        var memory: Int64 = 0
        var gpus = 0
        for (i, c) in containers.enumerated() {
            guard let image = c["image"] as? String, !image.isEmpty else {
                return Self.status(
                    422, "Invalid", "Pod \"\(name)\" is invalid: spec.containers[\(i)].image: Required value",
                    name: name)
            }
            let resources = c["resources"] as? [String: Any] ?? [:]
            let requests = resources["requests"] as? [String: String] ?? [:]
            let limits = resources["limits"] as? [String: String] ?? [:]
            if let r = requests["nvidia.com/gpu"], r != limits["nvidia.com/gpu"] {
                return Self.status(
                    422, "Invalid",
                    "Pod \"\(name)\" is invalid: spec.containers[\(i)].resources.requests: Invalid value: \"\(r)\": must be "
                        + "equal to nvidia.com/gpu limit of \(limits["nvidia.com/gpu"] ?? "0")", name: name)
            }
            cpu += requests["cpu"].flatMap(Self.cpu) ?? 0
            memory += requests["memory"].flatMap(Self.bytes) ?? 0
            gpus += Int(limits["nvidia.com/gpu"] ?? "0") ?? 0
        }
        if let policy = spec["restartPolicy"] as? String, !["Always", "OnFailure", "Never"].contains(policy) {
            return Self.status(
                422, "Invalid", "Pod \"\(name)\" is invalid: spec.restartPolicy: Unsupported value: \"\(policy)\"",
                name: name)
        }
        var affinity: [[(key: String, op: String, values: [String])]] = []
        let nodeAffinity = (spec["affinity"] as? [String: Any])?["nodeAffinity"] as? [String: Any]
        let required = nodeAffinity?["requiredDuringSchedulingIgnoredDuringExecution"] as? [String: Any]
        for term in required?["nodeSelectorTerms"] as? [[String: Any]] ?? [] {
            affinity.append(
                (term["matchExpressions"] as? [[String: Any]] ?? []).map {
                    (
                        key: $0["key"] as? String ?? "", op: $0["operator"] as? String ?? "",
                        values: $0["values"] as? [String] ?? []
                    )
                })
        }
        let tolerations = (spec["tolerations"] as? [[String: Any]] ?? []).map {
            (key: $0["key"] as? String, op: $0["operator"] as? String ?? "Equal", effect: $0["effect"] as? String)
        }
        let specJSON = (try? JSONSerialization.data(withJSONObject: spec)) ?? Data()
        let now = clock.now()
        return state.withLock { s in
            let key = "\(namespace)/\(name)"
            if s.pods[key] != nil {
                return Self.status(409, "AlreadyExists", "pods \"\(name)\" already exists", name: name)
            }
            if let quota = s.gpuQuota[namespace], gpus > 0 {
                let used = s.pods.values.filter { $0.namespace == namespace && !Self.terminal($0) }.reduce(0) {
                    $0 + $1.gpus
                }
                if used + gpus > quota {
                    return Self.status(
                        403, "Forbidden",
                        "pods \"\(name)\" is forbidden: exceeded quota: gpu-quota, requested: requests.nvidia.com/gpu=\(gpus), "
                            + "used: requests.nvidia.com/gpu=\(used), limited: requests.nvidia.com/gpu=\(quota)",
                        name: name)
                }
            }
            s.resourceVersion += 1
            let pod = FakePod(
                name: name, namespace: namespace, uid: "uid-\(s.resourceVersion)",
                labels: meta["labels"] as? [String: String] ?? [:],
                annotations: meta["annotations"] as? [String: String] ?? [:], specJSON: specJSON, cpuMillis: cpu,
                memoryBytes: memory, gpus: gpus, affinity: affinity,
                nodeSelector: spec["nodeSelector"] as? [String: String] ?? [:], tolerations: tolerations, created: now,
                resourceVersion: s.resourceVersion)
            s.pods[key] = pod
            Self.scheduleAll(&s, now: now)
            return FakeJSON.response(Self.render(s.pods[key]!), status: 201)
        }
    }

    private func getPod(_ request: Request) throws -> Response {
        let key = "\(try request.parameter("ns"))/\(try request.parameter("name"))"
        let name = try request.parameter("name")
        return state.withLock { s in
            guard let pod = s.pods[key] else {
                return Self.status(404, "NotFound", "pods \"\(name)\" not found", name: name)
            }
            return FakeJSON.response(Self.render(pod))
        }
    }

    private func deletePod(_ request: Request) throws -> Response {
        let key = "\(try request.parameter("ns"))/\(try request.parameter("name"))"
        let name = try request.parameter("name")
        let now = clock.now()
        return state.withLock { s in
            guard var pod = s.pods[key] else {
                return Self.status(404, "NotFound", "pods \"\(name)\" not found", name: name)
            }
            if s.deleteImmediately || Self.terminal(pod) {
                s.pods[key] = nil
            } else {
                pod.deleted = now
                s.pods[key] = pod
            }
            Self.scheduleAll(&s, now: now)
            return FakeJSON.response(Self.render(pod))
        }
    }

    private func listPods(_ request: Request, namespace: String?) -> Response {
        let selector = request.query["labelSelector"] ?? ""
        let fields = request.query["fieldSelector"] ?? ""
        return state.withLock { s in
            let pods = s.pods.values
                .filter { namespace == nil || $0.namespace == namespace }
                .filter { Self.matches(labels: $0.labels, selector: selector) && Self.matches(pod: $0, fields: fields) }
                .sorted { ($0.namespace, $0.name) < ($1.namespace, $1.name) }
            return Self.page(pods.map(Self.render), kind: "PodList", request: request, state: &s)
        }
    }

    private func listNodes(_ request: Request) -> Response {
        let selector = request.query["labelSelector"] ?? ""
        return state.withLock { s in
            let nodes = s.nodes.values.filter { Self.matches(labels: $0.labels, selector: selector) }.sorted {
                $0.name < $1.name
            }
            return Self.page(nodes.map(Self.render), kind: "NodeList", request: request, state: &s)
        }
    }

    // MARK: Paging

    /// One page of `items` for `limit`/`continue`; a stale token is 410 Expired, as from a real API server.
    private static func page(_ items: [[String: Any]], kind: String, request: Request, state s: inout State) -> Response
    {
        var offset = 0
        if let token = request.query["continue"] {
            if s.expireNextContinues > 0 {
                s.expireNextContinues -= 1
                s.tokenGeneration += 1
            }
            let parts = token.split(separator: ":")
            guard parts.count == 2, let generation = Int(parts[0]), let start = Int(parts[1]) else {
                return status(400, "BadRequest", "continue key is not valid: illegal base64 data at input byte 0")
            }
            guard generation == s.tokenGeneration else {
                return status(
                    410, "Expired",
                    "The provided continue parameter is too old to display a consistent list result. You can start a new "
                        + "list without the continue parameter, or use the continue token in this response to retrieve the "
                        + "remainder of the results. Continuing with the provided token results in an inconsistent list - "
                        + "objects that were created, modified, or deleted between the time the first chunk was returned "
                        + "and now may show up in the list.")
            }
            offset = start
        }
        let limit = Int(request.query["limit"] ?? "") ?? 0
        let end = limit > 0 ? min(items.count, offset + limit) : items.count
        var meta: [String: Any] = ["resourceVersion": String(s.resourceVersion)]
        if end < items.count {
            meta["continue"] = "\(s.tokenGeneration):\(end)"
            meta["remainingItemCount"] = items.count - end
        }
        let slice = offset < items.count ? Array(items[offset..<end]) : []
        return FakeJSON.response(["kind": kind, "apiVersion": "v1", "metadata": meta, "items": slice])
    }

    // MARK: Scheduler

    private static func terminal(_ pod: FakePod) -> Bool { pod.phase == "Succeeded" || pod.phase == "Failed" }

    /// Binds every unbound pending pod to the first node (by name) it fits, or records why it fits none.
    static func scheduleAll(_ s: inout State, now: Timestamp) {
        for key in s.pods.keys.sorted() {
            guard var pod = s.pods[key], pod.nodeName == nil, pod.phase == "Pending", pod.deleted == nil else {
                continue
            }
            var reasons: [String: Int] = [:]
            var chosen: String?
            for node in s.nodes.values.sorted(by: { $0.name < $1.name }) {
                let why = reasonsAgainst(pod, on: node, state: s)
                if why.isEmpty {
                    chosen = node.name
                    break
                }
                for r in why { reasons[r, default: 0] += 1 }
            }
            s.resourceVersion += 1
            pod.resourceVersion = s.resourceVersion
            if let chosen {
                pod.nodeName = chosen
                pod.unschedulableMessage = nil
                pod.ip = "10.244.0.\(s.nextIP)"
                s.nextIP += 1
                if s.startOnBind {
                    pod.phase = "Running"
                    pod.started = true
                }
            } else {
                let n = s.nodes.count
                let list = reasons.keys.sorted().map { "\(reasons[$0]!) \($0)" }.joined(separator: ", ")
                pod.unschedulableMessage =
                    n == 0
                    ? "no nodes available to schedule pods"
                    : "0/\(n) nodes are available: \(list). preemption: 0/\(n) nodes are available: \(n) No preemption "
                        + "victims found for incoming pod."
            }
            s.pods[key] = pod
        }
    }

    /// Why `pod` cannot go on `node` (empty: it fits), in the scheduler's words.
    static func reasonsAgainst(_ pod: FakePod, on node: FakeNode, state s: State) -> [String] {
        if !node.ready { return ["node(s) had untolerated taint {node.kubernetes.io/not-ready: }"] }
        if node.unschedulable { return ["node(s) were unschedulable"] }
        for taint in node.taints where taint.effect == "NoSchedule" || taint.effect == "NoExecute" {
            let tolerated = pod.tolerations.contains {
                ($0.key == nil || $0.key == taint.key) && ($0.effect == nil || $0.effect == taint.effect)
                    && ($0.op == "Exists" || $0.key == taint.key)
            }
            if !tolerated { return ["node(s) had untolerated taint {\(taint.key): \(taint.value)}"] }
        }
        let selectorOK = pod.nodeSelector.allSatisfy { node.labels[$0.key] == $0.value }
        let affinityOK =
            pod.affinity.isEmpty
            || pod.affinity.contains { term in
                term.allSatisfy { r in
                    switch r.op {
                    case "In": return node.labels[r.key].map { r.values.contains($0) } ?? false
                    case "NotIn": return !(node.labels[r.key].map { r.values.contains($0) } ?? false)
                    case "Exists": return node.labels[r.key] != nil
                    case "DoesNotExist": return node.labels[r.key] == nil
                    default: return false
                    }
                }
            }
        if !selectorOK || !affinityOK { return ["node(s) didn't match Pod's node affinity/selector"] }
        var used: (cpu: Int64, memory: Int64, gpus: Int) = (0, 0, 0)
        for other in s.pods.values where other.nodeName == node.name && !terminal(other) {
            used.cpu += other.cpuMillis
            used.memory += other.memoryBytes
            used.gpus += other.gpus
        }
        var why: [String] = []
        if used.cpu + pod.cpuMillis > node.cpuMillis { why.append("Insufficient cpu") }
        if used.memory + pod.memoryBytes > node.memoryBytes { why.append("Insufficient memory") }
        if used.gpus + pod.gpus > node.gpus { why.append("Insufficient nvidia.com/gpu") }
        return why
    }

    // MARK: Rendering

    static func time(_ t: Timestamp) -> String { String(t.rfc3339.prefix(19)) + "Z" }

    static func render(_ pod: FakePod) -> [String: Any] {
        var meta: [String: Any] = [
            "name": pod.name, "namespace": pod.namespace, "uid": pod.uid, "labels": pod.labels,
            "annotations": pod.annotations, "creationTimestamp": time(pod.created),
            "resourceVersion": String(pod.resourceVersion),
        ]
        if let deleted = pod.deleted {
            meta["deletionTimestamp"] = time(deleted)
            meta["deletionGracePeriodSeconds"] = 30
        }
        var spec = (try? JSONSerialization.jsonObject(with: pod.specJSON)) as? [String: Any] ?? [:]
        if let node = pod.nodeName { spec["nodeName"] = node }
        var conditions: [[String: Any]] = []
        var status: [String: Any] = ["phase": pod.phase, "qosClass": "Guaranteed"]
        let containerName = ((spec["containers"] as? [[String: Any]])?.first?["name"] as? String) ?? "main"
        if let message = pod.unschedulableMessage, pod.nodeName == nil {
            conditions.append([
                "type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message,
                "lastTransitionTime": time(pod.created), "lastProbeTime": NSNull(),
            ])
        } else if pod.nodeName != nil {
            conditions.append(["type": "PodScheduled", "status": "True", "lastTransitionTime": time(pod.created)])
            let ready = pod.started && pod.phase == "Running"
            conditions.append(["type": "Ready", "status": ready ? "True" : "False"])
            var containerState: [String: Any]
            if let code = pod.exitCode {
                containerState = ["terminated": ["exitCode": Int(code), "reason": pod.terminatedReason ?? "Error"]]
            } else if pod.started {
                containerState = ["running": ["startedAt": time(pod.created)]]
            } else {
                containerState = ["waiting": ["reason": "ContainerCreating"]]
            }
            status["containerStatuses"] = [
                ["name": containerName, "ready": ready, "restartCount": 0, "state": containerState, "image": "x"]
            ]
            status["hostIP"] = "192.168.0.1"
            if let ip = pod.ip { status["podIP"] = ip }
        }
        status["conditions"] = conditions
        return ["kind": "Pod", "apiVersion": "v1", "metadata": meta, "spec": spec, "status": status]
    }

    static func render(_ node: FakeNode) -> [String: Any] {
        var resources: [String: Any] = [
            "cpu": node.cpuMillis % 1000 == 0 ? String(node.cpuMillis / 1000) : "\(node.cpuMillis)m",
            "memory": "\(node.memoryBytes / 1024)Ki", "pods": "110", "ephemeral-storage": "101430960Ki",
        ]
        if node.gpus > 0 { resources["nvidia.com/gpu"] = String(node.gpus) }
        var spec: [String: Any] = [:]
        if node.unschedulable { spec["unschedulable"] = true }
        if !node.taints.isEmpty {
            spec["taints"] = node.taints.map { ["key": $0.key, "value": $0.value, "effect": $0.effect] }
        }
        return [
            "kind": "Node", "apiVersion": "v1",
            "metadata": ["name": node.name, "labels": node.labels, "uid": "node-\(node.name)"],
            "spec": spec,
            "status": [
                "allocatable": resources, "capacity": resources,
                "conditions": [
                    ["type": "MemoryPressure", "status": "False"],
                    ["type": "Ready", "status": node.ready ? "True" : "False", "reason": "KubeletReady"],
                ],
            ],
        ]
    }

    /// A `kind: Status` error response.
    static func status(
        _ code: Int, _ reason: String, _ message: String, name: String? = nil, headers: [String: String] = [:]
    )
        -> Response
    {
        var body: [String: Any] = [
            "kind": "Status", "apiVersion": "v1", "metadata": [:], "status": "Failure", "message": message,
            "reason": reason, "code": code,
        ]
        if let name { body["details"] = ["name": name, "kind": "pods"] }
        return FakeJSON.response(body, status: code, headers: headers)
    }

    /// The body of a `kind: Status` error, for scripted faults.
    static func statusBody(_ code: Int, _ reason: String, _ message: String, retryAfterSeconds: Int? = nil) -> String {
        var body: [String: Any] = [
            "kind": "Status", "apiVersion": "v1", "metadata": [:], "status": "Failure", "message": message,
            "reason": reason, "code": code,
        ]
        if let retryAfterSeconds { body["details"] = ["retryAfterSeconds": retryAfterSeconds] }
        return FakeJSON.text(body)
    }

    // MARK: Selectors and quantities

    /// `a=b,c!=d,e` (equality, inequality, existence).
    static func matches(labels: [String: String], selector: String) -> Bool {
        selector.split(separator: ",").allSatisfy { term in
            let t = String(term)
            if let r = t.range(of: "!=") { return labels[String(t[..<r.lowerBound])] != String(t[r.upperBound...]) }
            if let r = t.range(of: "==") ?? t.range(of: "=") {
                return labels[String(t[..<r.lowerBound])] == String(t[r.upperBound...])
            }
            return labels[t] != nil
        }
    }

    /// `status.phase!=X`, `status.phase=X`, `spec.nodeName=N`.
    static func matches(pod: FakePod, fields: String) -> Bool {
        fields.split(separator: ",").allSatisfy { term in
            let t = String(term)
            let negate = t.contains("!=")
            let parts = t.components(separatedBy: negate ? "!=" : "=")
            guard parts.count == 2 else { return false }
            let actual: String? =
                switch parts[0] {
                case "status.phase": pod.phase
                case "spec.nodeName": pod.nodeName ?? ""
                case "metadata.name": pod.name
                default: nil
                }
            guard let actual else { return false }
            return negate ? actual != parts[1] : actual == parts[1]
        }
    }

    static func cpu(_ s: String) -> Int64? {
        s.hasSuffix("m") ? Int64(s.dropLast()) : Int64(s).map { $0 * 1000 }
    }

    static func bytes(_ s: String) -> Int64? {
        for (suffix, shift) in [("Ki", 10), ("Mi", 20), ("Gi", 30), ("Ti", 40)] where s.hasSuffix(suffix) {
            return Int64(s.dropLast(2)).map { $0 << shift }
        }
        return Int64(s)
    }
}

/// 401 with a Status body unless the request carries the expected bearer token.
struct AuthMiddleware: HTTPMiddleware {
    let token: String?

    func handle(_ request: Request, next: HTTPNext) async throws -> Response {
        guard let token else { return try await next(request) }
        guard request.headers["Authorization"] == "Bearer \(token)" else {
            return FakeKubernetes.status(401, "Unauthorized", "Unauthorized")
        }
        return try await next(request)
    }
}
