import FabricCore

/// Places a batch of pending workloads together, so that several small ones share one new machine where that is
/// cheaper than a machine each (DESIGN "Batches").
///
/// ```
///  workloads ──► PlacementIndex: an existing node is cheapest ──► on that node (charged at once)
///      │                     └─ nothing fits ──► unplaced, with select's reasons
///      ▼ a new machine is cheapest
///  biggest first ──► fits a machine this batch already opens? ──► best fit there (already paid for)
///                          └─ no: open the offer with the lowest price per dollar of work it would hold
///                                 (its price ÷ the standalone prices of the workloads that would fill it)
/// ```
/// Pure and deterministic: the same snapshot and workloads give the same plan.
public struct BatchPlanner: Sendable {
    public let stack: PlacementStack

    public init(stack: PlacementStack = PlacementStack()) { self.stack = stack }

    /// A new machine the plan asks a provider for, and the workloads (positions in the input) it will hold.
    public struct NewMachine: Sendable, Hashable {
        public var offer: Offer
        public var spot: Bool
        public var pricePerHour: Double
        public var workloads: [Int]
        /// What is left free on it after the planned workloads.
        public var free: Resources
    }

    /// The outcome for a batch.
    public struct Plan: Sendable, Hashable {
        /// Workload position → node ID and the marginal price charged there.
        public var onNodes: [Int: Placement]
        public var machines: [NewMachine]
        /// Workload position → why it fits nowhere (`select`'s filtered counts).
        public var unplaced: [Int: [String: Int]]

        /// The $/h of the new machines.
        public var newMachinesPerHour: Double { machines.reduce(0) { $0 + $1.pricePerHour } }

        /// Where each workload goes: a node, a new machine (with its offer), or nil.
        public func placement(of i: Int) -> Placement? {
            if let p = onNodes[i] { return p }
            guard let m = machines.first(where: { $0.workloads.contains(i) }) else { return nil }
            return Placement(
                provider: m.offer.provider, region: m.offer.region, machineType: m.offer.machineType, spot: m.spot,
                pricePerHour: m.pricePerHour, node: nil)
        }
    }

    /// Plans the batch. Nodes in the snapshot are charged as workloads land on them.
    public func plan(_ snapshot: PlacementSnapshot, _ workloads: [WorkloadSpec]) -> Plan {
        var index = PlacementIndex(snapshot: snapshot, costModel: stack.costModel)
        var plan = Plan(onNodes: [:], machines: [], unplaced: [:])
        var toPack: [Int] = []
        for (i, w) in workloads.enumerated() {
            guard let p = index.place(w) else {
                plan.unplaced[i] = stack.select(index.snapshot, w).filtered
                continue
            }
            if let node = p.node {
                index.allocate(w.resources, on: node)
                plan.onNodes[i] = p
            } else {
                toPack.append(i)
            }
        }
        guard !toPack.isEmpty else { return plan }

        // Every market of every offer, and which of them each workload may use (select's checks, nodes aside).
        let offersOnly = PlacementSnapshot(
            nodes: [], offers: snapshot.offers, enabledProviders: snapshot.enabledProviders,
            unavailableOffers: snapshot.unavailableOffers, includeOffers: true)
        let markets = offersOnly.candidates
        var marketOf: [String: Int] = [:]
        for (m, c) in markets.enumerated() { marketOf[c.stableKey] = m }
        var feasible: [Int: [Int]] = [:]  // workload → markets, in select's order (cheapest first)
        var allowed: [Int: Set<Int>] = [:]
        // What a workload is worth: its fair share of the most efficient machine it may use (price × the largest
        // fraction of CPU, memory or GPUs it takes there), the cost it would have if machines were divisible.
        var value: [Int: Double] = [:]
        for i in toPack {
            let d = stack.select(offersOnly, workloads[i])
            let ms = d.candidates.filter(\.feasible).compactMap { r in
                marketOf[Candidate.offerKey(r.provider, r.region, r.machineType, r.spot)]
            }
            feasible[i] = ms
            allowed[i] = Set(ms)
            value[i] = ms.map { m in price(markets[m]) * Self.share(workloads[i].resources, of: markets[m].free) }.min()
        }

        // Workloads alike (same resources, same markets) form one type; types biggest first (GPUs, then worth),
        // each holding its workloads in input order.
        var types: [WorkloadType] = []
        var typeOf: [TypeKey: Int] = [:]
        for i in toPack.sorted() {
            let key = TypeKey(resources: workloads[i].resources, markets: feasible[i] ?? [])
            if let t = typeOf[key] {
                types[t].members.append(i)
            } else {
                typeOf[key] = types.count
                types.append(
                    WorkloadType(
                        resources: workloads[i].resources, markets: feasible[i] ?? [], allowed: allowed[i] ?? [],
                        value: value[i] ?? 0, members: [i]))
            }
        }
        types.sort { a, b in
            if a.resources.gpuCount != b.resources.gpuCount { return a.resources.gpuCount > b.resources.gpuCount }
            if a.value != b.value { return a.value > b.value }
            return a.members[0] < b.members[0]
        }
        var taken = Array(repeating: 0, count: types.count)  // how many of each type are placed

        // One machine at a time, for the biggest workload left: try the markets it uses most efficiently, fill each
        // (simulated) with whichever workload left lines up best with the room still free, and open the market whose
        // price buys the most worth.
        var machineMarket: [Int] = []
        while let t = types.indices.first(where: { taken[$0] < types[$0].members.count }) {
            let r = types[t].resources
            let tried = types[t].markets
                .map { m in (m, price(markets[m]) * Self.share(r, of: markets[m].free)) }
                .sorted { $0.1 < $1.1 }.prefix(Self.marketsTriedMax).map(\.0)
            var choice: (market: Int, ratio: Double, price: Double, fill: [Int: Int])? = nil
            for m in tried {
                let (fill, held) = fillMachine(m, first: t, types: types, taken: taken, capacity: markets[m].free)
                let p = price(markets[m])
                let ratio = held > 0 ? p / held : Double.infinity
                if choice == nil || ratio < choice!.ratio || (ratio == choice!.ratio && p < choice!.price) {
                    choice = (m, ratio, p, fill)
                }
            }
            guard let choice else {
                for i in types[t].members[taken[t]...] { plan.unplaced[i] = [:] }
                taken[t] = types[t].members.count
                continue
            }
            plan.machines.append(newMachine(choice.market, fill: choice.fill, types: types, taken: &taken, markets))
            machineMarket.append(choice.market)
        }

        var machines = polish(
            plan.machines, machineMarket, workloads: workloads, allowed: allowed, value: value, markets: markets)

        // A second plan by value correction; the cheaper one wins (ties keep the greedy plan). A lone workload
        // already has its cheapest machine.
        if toPack.count > 1, let corrected = valueCorrected(types: types, markets: markets) {
            var next = Array(repeating: 0, count: types.count)
            let alternative = corrected.map { m, fill in newMachine(m, fill: fill, types: types, taken: &next, markets)
            }
            let polished = polish(
                alternative, corrected.map(\.market), workloads: workloads, allowed: allowed, value: value,
                markets: markets)
            if Self.cost(polished) < Self.cost(machines) { machines = polished }
        }
        plan.machines = machines
        return plan
    }

    /// A machine of market `m` holding, of each type, the next `fill[type]` workloads not yet placed (`taken` counts
    /// them per type and moves past them).
    private func newMachine(
        _ m: Int, fill: [Int: Int], types: [WorkloadType], taken: inout [Int], _ markets: [Candidate]
    ) -> NewMachine {
        let (offer, spot) = entry(markets[m])
        var machine = NewMachine(
            offer: offer, spot: spot, pricePerHour: price(markets[m]), workloads: [], free: offer.resources)
        for (u, n) in fill.sorted(by: { $0.key < $1.key }) {
            for i in types[u].members[taken[u]..<(taken[u] + n)] {
                machine.workloads.append(i)
                machine.free = machine.free.subtracting(types[u].resources)
            }
            taken[u] += n
        }
        return machine
    }

    private static func cost(_ machines: [NewMachine]) -> Double { machines.reduce(0) { $0 + $1.pricePerHour } }

    /// Improves a list of machines: empties the ones that hold the least worth for their price into the others'
    /// free room (where everything on one fits elsewhere) and drops them, then moves each machine to the cheapest
    /// market that every workload on it may use and that still holds them all.
    private func polish(
        _ machines: [NewMachine], _ machineMarket: [Int], workloads: [WorkloadSpec], allowed: [Int: Set<Int>],
        value: [Int: Double], markets: [Candidate]
    ) -> [NewMachine] {
        var out = machines
        var machineMarket = machineMarket
        // Empty the machines that hold the least worth for their price into the others' free room, where everything
        // on one fits elsewhere; then drop the empty ones.
        var held = out.map { m in m.workloads.reduce(0) { $0 + (value[$1] ?? 0) } }
        let emptiestFirst = out.indices.sorted { a, b in
            let (x, y) = (held[a] / out[a].pricePerHour, held[b] / out[b].pricePerHour)
            return x != y ? x < y : a < b
        }
        var gone = Set<Int>()
        for k in emptiestFirst {
            var free = out.map(\.free)
            var moves: [(workload: Int, to: Int)] = []
            for i in out[k].workloads {
                let r = workloads[i].resources
                var best: (machine: Int, fit: Double)? = nil
                for (m, machine) in out.enumerated()
                where m != k && !gone.contains(m) && (allowed[i]?.contains(machineMarket[m]) ?? false) {
                    guard free[m].fits(r) else { continue }
                    let fit = -Self.alignment(r, free: free[m], of: machine.offer.resources)
                    if best == nil || fit < best!.fit { best = (m, fit) }
                }
                guard let best else { break }
                free[best.machine] = free[best.machine].subtracting(r)
                moves.append((i, best.machine))
            }
            guard moves.count == out[k].workloads.count else { continue }
            for (i, m) in moves {
                out[m].workloads.append(i)
                out[m].free = free[m]
                held[m] += value[i] ?? 0
            }
            out[k].workloads = []
            gone.insert(k)
        }
        if !gone.isEmpty {
            let keep = out.indices.filter { !gone.contains($0) }
            out = keep.map { out[$0] }
            machineMarket = keep.map { machineMarket[$0] }
        }

        // Each machine as filled: the cheapest market every workload on it may use that still holds them all.
        for (k, machine) in out.enumerated() {
            var need = Resources.zero
            for i in machine.workloads { need = need.adding(workloads[i].resources) }
            var options = allowed[machine.workloads[0]] ?? []
            for i in machine.workloads.dropFirst() { options.formIntersection(allowed[i] ?? []) }
            var best = (market: machineMarket[k], price: machine.pricePerHour)
            for m in options.sorted() where markets[m].free.fits(need) {
                let p = price(markets[m])
                if p < best.price { best = (m, p) }
            }
            guard best.market != machineMarket[k] else { continue }
            let (offer, spot) = entry(markets[best.market])
            out[k].offer = offer
            out[k].spot = spot
            out[k].pricePerHour = best.price
            out[k].free = offer.resources.subtracting(need)
            machineMarket[k] = best.market
        }
        return out
    }

    /// Rounds of value correction.
    static let correctionRounds = 12

    /// Sequential value correction (a cutting-stock heuristic): machines are opened one pattern at a time, each the
    /// market and fill that buy the most worth per dollar, where a workload's worth starts as its fair share and is
    /// then corrected each round to what it really cost in the last plan (the price of each machine shared among
    /// what it holds, in proportion to worth). Workloads that packed badly get dearer and are packed first next
    /// round. Returns the cheapest round's machines (market, workloads of each type), or nil when some workload fit
    /// no market.
    private func valueCorrected(types: [WorkloadType], markets: [Candidate]) -> [(market: Int, fill: [Int: Int])]? {
        guard !types.isEmpty else { return [] }
        let need = types.map { Need($0.resources) }
        let allUsed = Set(types.flatMap(\.markets)).sorted()
        let capacity = Dictionary(uniqueKeysWithValues: allUsed.map { ($0, Need(markets[$0].free)) })
        let prices = Dictionary(uniqueKeysWithValues: allUsed.map { ($0, price(markets[$0])) })
        var typesOn: [Int: [Int]] = [:]
        for (t, type) in types.enumerated() {
            for m in type.markets where capacity[m]!.holds(need[t]) >= 1 { typesOn[m, default: []].append(t) }
        }
        guard types.indices.allSatisfy({ t in types[t].markets.contains { typesOn[$0]?.contains(t) ?? false } }) else {
            return nil
        }
        let usable = allUsed.filter { typesOn[$0] != nil }
        var worth = types.map { max($0.value, 1e-12) }
        var best: (cost: Double, machines: [(market: Int, fill: [Int: Int])])? = nil
        for _ in 0..<Self.correctionRounds {
            var left = types.map(\.members.count)
            var opened: [(market: Int, fill: [Int: Int], copies: Int)] = []
            var cost = 0.0
            while left.contains(where: { $0 > 0 }) {
                var choice: (market: Int, ratio: Double, price: Double, fill: [Int: Int])? = nil
                for m in usable {
                    let (fill, held) = Self.pack(capacity[m]!, typesOn[m]!, need: need, left: left, worth: worth)
                    guard held > 0 else { continue }
                    let p = prices[m]!
                    let ratio = p / held
                    if choice == nil || ratio < choice!.ratio || (ratio == choice!.ratio && p < choice!.price) {
                        choice = (m, ratio, p, fill)
                    }
                }
                guard let choice else { return best?.machines }
                let copies = choice.fill.map { left[$0.key] / $0.value }.min() ?? 1
                for (t, n) in choice.fill { left[t] -= n * copies }
                cost += choice.price * Double(copies)
                opened.append((choice.market, choice.fill, copies))
            }
            if best == nil || cost < best!.cost {
                best = (cost, opened.flatMap { o in Array(repeating: (o.market, o.fill), count: o.copies) })
            }
            // What each workload really cost: each machine's price shared in proportion to worth.
            var paid = Array(repeating: 0.0, count: types.count)
            var count = Array(repeating: 0.0, count: types.count)
            for o in opened {
                let held = o.fill.reduce(0.0) { $0 + worth[$1.key] * Double($1.value) }
                for (t, n) in o.fill {
                    paid[t] += prices[o.market]! * worth[t] / held * Double(n * o.copies)
                    count[t] += Double(n * o.copies)
                }
            }
            var moved = false
            for t in types.indices where count[t] > 0 {
                let next = (worth[t] + paid[t] / count[t]) / 2
                moved = moved || abs(next - worth[t]) > 1e-9 * worth[t]
                worth[t] = next
            }
            if !moved { break }  // the worths are settled: the next round would repeat this one
        }
        return best?.machines
    }

    /// Search nodes one machine's fill may take.
    static let packNodesMax = 400

    /// Fills one machine with the most worth: a depth-first search over the types (most worth per share of this
    /// machine first, each from as many as fit down to none), cut where even the best worth per unit of the scarcest
    /// resource left cannot beat the best fill found, and stopped after `packNodesMax` nodes. Its first dive is the
    /// greedy fill, so the result is never worse than greedy. Returns the fill and its worth.
    private static func pack(
        _ capacity: Need, _ candidates: [Int], need: [Need], left: [Int], worth: [Double]
    ) -> (fill: [Int: Int], held: Double) {
        let order = candidates.filter { left[$0] > 0 && capacity.holds(need[$0]) >= 1 }.sorted { a, b in
            let (x, y) = (worth[a] / capacity.share(need[a]), worth[b] / capacity.share(need[b]))
            return x != y ? x > y : a < b
        }
        guard !order.isEmpty else { return ([:], 0) }
        // From position i on: all the worth left, and the most worth per unit of each resource (nil: some type there
        // needs none of it, so that resource bounds nothing).
        var rest = Array(repeating: 0.0, count: order.count + 1)
        var density: [[Double?]] = Array(repeating: [0, 0, 0], count: order.count + 1)
        for i in stride(from: order.count - 1, through: 0, by: -1) {
            let t = order[i]
            rest[i] = rest[i + 1] + worth[t] * Double(left[t])
            let amounts = [need[t].cpu, need[t].memory, need[t].gpu]
            for d in 0..<3 {
                guard let after = density[i + 1][d], amounts[d] > 0 else {
                    density[i][d] = nil
                    continue
                }
                density[i][d] = max(after, worth[t] / Double(amounts[d]))
            }
        }
        var counts = Array(repeating: 0, count: order.count)
        var best = (counts: counts, held: 0.0)
        var nodes = 0
        func search(_ i: Int, _ free: Need, _ held: Double) {
            nodes += 1
            if held > best.held { best = (counts, held) }
            guard i < order.count, nodes < packNodesMax else { return }
            var bound = rest[i]
            let room = [free.cpu, free.memory, free.gpu]
            for d in 0..<3 { if let r = density[i][d] { bound = min(bound, r * Double(room[d])) } }
            guard held + bound > best.held * (1 + 1e-12) else { return }
            let t = order[i]
            for n in stride(from: min(left[t], free.holds(need[t])), through: 0, by: -1) {
                counts[i] = n
                search(i + 1, free.minus(need[t], times: n), held + worth[t] * Double(n))
                if nodes >= packNodesMax { break }
            }
            counts[i] = 0
        }
        search(0, capacity, 0)
        var fill: [Int: Int] = [:]
        for (i, n) in best.counts.enumerated() where n > 0 { fill[order[i]] = n }
        return (fill, best.held)
    }

    /// How many markets are tried when a machine is opened: the ones the workload uses most efficiently.
    static let marketsTriedMax = 8

    /// Fills one machine of market `m` (simulated): a workload of type `first`, then again and again the type left
    /// whose resources line up best with the room still free. Returns how many of each type it holds, and their
    /// worth.
    private func fillMachine(
        _ m: Int, first: Int, types: [WorkloadType], taken: [Int], capacity: Resources
    ) -> (fill: [Int: Int], held: Double) {
        var free = capacity.subtracting(types[first].resources)
        var fill = [first: 1]
        var held = types[first].value
        while true {
            var best: (type: Int, fit: Double)? = nil
            for (u, type) in types.enumerated() where taken[u] + (fill[u] ?? 0) < type.members.count {
                guard type.allowed.contains(m), free.fits(type.resources) else { continue }
                let fit = Self.alignment(type.resources, free: free, of: capacity)
                if best == nil || fit > best!.fit { best = (u, fit) }
            }
            guard let best else { break }
            fill[best.type, default: 0] += 1
            free = free.subtracting(types[best.type].resources)
            held += types[best.type].value
        }
        return (fill, held)
    }

    /// What one machine of the market costs per hour.
    private func price(_ c: Candidate) -> Double { stack.costModel.marginalPrice(c, .zero) }

    /// How well `r` lines up with what is free on a machine of size `whole`: the dot product of both as fractions
    /// of the machine (higher is better).
    static func alignment(_ r: Resources, free: Resources, of whole: Resources) -> Double {
        var a = 0.0
        if whole.cpuMillis > 0 {
            a += Double(r.cpuMillis) * Double(free.cpuMillis) / (Double(whole.cpuMillis) * Double(whole.cpuMillis))
        }
        if whole.memoryBytes > 0 {
            a +=
                Double(r.memoryBytes) * Double(free.memoryBytes)
                / (Double(whole.memoryBytes) * Double(whole.memoryBytes))
        }
        if whole.gpuCount > 0 {
            a += Double(r.gpuCount) * Double(free.gpuCount) / (Double(whole.gpuCount) * Double(whole.gpuCount))
        }
        return a
    }

    /// The largest fraction of `whole`'s CPU, memory or GPUs that `r` takes.
    static func share(_ r: Resources, of whole: Resources) -> Double {
        var s = 0.0
        if whole.cpuMillis > 0 { s = max(s, Double(r.cpuMillis) / Double(whole.cpuMillis)) }
        if whole.memoryBytes > 0 { s = max(s, Double(r.memoryBytes) / Double(whole.memoryBytes)) }
        if whole.gpuCount > 0 { s = max(s, Double(r.gpuCount) / Double(whole.gpuCount)) }
        return s
    }

    private func entry(_ c: Candidate) -> (Offer, Bool) {
        guard case .offer(let o, let spot) = c else { preconditionFailure("markets hold offers only") }
        return (o, spot)
    }
}

/// Workloads that are alike for packing: the same resources and the same markets.
private struct TypeKey: Hashable {
    var resources: Resources
    var markets: [Int]
}

/// One kind of workload in a batch and the workloads of that kind, in input order.
private struct WorkloadType {
    var resources: Resources
    var markets: [Int]
    var allowed: Set<Int>
    var value: Double
    var members: [Int]
}

/// Resources as plain numbers, for packing arithmetic.
private struct Need {
    var cpu: Int64
    var memory: Int64
    var gpu: Int64

    init(_ r: Resources) {
        cpu = r.cpuMillis
        memory = r.memoryBytes
        gpu = Int64(r.gpuCount)
    }

    /// How many of `r` fit in this amount (Int.max for a zero request).
    func holds(_ r: Need) -> Int {
        var n = Int64.max
        if r.cpu > 0 { n = min(n, cpu / r.cpu) }
        if r.memory > 0 { n = min(n, memory / r.memory) }
        if r.gpu > 0 { n = min(n, gpu / r.gpu) }
        return n == Int64.max ? Int.max : Int(n)
    }

    /// The largest fraction of this amount's CPU, memory or GPUs that `r` takes (a small floor for a zero request).
    func share(_ r: Need) -> Double {
        var s = 1e-9
        if cpu > 0 { s = max(s, Double(r.cpu) / Double(cpu)) }
        if memory > 0 { s = max(s, Double(r.memory) / Double(memory)) }
        if gpu > 0 { s = max(s, Double(r.gpu) / Double(gpu)) }
        return s
    }

    func minus(_ r: Need, times n: Int) -> Need {
        var out = self
        out.cpu -= r.cpu * Int64(n)
        out.memory -= r.memory * Int64(n)
        out.gpu -= r.gpu * Int64(n)
        return out
    }
}
