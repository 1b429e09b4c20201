// The RunPod driver against the fake GraphQL endpoint, and its pure mappings.
import FabricCore
import Foundation
import Testing

@testable import FabricProviders

/// Starts a fake RunPod, runs `body` with it and a driver pointed at it, then stops the fake.
func withRunPod<T>(
    configure: (inout RunPodConfiguration) -> Void = { _ in },
    _ body: (FakeRunPod, RunPodDriver, ManualClock) async throws -> T
) async throws -> T {
    let clock = ManualClock()
    let fake = FakeRunPod()
    try fake.start()
    var configuration = RunPodConfiguration(apiKey: "rp-key", endpoint: fake.endpoint, requestTimeout: .seconds(5))
    configure(&configuration)
    let driver = RunPodDriver(configuration: configuration, transport: CurlHTTPClient(), clock: clock)
    do {
        let result = try await body(fake, driver, clock)
        await fake.stop()
        return result
    } catch {
        await fake.stop()
        throw error
    }
}

/// A RunPod request with weaver's labels.
func runPodRequest(
    _ name: String, type: String = "1x_H100-SXM_SECURE", region: String = "US-TX-3", spot: Bool = false
) -> InstanceRequest {
    request(name, region: region, machineType: type, cpu: 8000, memoryGiB: 64, gpus: 1, spot: spot)
}

@Suite("RunPod driver")
struct RunPodDriverTests {
    @Test("on-demand: values travel as variables, the key as a Bearer header; the pod runs once its container is up")
    func onDemand() async throws {
        try await withRunPod { fake, driver, _ in
            let made = try await driver.provision(runPodRequest("fabric-wl-r-1"))
            #expect(made.state == .pending && made.stateReason == "RUNNING, container not up yet")
            #expect(
                made.name == "fabric-wl-r-1" && made.region == "US-TX-3" && made.machineType == "1x_H100-SXM_SECURE")
            #expect(made.labels == ["fabric-owner": "fabric", "fabric-workload": "wl-1"] && !made.spot)
            let pod = try #require(fake.pod(named: "fabric-wl-r-1"))
            #expect(made.id == pod.id)
            #expect(pod.gpuTypeId == "NVIDIA H100 80GB HBM3" && pod.gpuCount == 1 && pod.cloudType == "SECURE")
            #expect(pod.dataCenterId == "US-TX-3" && pod.imageName == "ghcr.io/acme/train:1")
            #expect(pod.minVcpuCount == 8 && pod.minMemoryInGb == 64 && pod.dockerArgs == "python train.py")
            #expect(
                pod.env == [
                    "A=1", "B=2", "FABRIC_MACHINE_TYPE=1x_H100-SXM_SECURE", "FABRIC_OWNER=fabric",
                    "FABRIC_REGION=US-TX-3",
                    "FABRIC_SPOT=false", "FABRIC_WORKLOAD=wl-1",
                ])
            #expect(fake.operations == ["myself", "podFindAndDeployOnDemand"])
            let create = try #require(fake.requests.last)
            #expect(create.headers["authorization"] == "Bearer rp-key")
            let body = try #require(FakeJSON.object(create.body))
            let query = try #require(body["query"] as? String)
            #expect(query.contains("($input: PodFindAndDeployOnDemandInput!)"))
            for value in ["fabric-wl-r-1", "ghcr.io", "US-TX-3", "H100"] { #expect(!query.contains(value)) }
            let input = try #require((body["variables"] as? [String: Any])?["input"] as? [String: Any])
            #expect(input["name"] as? String == "fabric-wl-r-1")

            fake.start("fabric-wl-r-1")
            let up = try #require(try await driver.status(name: "fabric-wl-r-1", region: "US-TX-3"))
            #expect(up.state == .running && up.address == "194.68.245.7" && up.stateReason == "RUNNING")
            #expect(fake.operations.last == "pod")  // the remembered ID, no listing
        }
    }

    @Test("the same name twice makes one pod, also from a driver that forgot the ID (a restart)")
    func idempotent() async throws {
        try await withRunPod { fake, driver, _ in
            let first = try await driver.provision(runPodRequest("fabric-wl-r-2"))
            let second = try await driver.provision(runPodRequest("fabric-wl-r-2"))
            #expect(first.id == second.id && fake.podCount == 1)
            let restarted = RunPodDriver(
                configuration: await driver.configuration, transport: CurlHTTPClient(), clock: ManualClock())
            let third = try await restarted.provision(runPodRequest("fabric-wl-r-2"))
            #expect(third.id == first.id && fake.podCount == 1)
            #expect(fake.operations == ["myself", "podFindAndDeployOnDemand", "myself", "myself"])
        }
    }

    @Test("spot: podRentInterruptable bids the offer's spot price per GPU; a reclaimed pod is preempted")
    func spot() async throws {
        try await withRunPod { fake, driver, _ in
            // Catalog: 8x_H100-SXM_SECURE in US-GA-2 has spot 21.52 per pod → 2.69 per GPU.
            _ = try await driver.provision(
                runPodRequest("fabric-wl-s-1", type: "8x_H100-SXM_SECURE", region: "US-GA-2", spot: true))
            let pod = try #require(fake.pod(named: "fabric-wl-s-1"))
            #expect(pod.interruptible && pod.bidPerGpu == 2.69 && pod.gpuCount == 8)
            #expect(fake.operations.last == "podRentInterruptable")
            // After live prices are read, the bid follows them (fake: 2.09 per GPU).
            _ = try await driver.offers()
            _ = try await driver.provision(
                runPodRequest("fabric-wl-s-2", type: "8x_H100-SXM_SECURE", region: "US-GA-2", spot: true))
            #expect(fake.pod(named: "fabric-wl-s-2")?.bidPerGpu == 2.09)
            fake.start("fabric-wl-s-1")
            #expect(try await driver.status(name: "fabric-wl-s-1", region: "US-GA-2")?.state == .running)
            fake.interrupt("fabric-wl-s-1")
            let reclaimed = try #require(try await driver.status(name: "fabric-wl-s-1", region: "US-GA-2"))
            #expect(reclaimed.state == .preempted && reclaimed.spot)
            // No spot price known (catalog 1x_H100_SECURE has none): refused before any call.
            let none = await providerError {
                _ = try await driver.provision(runPodRequest("fabric-wl-s-3", type: "1x_H100_SECURE", spot: true))
            }
            #expect(none?.kind == .invalidRequest)
        }
    }

    @Test("capacity error (HTTP 200 with errors[]) then success once stock returns")
    func capacityThenSuccess() async throws {
        try await withRunPod { fake, driver, _ in
            fake.state.withLock { $0.stock["NVIDIA H100 80GB HBM3"] = 0 }
            let e = await providerError { _ = try await driver.provision(runPodRequest("fabric-wl-c-1")) }
            #expect(e?.kind == .capacityUnavailable)
            #expect(e?.message.contains("There are no longer any instances available") == true)
            #expect(fake.podCount == 0)
            fake.state.withLock { $0.stock["NVIDIA H100 80GB HBM3"] = 1 }
            let made = try await driver.provision(runPodRequest("fabric-wl-c-1"))
            #expect(made.state == .pending && fake.podCount == 1)
        }
    }

    @Test("terminate: gone afterwards; an unknown name and a pod removed behind the driver's back are success")
    func terminate() async throws {
        try await withRunPod { fake, driver, _ in
            _ = try await driver.provision(runPodRequest("fabric-wl-t-1"))
            try await driver.terminate(name: "fabric-wl-t-1", region: "US-TX-3")
            #expect(fake.podCount == 0)
            #expect(try await driver.status(name: "fabric-wl-t-1", region: "US-TX-3") == nil)
            try await driver.terminate(name: "fabric-wl-never", region: "US-TX-3")
            _ = try await driver.provision(runPodRequest("fabric-wl-t-2"))
            fake.remove("fabric-wl-t-2")
            try await driver.terminate(name: "fabric-wl-t-2", region: "US-TX-3")  // podTerminate: "Pod not found"
            #expect(fake.operations.suffix(2) == ["podFindAndDeployOnDemand", "podTerminate"])
        }
    }

    @Test("list keeps pods named with the prefix and owned by this Fabric")
    func list() async throws {
        try await withRunPod { fake, driver, _ in
            _ = try await driver.provision(runPodRequest("fabric-wl-l-1"))
            _ = try await driver.provision(runPodRequest("fabric-wl-l-2", type: "1x_RTX4090_SECURE"))
            fake.addPod(name: "my-notebook")
            fake.addPod(name: "fabric-elsewhere", env: ["FABRIC_OWNER=another-fabric"])
            let listed = try await driver.list()
            #expect(listed.map(\.name).sorted() == ["fabric-wl-l-1", "fabric-wl-l-2"])
            #expect(listed.allSatisfy { $0.labels[InstanceRequest.ownerLabel] == "fabric" })
            #expect(listed.map(\.machineType).sorted() == ["1x_H100-SXM_SECURE", "1x_RTX4090_SECURE"])
        }
    }

    @Test("a wrong key is authFailed (HTTP 401)")
    func unauthorized() async throws {
        try await withRunPod(configure: { $0.apiKey = "wrong" }) { _, driver, _ in
            let e = await providerError { _ = try await driver.list() }
            #expect(e?.kind == .authFailed && e?.code == "401")
        }
    }

    @Test("429 with Retry-After is rateLimited; 5xx is transient; validation errors are invalidRequest")
    func httpErrors() async throws {
        try await withRunPod { fake, driver, _ in
            fake.faults.add(
                .respond(
                    status: 429, headers: ["Retry-After": "5"], body: "{\"errors\":[{\"message\":\"slow down\"}]}"),
                matching: "myself")
            let throttled = await providerError { _ = try await driver.list() }
            #expect(throttled?.kind == .rateLimited && throttled?.retryAfter == .seconds(5))
            fake.faults.add(.respond(status: 502, headers: [:], body: "<html>bad gateway</html>"), matching: "myself")
            let gateway = await providerError { _ = try await driver.list() }
            #expect(gateway?.kind == .transient && gateway?.code == "502")
            fake.faults.add(
                .respond(
                    status: 200, headers: [:],
                    body: FakeRunPod.errorBody("Something went wrong", path: "myself", code: "INTERNAL_SERVER_ERROR")),
                matching: "myself")
            let internalError = await providerError { _ = try await driver.list() }
            #expect(internalError?.kind == .transient && internalError?.code == "INTERNAL_SERVER_ERROR")
            fake.faults.add(
                .respond(
                    status: 400, headers: [:],
                    body: FakeRunPod.errorBody(
                        "Cannot query field \"foo\" on type \"Pod\".", code: "GRAPHQL_VALIDATION_FAILED")),
                matching: "myself")
            let invalid = await providerError { _ = try await driver.list() }
            #expect(invalid?.kind == .invalidRequest && invalid?.code == "GRAPHQL_VALIDATION_FAILED")
            let listed = try await driver.list()
            #expect(listed.isEmpty)
        }
    }

    @Test("malformed JSON and slow answers are transient")
    func malformedAndSlow() async throws {
        try await withRunPod(configure: { $0.requestTimeout = .milliseconds(500) }) { fake, driver, _ in
            fake.faults.add(.malformedJSON, matching: "myself")
            let malformed = await providerError { _ = try await driver.list() }
            #expect(malformed?.kind == .transient && malformed?.code == RunPodDriver.malformedCode)
            fake.faults.add(.delay(.milliseconds(1500)), matching: "myself")
            let slow = await providerError { _ = try await driver.list() }
            #expect(slow?.kind == .transient && slow?.code == ProviderHTTP.transportErrorCode)
            fake.faults.add(.delay(.milliseconds(100)), matching: "myself")
            let listed = try await driver.list()
            #expect(listed.isEmpty)
        }
    }

    @Test("offers: live prices from gpuTypes over the catalog's machine types; the catalog when gpuTypes fails")
    func offers() async throws {
        try await withRunPod { fake, driver, clock in
            let live = try await driver.offers()
            #expect(live.origin == "live" && live.asOf == clock.now())
            func row(_ region: String, _ type: String) -> Offer? {
                live.offers.first { $0.region == region && $0.machineType == type }
            }
            #expect(row("US-TX-3", "1x_H100-SXM_SECURE")?.onDemandPerHour == 2.69)
            #expect(row("US-TX-3", "1x_H100-SXM_SECURE")?.spotPerHour == 2.09)
            #expect(row("US-GA-2", "8x_H100-SXM_SECURE")?.onDemandPerHour == 2.69 * 8)
            #expect(row("US-TX-3", "1x_A100-80GB_SECURE")?.onDemandPerHour == 1.49)
            #expect(row("US-TX-3", "1x_A100-80GB_SECURE")?.spotPerHour == nil)
            #expect(row("US-TX-3", "1x_L4_SECURE") == nil)  // not in the fake's gpuTypes: stays a catalog row
            #expect(live.offers.allSatisfy { $0.source == "live" && $0.asOf == ProviderHTTP.date(clock.now()) })
            fake.faults.add(.respond(status: 500, headers: [:], body: "oops"), matching: "gpuTypes")
            let catalog = try await driver.offers()
            #expect(catalog.origin == "catalog" && catalog.offers == OfferCatalog.bundled.offers(provider: .runpod))
            #expect(catalog.asOf.rfc3339.hasPrefix("2025-01-01"))
        }
    }
}

@Suite("RunPod mapping")
struct RunPodMappingTests {
    @Test(
        "GraphQL error messages map to kinds",
        arguments: [
            (FakeRunPod.noInstances, nil as String?, ProviderErrorKind.capacityUnavailable),
            ("There are no longer any instances available with enough disk space.", nil, .capacityUnavailable),
            ("There are not enough free GPUs on the host machine to start this pod.", nil, .capacityUnavailable),
            (FakeRunPod.noInstances, "INTERNAL_SERVER_ERROR", .capacityUnavailable),
            ("Your balance is too low to rent this pod", nil, .quotaExceeded),
            ("Unauthorized", nil, .authFailed),
            ("Pod not found", nil, .notFound),
            ("Something went wrong. Please try again later.", "INTERNAL_SERVER_ERROR", .transient),
            ("Cannot query field \"x\" on type \"Pod\".", "GRAPHQL_VALIDATION_FAILED", .invalidRequest),
            ("Rate limit exceeded", nil, .rateLimited),
        ])
    func kinds(message: String, code: String?, kind: ProviderErrorKind) throws {
        let body = FakeRunPod.errorBody(message, path: "podFindAndDeployOnDemand", code: code)
        let envelope = try JSONDecoder().decode(RunPodWire.Envelope<RunPodWire.Created>.self, from: Data(body.utf8))
        let error = try #require(envelope.errors?.first)
        #expect(error.path == ["podFindAndDeployOnDemand"])
        #expect(RunPodMapping.kind(of: error) == kind)
        let mapped = RunPodMapping.error(
            HTTPResponse(status: 200, body: Data(body.utf8)), errors: envelope.errors, provider: "runpod",
            doing: "create pod p", now: testNow)
        #expect(mapped.kind == kind && mapped.message.contains(message))
    }

    @Test("machine types and docker args")
    func machineTypes() {
        let t = RunPodMachineType("8x_A100-80GB-SXM_SECURE")
        #expect(t?.gpuCount == 8 && t?.gpu == "A100-80GB-SXM" && t?.cloud == "SECURE")
        #expect(RunPodMachineType("cpu3c-2-4") == nil && RunPodMachineType("8x_H100_MOON") == nil)
        #expect(
            RunPodMapping.dockerArgs(["bash", "-c", "echo 'hi' && sleep 1", "--lr=0.1"])
                == "bash -c 'echo '\\''hi'\\'' && sleep 1' --lr=0.1")
        // Every catalog GPU machine type has a gpuTypeId.
        for offer in OfferCatalog.bundled.offers(provider: .runpod) where offer.gpuCount > 0 {
            #expect(RunPodMachineType(offer.machineType).flatMap { RunPodMachineType.gpuTypeIDs[$0.gpu] } != nil)
        }
    }

    @Test("a pod's env carries its region, machine type, spot flag and labels back")
    func podMapping() throws {
        let json = """
            {"id":"abc","name":"fabric-x-1","desiredStatus":"EXITED","env":["FABRIC_SPOT=false","FABRIC_REGION=EU-RO-1",
             "FABRIC_MACHINE_TYPE=1x_RTX4090_SECURE","FABRIC_OWNER=fabric","FABRIC_WORKLOAD=wl-9"],"runtime":null}
            """
        let pod = try JSONDecoder().decode(RunPodWire.Pod.self, from: Data(json.utf8))
        let i = RunPodMapping.instance(from: pod, provider: "runpod")
        #expect(i.state == .terminated && !i.spot && i.region == "EU-RO-1" && i.machineType == "1x_RTX4090_SECURE")
        #expect(i.labels == ["fabric-owner": "fabric", "fabric-workload": "wl-9"])
        let pairs = """
            {"id":"d","name":"n","desiredStatus":"TERMINATED","env":[{"key":"FABRIC_SPOT","value":"true"}]}
            """
        let p2 = try JSONDecoder().decode(RunPodWire.Pod.self, from: Data(pairs.utf8))
        #expect(p2.env(RunPodMapping.spotEnv) == "true")
        #expect(RunPodMapping.instance(from: p2, provider: "runpod").state == .terminated)
    }

    @Test("the configuration's description hides the key")
    func redacted() {
        let c = RunPodConfiguration(apiKey: "rp_SECRET123")
        #expect(!c.description.contains("SECRET") && c.description.contains("****"))
    }
}
