// The Kubernetes and CoreWeave drivers end to end against the fake API server on loopback.
import FabricCore
import Foundation
import Testing

@testable import FabricProviders

/// Starts a fake cluster, runs `body` with it and a driver pointed at it, then stops the fake.
func withKubernetes<T>(
    token: String? = "secret-token", configure: (inout KubernetesConfiguration) -> Void = { _ in },
    _ body: (FakeKubernetes, KubernetesDriver, ManualClock) async throws -> T
) async throws -> T {
    let clock = ManualClock()
    let fake = FakeKubernetes(clock: clock, token: token)
    try fake.start()
    var configuration = KubernetesConfiguration(
        connection: KubernetesConnection(server: fake.baseURL, token: token), requestTimeout: .seconds(5))
    configure(&configuration)
    let driver = KubernetesDriver(configuration: configuration, transport: CurlHTTPClient(), clock: clock)
    do {
        let result = try await body(fake, driver, clock)
        await fake.stop()
        return result
    } catch {
        await fake.stop()
        throw error
    }
}

/// A GFD-labelled H100 node.
func h100Node(_ name: String, gpus: Int = 8, region: String? = nil) -> FakeNode {
    var labels = ["nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"]
    if let region { labels["topology.kubernetes.io/region"] = region }
    return .gpu(name, gpus: gpus, labels: labels)
}

/// A request for a generic cluster's H100 nodes.
func h100Request(_ name: String, gpus: Int = 1) -> InstanceRequest {
    request(name, region: "default", machineType: "NVIDIA-H100-80GB-HBM3-x8", gpus: gpus)
}

/// Expects `body` to throw a ProviderError and returns it.
func providerError(_ body: () async throws -> Void) async -> ProviderError? {
    do {
        try await body()
        return nil
    } catch {
        return error as? ProviderError
    }
}

@Suite("Kubernetes driver")
struct KubernetesDriverTests {
    @Test("provision creates a GPU pod that the scheduler binds; status reports it running")
    func provisionRuns() async throws {
        try await withKubernetes { fake, driver, _ in
            fake.addNode(h100Node("gpu-1"))
            let made = try await driver.provision(h100Request("fabric-wl-a-1", gpus: 2))
            #expect(made.id == "fabric-wl-a-1" && made.name == "fabric-wl-a-1" && made.provider == "k8s")
            #expect(made.state == .running)
            #expect(made.labels == ["fabric-owner": "fabric", "fabric-workload": "wl-1"])
            #expect(made.machineType == "NVIDIA-H100-80GB-HBM3-x8")
            let pod = try #require(fake.pod("fabric-wl-a-1"))
            #expect(pod.nodeName == "gpu-1" && pod.gpus == 2)
            let seen = try #require(fake.requests.first { $0.method == "POST" })
            #expect(seen.headers["authorization"] == "Bearer secret-token")
            #expect(seen.headers["content-type"] == "application/json")
            let status = try #require(try await driver.status(name: "fabric-wl-a-1", region: "default"))
            #expect(status.state == .running && status.stateReason == "Ready" && status.address != nil)
        }
    }

    @Test("the same name twice makes one pod: 409 AlreadyExists returns the existing pod")
    func idempotent() async throws {
        try await withKubernetes { fake, driver, _ in
            fake.addNode(h100Node("gpu-1"))
            let first = try await driver.provision(h100Request("fabric-wl-b-1"))
            let second = try await driver.provision(h100Request("fabric-wl-b-1"))
            #expect(first == second)
            #expect(fake.podNames == ["fabric-wl-b-1"])
            #expect(
                fake.requests.map { "\($0.method) \($0.path)" }.suffix(2) == [
                    "POST /api/v1/namespaces/default/pods", "GET /api/v1/namespaces/default/pods/fabric-wl-b-1",
                ])
        }
    }

    @Test("an unschedulable pod stays pending with the scheduler's message, then is capacityUnavailable")
    func unschedulableTimesOut() async throws {
        try await withKubernetes(configure: { $0.pendingTimeout = .seconds(120) }) { fake, driver, clock in
            fake.addNode(h100Node("gpu-1", gpus: 1))
            fake.addNode(FakeNode(name: "cpu-1"))
            let made = try await driver.provision(h100Request("fabric-wl-c-1", gpus: 4))
            #expect(made.state == .pending)
            #expect(
                made.stateReason
                    == "Unschedulable: 0/2 nodes are available: 1 Insufficient nvidia.com/gpu, 1 node(s) didn't match "
                    + "Pod's node affinity/selector. preemption: 0/2 nodes are available: 2 No preemption victims "
                    + "found for incoming pod.")
            #expect(made.provisioningFailure == nil)
            clock.advance(by: .seconds(119))
            #expect(try await driver.status(name: "fabric-wl-c-1", region: "default")?.provisioningFailure == nil)
            clock.advance(by: .seconds(1))
            let late = try #require(try await driver.status(name: "fabric-wl-c-1", region: "default"))
            #expect(late.state == .pending)
            #expect(late.provisioningFailure == .capacityUnavailable)
            let error = try #require(late.provisioningError)
            #expect(error.kind == .capacityUnavailable && error.provider == "k8s")
            #expect(error.message.contains("Insufficient nvidia.com/gpu"))
        }
    }

    @Test("capacity unavailable, then success once a node with room joins")
    func capacityThenSuccess() async throws {
        try await withKubernetes(configure: { $0.pendingTimeout = .seconds(60) }) { fake, driver, clock in
            fake.addNode(h100Node("gpu-1", gpus: 1))
            _ = try await driver.provision(h100Request("fabric-wl-d-1", gpus: 2))
            clock.advance(by: .seconds(61))
            let stuck = try #require(try await driver.status(name: "fabric-wl-d-1", region: "default"))
            #expect(stuck.provisioningFailure == .capacityUnavailable)
            try await driver.terminate(name: "fabric-wl-d-1", region: "default")
            fake.addNode(h100Node("gpu-2", gpus: 8))
            let retried = try await driver.provision(h100Request("fabric-wl-d-2", gpus: 2))
            #expect(retried.state == .running && retried.provisioningFailure == nil)
            #expect(fake.podNames == ["fabric-wl-d-2"])
            #expect(fake.pod("fabric-wl-d-2")?.nodeName == "gpu-2")
        }
    }

    @Test("terminate deletes with a grace period; a pod already gone is success; status of a gone pod is nil")
    func terminate() async throws {
        try await withKubernetes { fake, driver, _ in
            fake.addNode(h100Node("gpu-1"))
            _ = try await driver.provision(h100Request("fabric-wl-e-1"))
            try await driver.terminate(name: "fabric-wl-e-1", region: "default")
            #expect(fake.podNames.isEmpty)
            let delete = try #require(fake.requests.last { $0.method == "DELETE" })
            let options = try #require(FakeJSON.object(delete.body))
            #expect(options["kind"] as? String == "DeleteOptions")
            #expect(options["gracePeriodSeconds"] as? Int == 30)
            try await driver.terminate(name: "fabric-wl-e-1", region: "default")  // 404: fine
            #expect(try await driver.status(name: "fabric-wl-e-1", region: "default") == nil)
        }
    }

    @Test("a pod being deleted is stopping; a finished pod is terminated with its exit code")
    func lifecycle() async throws {
        try await withKubernetes { fake, driver, _ in
            fake.addNode(h100Node("gpu-1"))
            fake.state.withLock { $0.deleteImmediately = false }
            _ = try await driver.provision(h100Request("fabric-wl-f-1"))
            _ = try await driver.provision(h100Request("fabric-wl-f-2"))
            _ = try await driver.provision(h100Request("fabric-wl-f-3"))
            try await driver.terminate(name: "fabric-wl-f-1", region: "default")
            #expect(try await driver.status(name: "fabric-wl-f-1", region: "default")?.state == .stopping)
            fake.finalizeDeletes()
            #expect(try await driver.status(name: "fabric-wl-f-1", region: "default") == nil)
            fake.finish("fabric-wl-f-2", exitCode: 0)
            fake.finish("fabric-wl-f-3", exitCode: 137, reason: "OOMKilled")
            let ok = try #require(try await driver.status(name: "fabric-wl-f-2", region: "default"))
            #expect(ok.state == .terminated && ok.exitCode == 0)
            let oom = try #require(try await driver.status(name: "fabric-wl-f-3", region: "default"))
            #expect(oom.state == .terminated && oom.exitCode == 137 && oom.stateReason == "Failed: OOMKilled")
        }
    }

    @Test("list reads 3 pages and starts over when the continue token expires in the middle")
    func listPagingWithExpiry() async throws {
        try await withKubernetes(configure: { $0.listPageSize = 2 }) { fake, driver, _ in
            for i in 1...6 {
                fake.addPod(name: "fabric-wl-g-\(i)", labels: ["fabric-owner": "fabric", "fabric-workload": "wl-g"])
            }
            fake.addPod(name: "someone-else", labels: ["app": "web"])
            fake.addPod(name: "other-owner", labels: ["fabric-owner": "another-fabric"])
            fake.expireNextContinue()
            let listed = try await driver.list()
            #expect(listed.map(\.name) == (1...6).map { "fabric-wl-g-\($0)" })
            let lists = fake.requests.filter { $0.method == "GET" && $0.path == "/api/v1/namespaces/default/pods" }
            // page 1, page 2 → 410 Expired, then pages 1, 2, 3 again.
            #expect(lists.count == 5)
            #expect(lists.map { $0.query["continue"] != nil } == [false, true, false, true, true])
            #expect(lists.allSatisfy { $0.query["labelSelector"] == "fabric-owner=fabric" && $0.query["limit"] == "2" })
        }
    }

    @Test("a list whose token keeps expiring gives up as transient Expired")
    func listExpiresForever() async throws {
        try await withKubernetes(configure: { $0.listPageSize = 1 }) { fake, driver, _ in
            for i in 1...3 { fake.addPod(name: "fabric-wl-h-\(i)", labels: ["fabric-owner": "fabric"]) }
            fake.expireNextContinue(count: KubernetesDriver.listRestartsMax + 1)
            let e = await providerError { _ = try await driver.list() }
            #expect(e?.kind == .transient && e?.code == "Expired")
        }
    }

    @Test("429 with Retry-After is rateLimited with that wait")
    func throttled() async throws {
        try await withKubernetes { fake, driver, _ in
            fake.faults.add(
                .respond(
                    status: 429, headers: ["Retry-After": "7"],
                    body: FakeKubernetes.statusBody(
                        429, "TooManyRequests", "Too many requests, please try again later.")),
                matching: "POST /api/v1/namespaces/default/pods")
            let e = await providerError { _ = try await driver.provision(h100Request("fabric-wl-i-1")) }
            #expect(e?.kind == .rateLimited && e?.retryAfter == .seconds(7) && e?.code == "TooManyRequests")
            #expect(e?.isRetryable == true)
            fake.addNode(h100Node("gpu-1"))
            let retried = try await driver.provision(h100Request("fabric-wl-i-1"))
            #expect(retried.state == .running)
        }
    }

    @Test("behind the retrying transport a short Retry-After is waited out; a long one reaches the caller")
    func retryingTransport() async throws {
        let clock = ManualClock()
        let fake = FakeKubernetes(clock: clock)
        try fake.start()
        let sleeps = RecordedSleeps()
        let transport = retrying(RetryPolicy(attemptsMax: 3, retryAfterMax: .seconds(30)), sleeps: sleeps)
        let driver = KubernetesDriver(
            configuration: KubernetesConfiguration(connection: KubernetesConnection(server: fake.baseURL)),
            transport: transport, clock: clock)
        let throttled = FakeKubernetes.statusBody(429, "TooManyRequests", "Too many requests")
        fake.faults.add(.respond(status: 429, headers: ["Retry-After": "2"], body: throttled), matching: "GET")
        let listed = try await driver.list()
        #expect(listed.isEmpty)
        #expect(sleeps.all == [.seconds(2)])
        fake.faults.add(.respond(status: 429, headers: ["Retry-After": "120"], body: throttled), matching: "GET")
        let e = await providerError { _ = try await driver.list() }
        await fake.stop()
        #expect(e?.kind == .rateLimited && e?.retryAfter == .seconds(120))
        #expect(sleeps.all == [.seconds(2)])
    }

    @Test("a wrong token is authFailed")
    func unauthorized() async throws {
        try await withKubernetes(configure: { $0.connection.token = "stale" }) { _, driver, _ in
            let e = await providerError { _ = try await driver.list() }
            #expect(e?.kind == .authFailed && e?.code == "Unauthorized")
        }
    }

    @Test("403 from a ResourceQuota is quotaExceeded; 403 from RBAC is authFailed")
    func forbidden() async throws {
        try await withKubernetes { fake, driver, _ in
            fake.addNode(h100Node("gpu-1"))
            fake.state.withLock { $0.gpuQuota["default"] = 2 }
            _ = try await driver.provision(h100Request("fabric-wl-j-1", gpus: 2))
            let quota = await providerError { _ = try await driver.provision(h100Request("fabric-wl-j-2")) }
            #expect(quota?.kind == .quotaExceeded && quota?.message.contains("exceeded quota: gpu-quota") == true)
            fake.faults.add(
                .respond(
                    status: 403, headers: [:],
                    body: FakeKubernetes.statusBody(
                        403, "Forbidden",
                        "pods is forbidden: User \"system:serviceaccount:default:fabric\" cannot create resource "
                            + "\"pods\" in API group \"\" in the namespace \"default\"")),
                matching: "POST")
            let rbac = await providerError { _ = try await driver.provision(h100Request("fabric-wl-j-3")) }
            #expect(rbac?.kind == .authFailed && rbac?.code == "Forbidden")
        }
    }

    @Test("422 Invalid from the API server is invalidRequest; 409 Conflict is transient")
    func invalidAndConflict() async throws {
        try await withKubernetes { fake, driver, _ in
            fake.faults.add(
                .respond(
                    status: 422, headers: [:],
                    body: FakeKubernetes.statusBody(
                        422, "Invalid", "Pod \"fabric-wl-k-1\" is invalid: spec.containers[0].image: Required value")),
                matching: "POST")
            let invalid = await providerError { _ = try await driver.provision(h100Request("fabric-wl-k-1")) }
            #expect(invalid?.kind == .invalidRequest && invalid?.code == "Invalid")
            fake.faults.add(
                .respond(
                    status: 409, headers: [:],
                    body: FakeKubernetes.statusBody(409, "Conflict", "Operation cannot be fulfilled on pods")),
                matching: "DELETE")
            let conflict = await providerError { try await driver.terminate(name: "fabric-wl-k-1", region: "default") }
            #expect(conflict?.kind == .transient && conflict?.code == "Conflict")
        }
    }

    @Test("5xx is transient and keeps Retry-After; the next call succeeds")
    func serverErrors() async throws {
        try await withKubernetes { fake, driver, _ in
            fake.faults.add(
                .respond(
                    status: 503, headers: ["Retry-After": "2"],
                    body: FakeKubernetes.statusBody(503, "ServiceUnavailable", "the server is currently unable")),
                matching: "GET /api/v1/namespaces/default/pods")
            fake.faults.add(.respond(status: 500, headers: [:], body: "etcd timeout"), matching: "GET /api/v1/nodes")
            let unavailable = await providerError { _ = try await driver.list() }
            #expect(unavailable?.kind == .transient && unavailable?.retryAfter == .seconds(2))
            let failed = await providerError { _ = try await driver.nodeCapacity() }
            #expect(
                failed?.kind == .transient && failed?.code == "500" && failed?.message.contains("etcd timeout") == true)
            let listed = try await driver.list()
            #expect(listed.isEmpty)
        }
    }

    @Test("a response slower than the request timeout is a transient transport error; a slow one within it is fine")
    func slowResponses() async throws {
        try await withKubernetes(configure: { $0.requestTimeout = .milliseconds(500) }) { fake, driver, _ in
            fake.faults.add(.delay(.milliseconds(1500)), matching: "GET /api/v1/namespaces/default/pods")
            let e = await providerError { _ = try await driver.list() }
            #expect(e?.kind == .transient && e?.code == ProviderHTTP.transportErrorCode)
            fake.faults.add(.delay(.milliseconds(100)), matching: "GET /api/v1/namespaces/default/pods")
            let listed = try await driver.list()
            #expect(listed.isEmpty)
        }
    }

    @Test("malformed JSON is a transient MalformedResponse")
    func malformed() async throws {
        try await withKubernetes { fake, driver, _ in
            fake.faults.add(.malformedJSON, matching: "GET /api/v1/namespaces/default/pods/fabric-wl-m-1")
            let e = await providerError { _ = try await driver.status(name: "fabric-wl-m-1", region: "default") }
            #expect(e?.kind == .transient && e?.code == "MalformedResponse")
        }
    }

    @Test("node capacity and live offers: free GPUs after other pods, NotReady and cordoned nodes left out")
    func nodesAndOffers() async throws {
        try await withKubernetes(configure: { $0.offerSource = .nodes(KubernetesNodePricing(perGPUHour: 2)) }) {
            fake, driver, clock in
            fake.addNode(h100Node("gpu-1", gpus: 8, region: "us-east"))
            var down = h100Node("gpu-2", gpus: 8, region: "us-east")
            down.ready = false
            fake.addNode(down)
            var cordoned = h100Node("gpu-3", gpus: 8, region: "us-west")
            cordoned.unschedulable = true
            fake.addNode(cordoned)
            fake.addPod(name: "tenant-a", namespace: "other", gpus: 3)
            fake.addPod(name: "tenant-b", namespace: "other", gpus: 2)
            fake.finish("tenant-b", namespace: "other", exitCode: 0)
            let nodes = try await driver.nodeCapacity()
            #expect(nodes.map(\.name) == ["gpu-1", "gpu-2", "gpu-3"])
            let one = try #require(nodes.first)
            #expect(one.allocatable.gpuCount == 8 && one.free.gpuCount == 5 && one.requested.gpuCount == 3)
            #expect(nodes.map(\.ready) == [true, false, true] && nodes.map(\.schedulable) == [true, true, false])
            let podQuery = try #require(fake.requests.first { $0.path == "/api/v1/pods" })
            #expect(podQuery.query["fieldSelector"] == "status.phase!=Succeeded,status.phase!=Failed")
            let offers = try await driver.offers()
            #expect(offers.origin == "live" && offers.asOf == clock.now())
            #expect(offers.offers.count == 1)
            let o = try #require(offers.offers.first)
            #expect(o.provider == "k8s" && o.region == "us-east" && o.machineType == "NVIDIA-H100-80GB-HBM3-x8")
            #expect(o.gpuModel == "H100" && o.gpuCount == 5 && o.onDemandPerHour == 10)
        }
    }
}
