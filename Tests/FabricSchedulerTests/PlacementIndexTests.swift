import FabricCore
import FabricProviders
import Testing

@testable import FabricScheduler

/// Random fleets, workloads and changes, drawn from a seed: the index must answer exactly what `select` answers.
struct RandomFleet {
    var rng: SplitMix64

    init(seed: UInt64) { rng = SplitMix64(seed: seed) }

    mutating func pick<T>(_ xs: [T]) -> T { xs[Int(rng.next() % UInt64(xs.count))] }
    mutating func chance(_ p: Double) -> Bool { Double(rng.next() % 10_000) < p * 10_000 }

    static let shapes: [(cpu: Int64, memGi: Int64, gpus: Int, model: String?, price: Double)] = [
        (4, 16, 0, nil, 0), (8, 32, 0, nil, 0.4), (16, 64, 0, nil, 0.8), (16, 64, 0, nil, 0.8),
        (16, 125, 1, "H100", 2.99), (32, 250, 2, "H100", 5.98), (96, 1024, 8, "A100-80GB", 16.4),
        (8, 32, 1, "L4", 0.7), (48, 192, 4, "L40S", 4.1), (8, 32, 1, "A100-40GB", 1.1),
    ]
    static let regions = ["us-east-1", "us-west-2", "eu-west-1"]
    static let providers = ["local", "aws", "runpod"]

    mutating func node(_ i: Int) -> NodeInfo {
        let s = pick(Self.shapes)
        var n = NodeInfo(
            id: "n\(i)", name: "n\(i)", provider: pick(Self.providers), region: pick(Self.regions),
            machineType: "m\(s.cpu)-\(s.gpus)",
            capacity: Resources(
                cpuMillis: s.cpu * 1000, memoryBytes: s.memGi << 30,
                gpu: s.gpus > 0 ? GPUSpec(count: s.gpus, model: s.model) : nil),
            runtimes: chance(0.8) ? [.process, .container] : [.process], pricePerHour: s.price,
            spot: chance(0.2), state: chance(0.9) ? .ready : pick([.suspect, .draining, .lost]),
            registeredAt: Timestamp(millisecondsSinceEpoch: 0))
        if chance(0.5) { n.allocated = Resources(cpuMillis: s.cpu * 1000 / 2, memoryBytes: (s.memGi << 30) / 4) }
        return n
    }

    mutating func workload() -> WorkloadSpec {
        let gpus = pick([0, 0, 0, 1, 1, 2, 4, 8])
        let model: String? = gpus > 0 ? pick([nil, "H100", "A100", "A100-80GB", "L4", "L40S", "B200"]) : nil
        return WorkloadSpec(
            name: "w", image: chance(0.3) ? "img:1" : nil, command: ["true"],
            resources: Resources(
                cpuMillis: pick([100, 500, 1000, 2000, 4000, 8000, 16000]),
                memoryBytes: pick([1, 4, 16, 64, 200]) << 30,
                gpu: gpus > 0 ? GPUSpec(count: gpus, model: model) : nil),
            placement: PlacementConstraints(
                providers: chance(0.2) ? [pick(Self.providers + ["gcp", "coreweave"])] : nil,
                regions: chance(0.2) ? [pick(Self.regions + ["US-KS-2"])] : nil,
                spot: pick([.allowed, .allowed, .never, .required]),
                maxPricePerHour: chance(0.2) ? pick([0.5, 2, 3, 10]) : nil))
    }
}

struct PlacementIndexTests {
    static let offers = OfferCatalog.bundled.offers
    static let enabled: Set<String> = ["runpod", "aws", "gcp"]

    /// Drives the index and a plain snapshot through the same changes and compares every answer with `select`.
    @Test(arguments: [1, 2, 3, 4, 5, 6] as [UInt64])
    func agreesWithSelectOnRandomFleets(seed: UInt64) {
        var r = RandomFleet(seed: seed)
        let nodes = (0..<(20 + Int(seed) * 15)).map { r.node($0) }
        var reference = PlacementSnapshot(
            nodes: nodes.sorted { $0.id < $1.id }, offers: seed % 3 == 0 ? [] : Self.offers,
            enabledProviders: Self.enabled, includeOffers: seed % 3 != 0)
        var index = PlacementIndex(snapshot: reference)
        let stack = PlacementStack()
        var placedOnNodes = 0
        var placements: [(String, Resources)] = []
        for step in 0..<400 {
            let w = r.workload()
            let want = stack.select(reference, w).placement
            #expect(index.place(w) == want, "seed \(seed) step \(step): \(w.resources) \(w.placement)")
            if let nodeID = want?.node, let i = reference.nodes.firstIndex(where: { $0.id == nodeID }) {
                reference.nodes[i].allocated = reference.nodes[i].allocated.adding(w.resources)
                index.allocate(w.resources, on: nodeID)
                placements.append((nodeID, w.resources))
                placedOnNodes += 1
            }
            // Now and then: a workload ends, a node changes state, joins or leaves, an offer fails.
            if r.chance(0.2), !placements.isEmpty {
                let (nodeID, res) = placements.remove(at: Int(r.rng.next() % UInt64(placements.count)))
                if let i = reference.nodes.firstIndex(where: { $0.id == nodeID }) {
                    reference.nodes[i].allocated = reference.nodes[i].allocated.subtracting(res)
                    index.release(res, on: nodeID)
                }
            }
            if r.chance(0.05), !reference.nodes.isEmpty {
                let i = Int(r.rng.next() % UInt64(reference.nodes.count))
                reference.nodes[i].state = r.pick([.ready, .ready, .suspect, .draining])
                index.upsert(reference.nodes[i])
            }
            if r.chance(0.03) {
                let n = r.node(1000 + step)
                reference.nodes.append(n)
                reference.nodes.sort { $0.id < $1.id }
                index.upsert(n)
            }
            if r.chance(0.02), !reference.nodes.isEmpty {
                let n = reference.nodes.remove(at: Int(r.rng.next() % UInt64(reference.nodes.count)))
                placements.removeAll { $0.0 == n.id }
                index.remove(nodeID: n.id)
            }
            if r.chance(0.05), reference.includeOffers {
                let o = r.pick(Self.offers)
                reference.unavailableOffers.insert(
                    OfferKey(provider: o.provider, region: o.region, machineType: o.machineType, spot: r.chance(0.5)))
                index.setUnavailableOffers(reference.unavailableOffers)
            }
        }
        #expect(placedOnNodes > 20, "the fleet should take some of the workloads")
        #expect(index.nodeCount == reference.nodes.count)
        for n in reference.nodes { #expect(index.node(n.id) == n) }
    }

    @Test func identicalNodesBreakTiesByID() {
        let nodes = (0..<5).map { NodeInfo.node("n\(4 - $0)").price(1) }
        let index = PlacementIndex(snapshot: PlacementSnapshot(nodes: nodes, includeOffers: false))
        #expect(index.place(spec())?.node == "n0")
    }

    @Test func fullClassesAreSkippedAndReleasesMakeRoomAgain() {
        var index = PlacementIndex(
            snapshot: PlacementSnapshot(nodes: [.node("a", cpu: 2), .node("b", cpu: 2)], includeOffers: false))
        let w = spec(cpu: 2000)
        #expect(index.place(w)?.node == "a")
        index.allocate(w.resources, on: "a")
        #expect(index.place(w)?.node == "b")
        index.allocate(w.resources, on: "b")
        #expect(index.place(w) == nil)
        index.release(w.resources, on: "b")
        #expect(index.place(w)?.node == "b")
    }

    @Test func theSnapshotRoundTrips() {
        let snapshot = PlacementSnapshot(
            nodes: [.node("b"), .node("a").gpus(1, "H100")], offers: h100Offers, enabledProviders: ["runpod"])
        let index = PlacementIndex(snapshot: snapshot)
        #expect(index.snapshot.nodes.map(\.id) == ["a", "b"])
        #expect(index.snapshot.offers == h100Offers)
        #expect(index.place(spec(gpus: 1, gpu: "H100"))?.node == "a")
    }
}
