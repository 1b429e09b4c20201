import FabricCore
import Synchronization

/// A mutable fleet view that answers "where does this workload go" fast, with exactly the placement that
/// `PlacementStack().select(snapshot, workload).placement` chooses: the same cheapest price, best fit and stable
/// order, never a sample.
///
/// ```
///  node classes (same provider, region, type, market, runtimes, state, capacity and price)
///      │ class-level checks once per class: location, ready, runtime, spot, GPU model, max price
///      ▼ marginal price once per class, classes sorted by it
///  cheapest class first ──► members (sorted by ID) that fit: least stranded wins
///      │ stop at the first class dearer than the best found; skip a class whose free-capacity bound is short
///      ▼
///  best node  ◄──► best offer (every offer and market, checks as in `select`) ──► placement
/// ```
/// Weaver and the simulator keep one index, place through it and tell it about allocations, releases and node
/// changes. `PlacementStack.select` stays the reference and the explanation (every candidate with its reason);
/// tests check that both agree on random fleets. The checks are the production ones (`defaultChecks`).
public struct PlacementIndex: Sendable {
    public let costModel: CostModel

    // Nodes live in slots (stable positions); `slotOf` finds a node's slot by ID.
    private var infos: [NodeInfo?] = []
    private var freeSlots: [Int] = []
    private var slotOf: [String: Int] = [:]
    // Per slot, the numbers the hot loop reads.
    private var freeCPU: [Int64] = []
    private var freeMemory: [Int64] = []
    private var freeGPU: [Int] = []
    private var classOfSlot: [Int] = []

    private var classes: [NodeClass] = []
    private var classByKey: [NodeClassKey: Int] = [:]

    private var offers: [OfferEntry] = []
    /// Positions in `offers`, cheapest first.
    private var offersByPrice: [Int] = []
    private var enabledProviders: Set<String>
    private var unavailableOffers: Set<OfferKey>
    private let includeOffers: Bool
    /// Canonical GPU models seen on nodes and offers, by number (`modelNumber`); -1 = none.
    private var models: [String] = []
    private var modelNumber: [String: Int] = [:]
    /// Shared by copies of the index until one of them learns a new model (then it gets its own).
    private var matchCache = ModelMatchCache()

    /// Builds an index over `snapshot`.
    public init(snapshot: PlacementSnapshot, costModel: CostModel = .dominantShare) {
        self.costModel = costModel
        enabledProviders = snapshot.enabledProviders
        unavailableOffers = snapshot.unavailableOffers
        includeOffers = snapshot.includeOffers
        for n in snapshot.nodes { upsert(n) }
        if includeOffers {
            for o in snapshot.offers {
                let model = o.gpuCount > 0 ? number(model: o.gpuModel) : -1
                offers.append(OfferEntry(offer: o, spot: false, model: model))
                if o.spotPerHour != nil { offers.append(OfferEntry(offer: o, spot: true, model: model)) }
            }
        }
        offersByPrice = offers.indices.sorted { offers[$0].price < offers[$1].price }
    }

    /// The fleet as it stands now (nodes sorted by ID), for explanations through `PlacementStack.select`.
    public var snapshot: PlacementSnapshot {
        PlacementSnapshot(
            nodes: infos.compactMap { $0 }.sorted { $0.id < $1.id }, offers: offersOnDemand,
            enabledProviders: enabledProviders, unavailableOffers: unavailableOffers, includeOffers: includeOffers)
    }

    private var offersOnDemand: [Offer] { offers.filter { !$0.spot }.map(\.offer) }

    /// How many nodes the index holds.
    public var nodeCount: Int { slotOf.count }

    /// The node with this ID, as the index holds it (with its allocation).
    public func node(_ id: String) -> NodeInfo? {
        slotOf[id].flatMap { infos[$0] }
    }

    // MARK: - Placement

    /// The cheapest feasible placement for `w`, or nil when nothing fits.
    public func place(_ w: WorkloadSpec) -> Placement? {
        let r = w.resources
        let wantGPU = r.gpu.map { $0.count > 0 } ?? false
        let matches = wantGPU ? modelMatches(r.gpu?.model) : []
        var best: Best? = nil

        // Nodes: class-level checks and price once per class, cheapest class first.
        var order: [(price: Double, cls: Int)] = []
        order.reserveCapacity(classes.count)
        for (i, c) in classes.enumerated() where !c.members.isEmpty {
            guard c.admits(w, wantGPU: wantGPU, matches: matches) else { continue }
            let price = costModel.marginalPrice(.node(c.representative), r)
            if let max = w.placement.maxPricePerHour, price > max { continue }
            order.append((price, i))
        }
        order.sort { $0.price != $1.price ? $0.price < $1.price : $0.cls < $1.cls }
        for (price, ci) in order {
            if let b = best, price > b.price { break }
            let c = classes[ci]
            // Every member is short of what the workload needs: no need to look at them.
            if c.maxFreeCPU < r.cpuMillis || c.maxFreeMemory < r.memoryBytes || (wantGPU && c.maxFreeGPU < r.gpuCount) {
                continue
            }
            var found: (slot: Int, fit: Double)? = nil
            for slot in c.members {
                guard freeCPU[slot] >= r.cpuMillis, freeMemory[slot] >= r.memoryBytes else { continue }
                if wantGPU && freeGPU[slot] < r.gpuCount { continue }
                let fit = PlacementStack.stranded(
                    freeCPU: freeCPU[slot], freeMemory: freeMemory[slot], freeGPU: freeGPU[slot], r)
                if found == nil || fit < found!.fit { found = (slot, fit) }
            }
            guard let found else { continue }
            let candidate = Best(price: price, fit: found.fit, node: found.slot, offer: nil)
            if best == nil || candidate.isBetter(than: best!, infos: infos, offers: offers) { best = candidate }
        }

        // Offers, cheapest first (their prices do not depend on the workload): every check as in `select`, until
        // one is dearer than the best found.
        if includeOffers {
            for i in offersByPrice {
                let e = offers[i]
                if let b = best, e.price > b.price { break }
                guard let price = offerPrice(e, w, wantGPU: wantGPU, matches: matches) else { continue }
                let candidate = Best(price: price, fit: e.fit(r), node: nil, offer: i)
                if best == nil || candidate.isBetter(than: best!, infos: infos, offers: offers) { best = candidate }
            }
        }

        guard let best else { return nil }
        if let slot = best.node, let n = infos[slot] {
            return Placement(
                provider: n.provider, region: n.region, machineType: n.machineType, spot: n.spot,
                pricePerHour: best.price, node: n.id)
        }
        let e = offers[best.offer!]
        return Placement(
            provider: e.offer.provider, region: e.offer.region, machineType: e.offer.machineType, spot: e.spot,
            pricePerHour: best.price, node: nil)
    }

    /// The offer's price when it passes every check, else nil.
    private func offerPrice(_ e: OfferEntry, _ w: WorkloadSpec, wantGPU: Bool, matches: [Bool]) -> Double? {
        let o = e.offer
        guard enabledProviders.contains(o.provider) else { return nil }
        if let p = w.placement.providers, !p.contains(o.provider) { return nil }
        if let g = w.placement.regions, !g.contains(o.region) { return nil }
        switch w.placement.spot {
        case .never: if e.spot { return nil }
        case .required: if !e.spot { return nil }
        case .allowed: break
        }
        let r = w.resources
        if wantGPU {
            if o.gpuCount == 0 { return nil }
            if r.gpu?.model != nil, e.model < 0 || !matches[e.model] { return nil }
            if o.gpuCount < r.gpuCount { return nil }
        }
        if e.resources.cpuMillis < r.cpuMillis || e.resources.memoryBytes < r.memoryBytes { return nil }
        if !unavailableOffers.isEmpty, unavailableOffers.contains(e.key) { return nil }
        if let max = w.placement.maxPricePerHour, e.price > max { return nil }
        return e.price
    }

    /// For each known model number, whether it satisfies the requested model (all true when none is named).
    private func modelMatches(_ requested: String?) -> [Bool] {
        guard let requested else { return Array(repeating: true, count: models.count) }
        if let hit = matchCache.get(requested, count: models.count) { return hit }
        let m = models.map { GPUModel.satisfies(offered: $0, requested: requested) }
        matchCache.set(requested, m)
        return m
    }

    // MARK: - Changes

    /// Adds a node, or replaces the one with the same ID (state, capacity, allocation, price ...).
    public mutating func upsert(_ node: NodeInfo) {
        if slotOf[node.id] != nil { remove(nodeID: node.id) }
        let slot: Int
        if let s = freeSlots.popLast() {
            slot = s
        } else {
            slot = infos.count
            infos.append(nil)
            freeCPU.append(0)
            freeMemory.append(0)
            freeGPU.append(0)
            classOfSlot.append(-1)
        }
        infos[slot] = node
        slotOf[node.id] = slot
        let ci = classFor(node)
        classOfSlot[slot] = ci
        classes[ci].insert(slot, id: node.id, ids: infos)
        setFree(slot)
    }

    /// Forgets a node.
    public mutating func remove(nodeID: String) {
        guard let slot = slotOf.removeValue(forKey: nodeID) else { return }
        classes[classOfSlot[slot]].remove(slot)
        infos[slot] = nil
        classOfSlot[slot] = -1
        freeSlots.append(slot)
    }

    /// Charges `r` to a node (a placement on it).
    public mutating func allocate(_ r: Resources, on nodeID: String) {
        guard let slot = slotOf[nodeID] else { return }
        let ci = classOfSlot[slot]
        let c = classes[ci]
        // This node may have held a class bound: tighten the bounds so full classes are skipped unscanned.
        let wasAtBound =
            freeCPU[slot] == c.maxFreeCPU || freeMemory[slot] == c.maxFreeMemory || freeGPU[slot] == c.maxFreeGPU
        infos[slot]!.allocated = infos[slot]!.allocated.adding(r)
        setFree(slot)
        if wasAtBound { tightenBounds(ci) }
    }

    /// Frees `r` on a node (a workload on it ended).
    public mutating func release(_ r: Resources, on nodeID: String) {
        guard let slot = slotOf[nodeID] else { return }
        infos[slot]!.allocated = infos[slot]!.allocated.subtracting(r)
        setFree(slot)
    }

    /// Replaces the set of offers marked unavailable (capacity or quota errors within their TTL).
    public mutating func setUnavailableOffers(_ keys: Set<OfferKey>) {
        unavailableOffers = keys
    }

    /// Replaces the providers whose offers may be used.
    public mutating func setEnabledProviders(_ providers: Set<String>) {
        enabledProviders = providers
    }

    private mutating func setFree(_ slot: Int) {
        let f = infos[slot]!.free
        freeCPU[slot] = f.cpuMillis
        freeMemory[slot] = f.memoryBytes
        freeGPU[slot] = f.gpu?.count ?? 0
        classes[classOfSlot[slot]].raiseBounds(cpu: f.cpuMillis, memory: f.memoryBytes, gpu: f.gpu?.count ?? 0)
    }

    private mutating func tightenBounds(_ ci: Int) {
        var cpu: Int64 = 0
        var memory: Int64 = 0
        var gpu = 0
        for slot in classes[ci].members {
            cpu = max(cpu, freeCPU[slot])
            memory = max(memory, freeMemory[slot])
            gpu = max(gpu, freeGPU[slot])
        }
        classes[ci].maxFreeCPU = cpu
        classes[ci].maxFreeMemory = memory
        classes[ci].maxFreeGPU = gpu
    }

    private mutating func classFor(_ n: NodeInfo) -> Int {
        let key = NodeClassKey(n)
        if let i = classByKey[key] { return i }
        let model = n.capacity.gpu.map { number(model: $0.model) } ?? -1
        classes.append(NodeClass(representative: n, model: model))
        classByKey[key] = classes.count - 1
        return classes.count - 1
    }

    private mutating func number(model: String?) -> Int {
        guard let model else { return -1 }
        if let i = modelNumber[model] { return i }
        models.append(model)
        modelNumber[model] = models.count - 1
        matchCache = ModelMatchCache()
        return models.count - 1
    }
}

/// What makes nodes interchangeable for the class-level checks and the price.
private struct NodeClassKey: Hashable {
    var provider: String
    var region: String
    var machineType: String
    var spot: Bool
    var runtimes: [RuntimeKind]
    var state: NodeState
    var capacity: Resources
    var pricePerHour: Double

    init(_ n: NodeInfo) {
        provider = n.provider
        region = n.region
        machineType = n.machineType
        spot = n.spot
        runtimes = n.runtimes
        state = n.state
        capacity = n.capacity
        pricePerHour = n.pricePerHour
    }
}

/// Nodes of one class: their slots sorted by node ID, and upper bounds on what any of them has free.
private struct NodeClass {
    /// A member as it was when the class was made: everything but the allocation is the class's.
    let representative: NodeInfo
    /// The capacity's GPU model number, -1 for none.
    let model: Int
    var members: [Int] = []
    var memberIDs: [String] = []
    // Bounds only ever rise (a placement leaves them loose); a loose bound costs one useless scan.
    var maxFreeCPU: Int64 = 0
    var maxFreeMemory: Int64 = 0
    var maxFreeGPU = 0

    init(representative: NodeInfo, model: Int) {
        var r = representative
        r.allocated = .zero
        self.representative = r
        self.model = model
    }

    /// The checks that hold for every member alike (location, ready, runtime, spot, GPU model and presence).
    func admits(_ w: WorkloadSpec, wantGPU: Bool, matches: [Bool]) -> Bool {
        let n = representative
        if let p = w.placement.providers, !p.contains(n.provider) { return false }
        if let g = w.placement.regions, !g.contains(n.region) { return false }
        guard n.state.isSchedulable, n.runtimes.contains(w.runtimeKind) else { return false }
        switch w.placement.spot {
        case .never: if n.spot { return false }
        case .required: if !n.spot { return false }
        case .allowed: break
        }
        if wantGPU {
            guard let g = n.capacity.gpu, g.count > 0 else { return false }
            if w.resources.gpu?.model != nil, model < 0 || !matches[model] { return false }
        }
        return true
    }

    mutating func insert(_ slot: Int, id: String, ids: [NodeInfo?]) {
        var lo = 0
        var hi = memberIDs.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if memberIDs[mid] < id { lo = mid + 1 } else { hi = mid }
        }
        members.insert(slot, at: lo)
        memberIDs.insert(id, at: lo)
    }

    mutating func remove(_ slot: Int) {
        guard let i = members.firstIndex(of: slot) else { return }
        members.remove(at: i)
        memberIDs.remove(at: i)
    }

    mutating func raiseBounds(cpu: Int64, memory: Int64, gpu: Int) {
        maxFreeCPU = max(maxFreeCPU, cpu)
        maxFreeMemory = max(maxFreeMemory, memory)
        maxFreeGPU = max(maxFreeGPU, gpu)
    }
}

/// One offer in one market, with what the hot loop needs precomputed.
private struct OfferEntry {
    let offer: Offer
    let spot: Bool
    let model: Int
    let resources: Resources
    let key: OfferKey
    let stableKey: String
    /// What one machine costs per hour in this market (`CostModel.marginalPrice` of the offer).
    let price: Double

    init(offer: Offer, spot: Bool, model: Int) {
        self.offer = offer
        self.spot = spot
        self.model = model
        resources = offer.resources
        key = OfferKey(provider: offer.provider, region: offer.region, machineType: offer.machineType, spot: spot)
        stableKey = Candidate.offer(offer, spot: spot).stableKey
        price = CostModel.dominantShare.marginalPrice(.offer(offer, spot: spot), resources)
    }

    func fit(_ r: Resources) -> Double {
        PlacementStack.stranded(
            freeCPU: resources.cpuMillis, freeMemory: resources.memoryBytes, freeGPU: resources.gpu?.count ?? 0, r)
    }
}

/// The best candidate so far: a node slot or an offer position.
private struct Best {
    var price: Double
    var fit: Double
    var node: Int?
    var offer: Int?

    /// `select`'s order: price, then fit, then the stable key (nodes by ID before every offer).
    func isBetter(than o: Best, infos: [NodeInfo?], offers: [OfferEntry]) -> Bool {
        if price != o.price { return price < o.price }
        if fit != o.fit { return fit < o.fit }
        switch (node, o.node) {
        case (let a?, let b?): return infos[a]!.id < infos[b]!.id
        case (.some, nil): return true
        case (nil, .some): return false
        case (nil, nil): return offers[offer!].stableKey < offers[o.offer!].stableKey
        }
    }
}

/// Which known GPU models satisfy a requested model, remembered per request spelling (bounded).
private final class ModelMatchCache: Sendable {
    static let entriesMax = 256
    private let entries = Mutex<[String: [Bool]]>([:])

    func get(_ requested: String, count: Int) -> [Bool]? {
        entries.withLock { e in e[requested].flatMap { $0.count == count ? $0 : nil } }
    }

    func set(_ requested: String, _ m: [Bool]) {
        entries.withLock { e in
            if e.count >= Self.entriesMax { e.removeAll() }
            e[requested] = m
        }
    }
}
