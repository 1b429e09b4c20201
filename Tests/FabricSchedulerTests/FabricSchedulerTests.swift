import FabricCore
import Testing

@testable import FabricScheduler

// Builders, after Kubernetes' st.MakePod(): small, chainable, readable in tables.
extension NodeInfo {
    static func node(_ id: String, cpu: Int64 = 8, memGi: Int64 = 32) -> NodeInfo {
        NodeInfo(
            id: id, name: id, capacity: Resources(cpuMillis: cpu * 1000, memoryBytes: memGi << 30),
            registeredAt: Timestamp(millisecondsSinceEpoch: 0))
    }
    func gpus(_ n: Int, _ model: String) -> NodeInfo {
        var c = self
        c.capacity.gpu = GPUSpec(count: n, model: model)
        return c
    }
    func price(_ p: Double) -> NodeInfo {
        var c = self
        c.pricePerHour = p
        return c
    }
    func state(_ s: NodeState) -> NodeInfo {
        var c = self
        c.state = s
        return c
    }
    func runtimes(_ r: [RuntimeKind]) -> NodeInfo {
        var c = self
        c.runtimes = r
        return c
    }
}

func offer(
    _ provider: String, _ region: String, _ type: String, cpu: Int = 8, memGi: Double = 64, gpu: String? = nil,
    gpus: Int = 0, price: Double, spot: Double? = nil
) -> Offer {
    Offer(
        provider: provider, region: region, machineType: type, vcpus: cpu, memoryGiB: memGi, gpuModel: gpu,
        gpuCount: gpus, gpuMemoryGiB: nil, onDemandPerHour: price, spotPerHour: spot, source: "test",
        asOf: "2026-01-01")
}

func spec(
    cpu: Int64 = 1000, memGi: Int64 = 1, gpus: Int = 0, gpu: String? = nil, image: String? = nil,
    providers: [String]? = nil, regions: [String]? = nil, spot: SpotPolicy = .allowed, maxPrice: Double? = nil
) -> WorkloadSpec {
    WorkloadSpec(
        name: "w", image: image, command: image == nil ? ["true"] : nil,
        resources: Resources(
            cpuMillis: cpu, memoryBytes: memGi << 30, gpu: gpus > 0 ? GPUSpec(count: gpus, model: gpu) : nil),
        placement: PlacementConstraints(providers: providers, regions: regions, spot: spot, maxPricePerHour: maxPrice))
}

let h100Offers = [
    offer("runpod", "US-KS-2", "H100-SXM", cpu: 16, memGi: 125, gpu: "H100", gpus: 1, price: 2.99, spot: 2.69),
    offer("runpod", "US-KS-2", "H100-PCIE", cpu: 16, memGi: 125, gpu: "H100", gpus: 1, price: 2.39),
    offer("coreweave", "LGA1", "H100_NVLINK_80GB", cpu: 16, memGi: 128, gpu: "H100", gpus: 1, price: 4.78),
    offer("aws", "us-east-1", "p5.48xlarge", cpu: 192, memGi: 2048, gpu: "H100", gpus: 8, price: 98.32),
    offer("aws", "us-east-1", "m5.2xlarge", cpu: 8, memGi: 32, price: 0.384, spot: 0.15),
]
let allProviders: Set<String> = ["runpod", "coreweave", "aws", "gcp"]

@Suite struct PlacementStackTests {
    let stack = PlacementStack()

    @Test func cheapestFeasibleOfferWins() {
        let s = PlacementSnapshot(nodes: [], offers: h100Offers, enabledProviders: allProviders)
        let d = stack.select(s, spec(cpu: 8000, memGi: 64, gpus: 1, gpu: "H100"))
        #expect(d.placement?.machineType == "H100-PCIE")
        #expect(d.placement?.pricePerHour == 2.39)
        // Feasible first, by price; then the filtered ones with reasons.
        let feasible = d.candidates.prefix { $0.feasible }.map(\.pricePerHour)
        #expect(feasible == [2.39, 2.69, 2.99, 4.78, 98.32])
        #expect(d.candidates.filter { !$0.feasible }.allSatisfy { $0.reason != nil })
        #expect(d.filtered[Reason.insufficientGPU] == 2)  // m5.2xlarge (no GPUs), on demand and spot
    }

    @Test(arguments: [
        (spec(gpus: 1, gpu: "A100"), Reason.gpuTypeMismatch),
        (spec(gpus: 2, gpu: "H100"), Reason.insufficientGPU),
        (spec(cpu: 400_000, gpus: 1, gpu: "H100"), Reason.insufficientCPU),
        (spec(memGi: 4096, gpus: 1, gpu: "H100"), Reason.insufficientMemory),
        (spec(gpus: 1, gpu: "H100", providers: ["gcp"]), Reason.providerNotAllowed),
        (spec(gpus: 1, gpu: "H100", regions: ["eu-west-1"]), Reason.regionNotAllowed),
        (spec(gpus: 1, gpu: "H100", maxPrice: 1.0), Reason.overMaxPrice),
    ])
    func nothingFitsExplainsWhy(workload: WorkloadSpec, dominant: String) {
        let s = PlacementSnapshot(
            nodes: [], offers: h100Offers.filter { $0.gpuCount == 1 }, enabledProviders: allProviders)
        let d = stack.select(s, workload)
        #expect(d.placement == nil)
        #expect(d.filtered.max { $0.value < $1.value }?.key == dominant)
    }

    @Test func disabledProvidersAreFiltered() {
        let s = PlacementSnapshot(nodes: [], offers: h100Offers, enabledProviders: ["coreweave"])
        let d = stack.select(s, spec(gpus: 1, gpu: "H100"))
        #expect(d.placement?.provider == "coreweave")
        #expect(d.candidates.contains { $0.provider == "runpod" && $0.reason == Reason.providerDisabled })
    }

    @Test(arguments: [
        (SpotPolicy.never, 0.384, false), (SpotPolicy.allowed, 0.15, true), (SpotPolicy.required, 0.15, true),
    ])
    func spotPolicy(policy: SpotPolicy, price: Double, spot: Bool) {
        let s = PlacementSnapshot(nodes: [], offers: h100Offers, enabledProviders: allProviders)
        let d = stack.select(s, spec(spot: policy))
        #expect(d.placement?.pricePerHour == price)
        #expect(d.placement?.spot == spot)
    }

    @Test func familyNameMatchesBothMemorySizes() {
        let offers = [
            offer("gcp", "us-central1", "a2-highgpu-1g", gpu: "A100-40GB", gpus: 1, price: 3.67),
            offer("runpod", "US", "A100-80GB-PCIE", gpu: "A100-80GB", gpus: 1, price: 1.64),
        ]
        let s = PlacementSnapshot(nodes: [], offers: offers, enabledProviders: allProviders)
        #expect(stack.select(s, spec(gpus: 1, gpu: "A100")).placement?.pricePerHour == 1.64)
        #expect(stack.select(s, spec(gpus: 1, gpu: "A100-40GB")).placement?.pricePerHour == 3.67)
    }

    @Test func freeLocalNodeBeatsOffers() {
        let s = PlacementSnapshot(nodes: [.node("local")], offers: h100Offers, enabledProviders: allProviders)
        let d = stack.select(s, spec())
        #expect(d.placement?.node == "local")
        #expect(d.placement?.pricePerHour == 0)
    }

    @Test func nodeSharesItsPrice() {
        let n = NodeInfo.node("n1", cpu: 8, memGi: 32).price(8.0)
        let s = PlacementSnapshot(nodes: [n], includeOffers: false)
        // 2 of 8 CPUs is the dominant share (1 of 32 GiB is less): 8 $/h * 0.25.
        #expect(stack.select(s, spec(cpu: 2000, memGi: 1)).placement?.pricePerHour == 2.0)
    }

    @Test func bestFitAvoidsStrandingGPUs() {
        let big = NodeInfo.node("big", cpu: 64, memGi: 512).gpus(8, "H100")
        let small = NodeInfo.node("small", cpu: 16, memGi: 64).gpus(1, "H100")
        let s = PlacementSnapshot(nodes: [big, small], includeOffers: false)
        #expect(stack.select(s, spec(gpus: 1, gpu: "H100")).placement?.node == "small")
    }

    @Test func unschedulableNodesAndMissingRuntimesAreFiltered() {
        let s = PlacementSnapshot(
            nodes: [.node("a").state(.draining), .node("b").runtimes([.process])], includeOffers: false)
        let d = stack.select(s, spec(image: "busybox"))
        #expect(d.placement == nil)
        #expect(d.filtered == [Reason.nodeNotReady: 1, Reason.runtimeUnavailable: 1])
    }

    @Test func unavailableOffersAreSkipped() {
        var s = PlacementSnapshot(nodes: [], offers: h100Offers, enabledProviders: allProviders)
        s.unavailableOffers = [OfferKey(provider: "runpod", region: "US-KS-2", machineType: "H100-PCIE", spot: false)]
        let d = stack.select(s, spec(gpus: 1, gpu: "H100", spot: .never))
        #expect(d.placement?.machineType == "H100-SXM")
        #expect(d.filtered[Reason.offerUnavailable] == 1)
    }

    @Test func batchNeverOverCommits() {
        let s = PlacementSnapshot(nodes: [.node("a", cpu: 4), .node("b", cpu: 2)], includeOffers: false)
        let (decisions, after) = stack.selectBatch(s, Array(repeating: spec(cpu: 1000), count: 10))
        #expect(decisions.filter { $0.placement != nil }.count == 6)
        #expect(decisions.filter { $0.placement == nil }.allSatisfy { $0.filtered[Reason.insufficientCPU] == 2 })
        for n in after.nodes { #expect(n.allocated.cpuMillis <= n.capacity.cpuMillis) }
    }

    /// Seeded property run: the placement always equals the brute-force cheapest feasible candidate.
    @Test(arguments: 1...5) func matchesBruteForce(seed: UInt64) {
        var rng = SplitMix64(seed: seed)
        let models = ["H100", "A100-80GB", "L4", nil]
        for _ in 0..<200 {
            var offers: [Offer] = []
            for i in 0..<Int.random(in: 1...30, using: &rng) {
                let m = models.randomElement(using: &rng)!
                let price = Double(Int.random(in: 10...5000, using: &rng)) / 100
                offers.append(
                    offer(
                        ["aws", "gcp", "runpod"].randomElement(using: &rng)!, "r\(i % 3)", "t\(i)",
                        cpu: Int.random(in: 2...64, using: &rng), memGi: Double(Int.random(in: 4...512, using: &rng)),
                        gpu: m, gpus: m == nil ? 0 : Int.random(in: 1...8, using: &rng), price: price,
                        spot: Bool.random(using: &rng) ? price / 2 : nil))
            }
            let w = spec(
                cpu: Int64.random(in: 500...32000, using: &rng), memGi: Int64.random(in: 1...256, using: &rng),
                gpus: Int.random(in: 0...4, using: &rng), gpu: models.randomElement(using: &rng)!,
                spot: SpotPolicy.allCases.randomElement(using: &rng)!)
            let s = PlacementSnapshot(nodes: [], offers: offers, enabledProviders: ["aws", "gcp", "runpod"])
            let d = stack.select(s, w)
            // Independent brute force: every (offer, market) that fits, min price.
            var best: Double? = nil
            for o in offers {
                for spot in [false, true] {
                    if spot && o.spotPerHour == nil { continue }
                    if w.placement.spot == .never && spot { continue }
                    if w.placement.spot == .required && !spot { continue }
                    if Int64(o.vcpus) * 1000 < w.resources.cpuMillis { continue }
                    if Int64(o.memoryGiB * 1_073_741_824) < w.resources.memoryBytes { continue }
                    if let g = w.resources.gpu {
                        if o.gpuCount < g.count { continue }
                        if let m = g.model, !(o.gpuModel.map { GPUModel.satisfies(offered: $0, requested: m) } ?? false)
                        {
                            continue
                        }
                    }
                    let p = spot ? o.spotPerHour! : o.onDemandPerHour
                    best = min(best ?? p, p)
                }
            }
            #expect(d.placement?.pricePerHour == best)
        }
    }
}
