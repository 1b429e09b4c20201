// The CoreWeave driver (the Kubernetes driver with CoreWeave's labels and catalog) against the fake API server.
import FabricCore
import Foundation
import Testing

@testable import FabricProviders

@Suite("CoreWeave driver")
struct CoreWeaveDriverTests {
    /// A CoreWeave node: GPU class and region labels, the GPU taint.
    func node(_ name: String, gpuClass: String, region: String, gpus: Int = 8) -> FakeNode {
        .gpu(
            name, gpus: gpus,
            labels: [
                "gpu.nvidia.com/class": gpuClass, "topology.kubernetes.io/region": region,
                "gpu.nvidia.com/model": gpuClass,
            ])
    }

    func withCoreWeave(_ body: (FakeKubernetes, KubernetesDriver) async throws -> Void) async throws {
        let clock = ManualClock()
        let fake = FakeKubernetes(clock: clock, token: "cw-token")
        try fake.start()
        let driver = KubernetesDriver.coreWeave(
            connection: KubernetesConnection(server: fake.baseURL, namespace: "tenant-acme", token: "cw-token"),
            transport: CurlHTTPClient(), clock: clock)
        do {
            try await body(fake, driver)
        } catch {
            await fake.stop()
            throw error
        }
        await fake.stop()
    }

    @Test("offers are the catalog's coreweave rows with their as-of date")
    func offers() async throws {
        try await withCoreWeave { _, driver in
            #expect(driver.name == .coreweave)
            let list = try await driver.offers()
            #expect(list.origin == "catalog")
            #expect(list.offers == OfferCatalog.bundled.offers(provider: .coreweave))
            #expect(list.offers.contains { $0.machineType == "H100_NVLINK_80GB-x8" && $0.region == "LAS1" })
            #expect(list.asOf.rfc3339.hasPrefix("2023-01-01"))
        }
    }

    @Test("a pod is pinned to the offer's GPU class and region: the wrong region never fits, the right one does")
    func classAndRegionAffinity() async throws {
        try await withCoreWeave { fake, driver in
            fake.addNode(node("lga1-h100", gpuClass: "H100_NVLINK_80GB", region: "LGA1"))
            fake.addNode(node("las1-a40", gpuClass: "A40", region: "LAS1"))
            let req = request("fabric-wl-cw-1", region: "LAS1", machineType: "H100_NVLINK_80GB-x8", gpus: 8)
            let pending = try await driver.provision(req)
            #expect(pending.state == .pending && pending.provider == "coreweave")
            #expect(
                pending.stateReason?.hasPrefix(
                    "Unschedulable: 0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector.")
                    == true)
            let sent = try #require(fake.requests.first { $0.method == "POST" })
            #expect(sent.path == "/api/v1/namespaces/tenant-acme/pods")
            try await driver.terminate(name: "fabric-wl-cw-1", region: "LAS1")
            fake.addNode(node("las1-h100", gpuClass: "H100_NVLINK_80GB", region: "LAS1"))
            let running = try await driver.provision(req)
            #expect(running.state == .running && running.region == "LAS1")
            #expect(fake.pod("fabric-wl-cw-1", namespace: "tenant-acme")?.nodeName == "las1-h100")
        }
    }
}
