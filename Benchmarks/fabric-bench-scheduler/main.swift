// fabric-bench-scheduler: placement speed of the production scheduler (`make bench-scheduler`).
//
// For each fleet size (1,000, 5,000 and 10,000 nodes built from the bundled catalog's machine types, plus every
// catalog offer as a candidate) and each fill level (10% and 90%), it keeps the fleet at that fill and places
// `--placements` workloads one after another through `PlacementIndex` on one core: each decision is placed,
// charged to its node, and the oldest running workload is released, so the fill stays level. It prints
// placements/s and the p50/p99 of one decision, checks every `--check-every`-th decision against the brute-force
// reference (`PlacementStack.select` over the same snapshot: the same placement, or the run fails), and times
// that reference on a few decisions, side by side.
//
//   fabric-bench-scheduler [--placements 100000] [--nodes 1000,5000,10000] [--fills 10,90] [--check-every 1000]
//                          [--seed 1]
import FabricCore
import FabricProviders
import FabricScheduler
import Foundation

/// Bounds on the options, so a typo cannot ask for hours.
let placementsMax = 10_000_000
let nodesMax = 200_000
/// How many decisions the brute-force reference is timed on, per row.
let referenceSamples = 50

struct Options {
    var placements = 100_000
    var nodes = [1_000, 5_000, 10_000]
    var fills = [10, 90]
    var checkEvery = 1_000
    var seed: UInt64 = 1
}

func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data("fabric-bench-scheduler: \(message)\n".utf8))
    exit(2)
}

func parseOptions(_ args: [String]) -> Options {
    var o = Options()
    var i = 0
    func value(_ name: String) -> String {
        i += 1
        guard i < args.count else { fail("\(name) needs a value") }
        return args[i]
    }
    func ints(_ name: String, _ text: String, _ range: ClosedRange<Int>) -> [Int] {
        let xs = text.split(separator: ",").map { Int($0) }
        guard !xs.isEmpty, xs.allSatisfy({ $0.map(range.contains) ?? false }) else {
            fail("\(name) takes whole numbers in \(range.lowerBound)...\(range.upperBound), got \"\(text)\"")
        }
        return xs.map { $0! }
    }
    while i < args.count {
        switch args[i] {
        case "--placements": o.placements = ints("--placements", value("--placements"), 1...placementsMax)[0]
        case "--nodes": o.nodes = ints("--nodes", value("--nodes"), 1...nodesMax)
        case "--fills": o.fills = ints("--fills", value("--fills"), 0...99)
        case "--check-every": o.checkEvery = ints("--check-every", value("--check-every"), 1...placementsMax)[0]
        case "--seed": o.seed = UInt64(ints("--seed", value("--seed"), 0...Int.max)[0])
        case "-h", "--help":
            print(
                """
                usage: fabric-bench-scheduler [--placements N] [--nodes N,N,...] [--fills PCT,PCT,...]
                                              [--check-every N] [--seed N]
                Places N workloads (default 100000) through PlacementIndex on fleets of each size (default
                1000,5000,10000 nodes plus the catalog's offers) held at each fill (default 10,90 percent), and prints
                placements/s and p50/p99 decision latency, with the brute-force PlacementStack.select beside it.
                """)
            exit(0)
        default: fail("unknown option \(args[i]) (see --help)")
        }
        i += 1
    }
    return o
}

/// A seeded draw of workloads like a real mix: mostly CPU jobs, then 1, 2, 4 and 8-GPU jobs of several models.
struct Mix {
    var rng: SplitMix64
    mutating func pick<T>(_ xs: [T]) -> T { xs[Int(rng.next() % UInt64(xs.count))] }

    mutating func workload() -> WorkloadSpec {
        let gpus = pick([0, 0, 0, 0, 0, 0, 1, 1, 2, 4, 8])
        let model: String? = gpus > 0 ? pick(["H100", "A100", "L4", "L40S", "A10G", nil]) : nil
        let cpu: Int64 = gpus > 0 ? Int64(gpus) * 4000 : pick([250, 500, 1000, 2000, 4000])
        let memGi: Int64 = gpus > 0 ? Int64(gpus) * 16 : pick([1, 2, 4, 8])
        return WorkloadSpec(
            name: "bench", command: ["true"],
            resources: Resources(
                cpuMillis: cpu, memoryBytes: memGi << 30, gpu: gpus > 0 ? GPUSpec(count: gpus, model: model) : nil),
            placement: PlacementConstraints(spot: pick([.allowed, .allowed, .never])))
    }
}

/// `count` nodes cut from the catalog's machine types, round robin, on the providers' regions and prices.
func fleet(_ count: Int, offers: [Offer]) -> [NodeInfo] {
    (0..<count).map { i in
        let o = offers[i % offers.count]
        return NodeInfo(
            id: String(format: "node-%06d", i), name: "node-\(i)", provider: o.provider, region: o.region,
            machineType: o.machineType, capacity: o.resources, runtimes: [.process, .container],
            pricePerHour: o.onDemandPerHour, registeredAt: Timestamp(millisecondsSinceEpoch: 0))
    }
}

func micros(_ d: Duration) -> Double {
    Double(d.components.seconds) * 1e6 + Double(d.components.attoseconds) / 1e12
}

func percentile(_ sorted: [Double], _ p: Double) -> Double {
    sorted.isEmpty ? 0 : sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))]
}

func cpuFill(_ index: PlacementIndex, _ nodes: [NodeInfo]) -> Double {
    var used: Int64 = 0
    var total: Int64 = 0
    for n in nodes {
        used += index.node(n.id)!.allocated.cpuMillis
        total += n.capacity.cpuMillis
    }
    return Double(used) / Double(total)
}

struct Row {
    var nodes: Int
    var fill: Int
    var measuredFill: Double
    var rate: Double
    var p50: Double
    var p99: Double
    var onNodes: Int
    var onOffers: Int
    var referenceP50: Double
}

func run(nodes count: Int, fill: Int, options: Options, offers: [Offer]) -> Row {
    let nodes = fleet(count, offers: offers)
    let snapshot = PlacementSnapshot(
        nodes: nodes, offers: offers, enabledProviders: Set(offers.map(\.provider)), includeOffers: true)
    var index = PlacementIndex(snapshot: snapshot)
    var mix = Mix(rng: SplitMix64(seed: options.seed &+ UInt64(count * 100 + fill)))
    var running: [(node: String, r: Resources)] = []
    var head = 0

    // Fill every node to about the level (each dimension drawn within 10 points of it), as earlier placements
    // would have, so free amounts differ from node to node.
    let target = Double(fill) / 100
    for n in nodes {
        func part(_ x: Int64) -> Int64 {
            let u = min(1, max(0, target + (Double(mix.rng.next() % 2001) / 10_000 - 0.1)))
            return Int64(Double(x) * u)
        }
        var used = Resources(cpuMillis: part(n.capacity.cpuMillis), memoryBytes: part(n.capacity.memoryBytes))
        if let g = n.capacity.gpu {
            used.gpu = GPUSpec(count: Int(part(Int64(g.count) * 1000) / 1000), model: g.model)
        }
        index.allocate(used, on: n.id)
    }
    let measuredFill = cpuFill(index, nodes)

    // The measured loop: place, charge, release the oldest, so the fill stays level.
    let clock = ContinuousClock()
    var latencies: [Double] = []
    latencies.reserveCapacity(options.placements)
    var onNodes = 0
    var onOffers = 0
    let stack = PlacementStack()
    for i in 0..<options.placements {
        let w = mix.workload()
        let t0 = clock.now
        let p = index.place(w)
        latencies.append(micros(clock.now - t0))
        if i % options.checkEvery == 0 {
            let want = stack.select(index.snapshot, w).placement
            guard p == want else {
                fail(
                    "decision \(i) differs from the brute-force reference: \(String(describing: p)) vs \(String(describing: want))"
                )
            }
        }
        if let node = p?.node {
            index.allocate(w.resources, on: node)
            running.append((node, w.resources))
            onNodes += 1
            if head < running.count - 1 {
                index.release(running[head].r, on: running[head].node)
                head += 1
            }
        } else if p != nil {
            onOffers += 1
        }
        if head > 100_000 {
            running.removeFirst(head)
            head = 0
        }
    }
    let total = latencies.reduce(0, +)
    latencies.sort()

    // The brute-force reference on a few decisions of the same fleet, for scale.
    let snap = index.snapshot
    var reference: [Double] = []
    for _ in 0..<referenceSamples {
        let w = mix.workload()
        let t0 = clock.now
        _ = stack.select(snap, w)
        reference.append(micros(clock.now - t0))
    }
    reference.sort()
    return Row(
        nodes: count, fill: fill, measuredFill: measuredFill, rate: Double(options.placements) / (total / 1e6),
        p50: percentile(latencies, 0.5), p99: percentile(latencies, 0.99), onNodes: onNodes, onOffers: onOffers,
        referenceP50: percentile(reference, 0.5))
}

let options = parseOptions(Array(CommandLine.arguments.dropFirst()))
let offers = OfferCatalog.bundled.offers
print(
    "fabric-bench-scheduler: \(options.placements) placements per row through PlacementIndex, one core; "
        + "\(offers.count) catalog offers are candidates too; every \(options.checkEvery)th decision checked "
        + "against PlacementStack.select")
print(
    "nodes   fill  (cpu)   placements/s    p50 us    p99 us   on nodes  on offers | select p50 us  speedup")
var rows: [Row] = []
for n in options.nodes {
    for f in options.fills {
        let r = run(nodes: n, fill: f, options: options, offers: offers)
        rows.append(r)
        print(
            String(
                format: "%-7d %3d%%  (%3.0f%%) %14.0f %9.1f %9.1f %10d %10d | %13.0f %7.0fx", r.nodes, r.fill,
                r.measuredFill * 100, r.rate, r.p50, r.p99, r.onNodes, r.onOffers, r.referenceP50,
                r.referenceP50 / max(r.p50, 0.001)))
    }
}
for n in options.nodes {
    let byFill = rows.filter { $0.nodes == n }
    if let lo = byFill.first(where: { $0.fill == options.fills.min() }),
        let hi = byFill.first(where: { $0.fill == options.fills.max() }), lo.fill != hi.fill
    {
        print(
            String(
                format: "%d nodes: the %d%%-fill rate is %.0f%% of the %d%%-fill rate", n, hi.fill,
                hi.rate / lo.rate * 100, lo.fill))
    }
}
