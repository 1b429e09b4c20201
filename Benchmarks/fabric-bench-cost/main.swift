// fabric-bench-cost: what the batch planner pays for standard batches, beside two baselines (`make bench-cost`).
//
// Each standard scenario is a seeded batch of pending workloads and no free node, so everything needs new
// machines from the bundled catalog (every provider enabled). For each it prints the $/h of
//   - BatchPlanner (several workloads share a machine where that is cheaper),
//   - one machine each (every workload on its own cheapest feasible offer: PlacementStack.select),
//   - naive (first fit on one provider, on-demand only, cheapest machine that fits when a new one is needed),
// and writes the batch and the plan's cost as one JSON line to --out, for scripts/cost-bound to compute an
// independent lower bound (the LP relaxation, with HiGHS).
//
//   fabric-bench-cost [--out FILE] [--seed N] [--scale PERCENT]
import FabricCore
import FabricProviders
import FabricScheduler
import Foundation

func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data("fabric-bench-cost: \(message)\n".utf8))
    exit(2)
}

struct Options {
    var out: String? = nil
    var seed: UInt64 = 1
    var scale = 100
    var verbose = false
}

func parseOptions(_ args: [String]) -> Options {
    var o = Options()
    var i = 0
    func value() -> String {
        i += 1
        guard i < args.count else { fail("\(args[i - 1]) needs a value") }
        return args[i]
    }
    while i < args.count {
        switch args[i] {
        case "--out": o.out = value()
        case "--seed":
            guard let s = UInt64(value()) else { fail("--seed takes a whole number") }
            o.seed = s
        case "--scale":
            guard let s = Int(value()), (1...1000).contains(s) else { fail("--scale takes 1...1000 (percent)") }
            o.scale = s
        case "--verbose": o.verbose = true
        case "-h", "--help":
            print(
                """
                usage: fabric-bench-cost [--out FILE] [--seed N] [--scale PERCENT]
                Plans standard batches with BatchPlanner and prints their $/h beside one-machine-each and a naive
                first-fit baseline; --out writes the batches as JSON lines for scripts/cost-bound (the lower bound).
                --scale resizes every batch (100 = standard).
                """)
            exit(0)
        default: fail("unknown option \(args[i]) (see --help)")
        }
        i += 1
    }
    return o
}

/// One standard scenario: how many workloads and what kind.
struct Scenario {
    var name: String
    var count: Int
    var make: (inout SplitMix64) -> WorkloadSpec
}

func pick<T>(_ xs: [T], _ rng: inout SplitMix64) -> T { xs[Int(rng.next() % UInt64(xs.count))] }

func spec(cpu: Int64, memGi: Int64, gpus: Int = 0, model: String? = nil, spot: SpotPolicy = .allowed) -> WorkloadSpec {
    WorkloadSpec(
        name: "w", command: ["true"],
        resources: Resources(
            cpuMillis: cpu, memoryBytes: memGi << 30, gpu: gpus > 0 ? GPUSpec(count: gpus, model: model) : nil),
        placement: PlacementConstraints(spot: spot))
}

let scenarios: [Scenario] = [
    Scenario(name: "cpu-services", count: 1000) { r in
        spec(cpu: pick([250, 500, 1000, 2000], &r), memGi: pick([1, 2, 4], &r), spot: .never)
    },
    Scenario(name: "cpu-batch-spot", count: 1000) { r in
        spec(cpu: pick([1000, 2000, 4000], &r), memGi: pick([2, 4, 8, 16], &r))
    },
    Scenario(name: "gpu-training", count: 300) { r in
        let g = pick([1, 1, 2, 4, 8], &r)
        return spec(cpu: Int64(g) * 4000, memGi: Int64(g) * 32, gpus: g, model: pick(["H100", "A100"], &r))
    },
    Scenario(name: "gpu-inference", count: 600) { r in
        spec(cpu: 2000, memGi: 8, gpus: 1, model: pick(["L4", "A10G", "L40S", "T4"], &r), spot: .never)
    },
    Scenario(name: "mixed", count: 1500) { r in
        if r.next() % 4 == 0 {
            let g = pick([1, 2, 4], &r)
            return spec(cpu: Int64(g) * 2000, memGi: Int64(g) * 16, gpus: g, model: pick([nil, "A100", "L40S"], &r))
        }
        return spec(cpu: pick([250, 500, 1000, 2000], &r), memGi: pick([1, 2, 4, 8], &r))
    },
]

/// First fit on one provider, on-demand only: the machines a simple autoscaler would buy.
func naiveCost(_ workloads: [WorkloadSpec], provider: String, offers: [Offer]) -> Double? {
    let own = offers.filter { $0.provider == provider }.sorted { $0.onDemandPerHour < $1.onDemandPerHour }
    var open: [(free: Resources, model: String?)] = []
    var cost = 0.0
    for w in workloads {
        let r = w.resources
        let model = r.gpu?.model
        func modelOK(_ offered: String?) -> Bool {
            guard r.gpuCount > 0, let model else { return true }
            guard let offered else { return false }
            return GPUModel.satisfies(offered: offered, requested: model)
        }
        if let i = open.firstIndex(where: { $0.free.fits(r) && modelOK($0.model) }) {
            open[i].free = open[i].free.subtracting(r)
            continue
        }
        guard let o = own.first(where: { $0.resources.fits(r) && modelOK($0.gpuModel) }) else { return nil }
        open.append((o.resources.subtracting(r), o.gpuModel))
        cost += o.onDemandPerHour
    }
    return cost
}

let options = parseOptions(Array(CommandLine.arguments.dropFirst()))
let offers = OfferCatalog.bundled.offers
let snapshot = PlacementSnapshot(
    nodes: [], offers: offers, enabledProviders: Set(offers.map(\.provider)), includeOffers: true)
let stack = PlacementStack()
let planner = BatchPlanner(stack: stack)
// Every market of every offer, numbered as the candidates come.
let markets: [(key: String, candidate: Candidate)] = snapshot.candidates.map { c in
    ("\(c.provider)|\(c.region)|\(c.machineType)|\(c.spot ? 1 : 0)", c)
}
var marketNumber: [String: Int] = [:]
for (i, m) in markets.enumerated() { marketNumber[m.key] = i }

var out: FileHandle? = nil
if let path = options.out {
    guard FileManager.default.createFile(atPath: path, contents: nil), let h = FileHandle(forWritingAtPath: path) else {
        fail("cannot write \(path)")
    }
    out = h
}
print("fabric-bench-cost: \(offers.count) catalog offers (\(markets.count) with spot markets), no free nodes")
func pad(_ s: String, _ width: Int) -> String {
    width < 0
        ? s.padding(toLength: -width, withPad: " ", startingAt: 0)
        : String(repeating: " ", count: max(0, width - s.count)) + s
}
print(
    [
        pad("scenario", -16), pad("workloads", 9), pad("machines", 9), pad("planner $/h", 12), pad("each $/h", 12),
        pad("naive(aws)", 12), pad("vs each", 9), pad("plan ms", 9),
    ].joined(separator: " "))
for scenario in scenarios {
    var rng = SplitMix64(seed: options.seed &* 1_000_003 &+ UInt64(scenario.name.utf8.count))
    let count = max(1, scenario.count * options.scale / 100)
    let workloads = (0..<count).map { _ in scenario.make(&rng) }
    let clock = ContinuousClock()
    let t0 = clock.now
    let plan = planner.plan(snapshot, workloads)
    let elapsed = clock.now - t0
    var each = 0.0
    var batchWorkloads: [CostBatch.Workload] = []
    for w in workloads {
        let d = stack.select(snapshot, w)
        each += d.placement?.pricePerHour ?? 0
        let ms = d.candidates.filter(\.feasible).compactMap {
            marketNumber["\($0.provider)|\($0.region)|\($0.machineType)|\($0.spot ? 1 : 0)"]
        }
        batchWorkloads.append(
            CostBatch.Workload(
                cpu: w.resources.cpuMillis, memory: w.resources.memoryBytes, gpu: w.resources.gpuCount, markets: ms))
    }
    let naive = naiveCost(workloads, provider: "aws", offers: offers)
    let ms = Double(elapsed.components.seconds) * 1000 + Double(elapsed.components.attoseconds) / 1e15
    print(
        [
            pad(scenario.name, -16), pad("\(count)", 9), pad("\(plan.machines.count)", 9),
            pad(String(format: "%.2f", plan.newMachinesPerHour), 12), pad(String(format: "%.2f", each), 12),
            pad(naive.map { String(format: "%.2f", $0) } ?? "no fit", 12),
            pad(String(format: "%.0f%%", plan.newMachinesPerHour / each * 100), 9), pad(String(format: "%.1f", ms), 9),
        ].joined(separator: " "))
    if options.verbose {
        var mix: [String: (count: Int, price: Double, used: Double)] = [:]
        for m in plan.machines {
            let key = "\(m.offer.provider)/\(m.offer.region)/\(m.offer.machineType)\(m.spot ? "/spot" : "")"
            let total = m.offer.resources.cpuMillis
            let used = total > 0 ? Double(total - m.free.cpuMillis) / Double(total) : 0
            mix[key, default: (0, m.pricePerHour, 0)].count += 1
            mix[key]!.used += used
        }
        for (k, v) in mix.sorted(by: { $0.value.count > $1.value.count }) {
            print(
                String(
                    format: "    %4d x %@ at $%.4f/h, cpu used %.0f%%", v.count, k, v.price,
                    v.used / Double(v.count) * 100))
        }
    }
    if !plan.unplaced.isEmpty { print("  \(plan.unplaced.count) workloads fit nowhere") }
    if let out {
        let batch = CostBatch(
            name: scenario.name, planCostPerHour: plan.newMachinesPerHour,
            markets: markets.map { m in
                let f = m.candidate.free
                return CostBatch.Market(
                    key: m.key, price: stack.costModel.marginalPrice(m.candidate, .zero), cpu: f.cpuMillis,
                    memory: f.memoryBytes, gpu: f.gpuCount)
            }, workloads: batchWorkloads)
        var line = try JSONEncoder().encode(batch)
        line.append(0x0A)
        out.write(line)
    }
}
try? out?.close()
