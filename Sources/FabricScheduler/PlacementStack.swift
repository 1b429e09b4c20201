import FabricCore

/// Cost-aware placement over an immutable snapshot.
///
/// ```
///  candidates ──► feasibility checks (cheapest first) ──► marginal cost ──► best fit ──► stable order
///      │                 │ filtered: reason                     │
///      │                 ▼                                      ▼
///      └──────────► CandidateResult(feasible: false)     cheapest feasible = placement
/// ```
/// Pure: no I/O, no clock, no randomness; the same snapshot and workload give the same decision.
public struct PlacementStack: Sendable {
    /// The checks, cheapest first.
    public let checks: [any FeasibilityCheck]
    /// How a node's price is shared among its workloads (see `nodeShare`).
    public let costModel: CostModel

    public init(checks: [any FeasibilityCheck] = PlacementStack.defaultChecks, costModel: CostModel = .dominantShare) {
        self.checks = checks
        self.costModel = costModel
    }

    /// The production checks in the order they run: constraint lookups first, arithmetic last.
    public static let defaultChecks: [any FeasibilityCheck] = [
        ProviderEnabledCheck(), LocationCheck(), NodeReadyCheck(), RuntimeCheck(), SpotCheck(), GPUCheck(),
        CPUMemoryCheck(), OfferAvailableCheck(), MaxPriceCheck(),
    ]

    /// Places one workload: judges every candidate and picks the cheapest feasible one.
    public func select(_ snapshot: PlacementSnapshot, _ workload: WorkloadSpec) -> PlacementDecision {
        var feasible: [(result: CandidateResult, fit: Double, key: String)] = []
        var filtered: [(result: CandidateResult, key: String)] = []
        var counts: [String: Int] = [:]
        for c in snapshot.candidates {
            let price = costModel.marginalPrice(c, workload.resources)
            let reason = firstFailure(c, workload, snapshot, price: price)
            let result = CandidateResult(candidate: c, pricePerHour: price, reason: reason)
            if let reason {
                counts[reason, default: 0] += 1
                filtered.append((result, c.stableKey))
            } else {
                feasible.append((result, Self.stranded(c, workload.resources), c.stableKey))
            }
        }
        feasible.sort {
            if $0.result.pricePerHour != $1.result.pricePerHour {
                return $0.result.pricePerHour < $1.result.pricePerHour
            }
            if $0.fit != $1.fit { return $0.fit < $1.fit }
            return $0.key < $1.key
        }
        filtered.sort {
            if $0.result.pricePerHour != $1.result.pricePerHour {
                return $0.result.pricePerHour < $1.result.pricePerHour
            }
            return $0.key < $1.key
        }
        return PlacementDecision(
            placement: feasible.first?.result.placement,
            candidates: feasible.map(\.result) + filtered.map(\.result), filtered: counts)
    }

    /// Places workloads one after another, charging each placement to its node in the snapshot, so a batch
    /// never over-commits a node. Offers are whole new machines and are not charged.
    /// - Returns: the decisions in input order and the snapshot after the batch.
    public func selectBatch(_ snapshot: PlacementSnapshot, _ workloads: [WorkloadSpec])
        -> (decisions: [PlacementDecision], snapshot: PlacementSnapshot)
    {
        var s = snapshot
        var decisions: [PlacementDecision] = []
        decisions.reserveCapacity(workloads.count)
        for w in workloads {
            let d = select(s, w)
            if let nodeID = d.placement?.node, let i = s.nodes.firstIndex(where: { $0.id == nodeID }) {
                s.nodes[i].allocated = s.nodes[i].allocated.adding(w.resources)
            }
            decisions.append(d)
        }
        return (decisions, s)
    }

    private func firstFailure(_ c: Candidate, _ w: WorkloadSpec, _ s: PlacementSnapshot, price: Double) -> String? {
        for check in checks {
            if let reason = check.check(c, price: price, w, s) { return reason }
        }
        return nil
    }

    /// Best-fit score: the fraction of the candidate left unused after placing, GPUs weighing most, so a
    /// 1-GPU job does not strand a 7 of 8 GPU machine when a 1-GPU machine costs the same. Lower is better.
    static func stranded(_ c: Candidate, _ r: Resources) -> Double {
        let free = c.free
        return stranded(freeCPU: free.cpuMillis, freeMemory: free.memoryBytes, freeGPU: free.gpu?.count ?? 0, r)
    }

    /// `stranded` over the free amounts themselves (the index's hot loop).
    @inline(__always)
    static func stranded(freeCPU: Int64, freeMemory: Int64, freeGPU: Int, _ r: Resources) -> Double {
        let gpuFree = Double(max(0, freeGPU - r.gpuCount))
        let cpuLeft = freeCPU > 0 ? Double(freeCPU - r.cpuMillis) / Double(freeCPU) : 0
        let memLeft = freeMemory > 0 ? Double(freeMemory - r.memoryBytes) / Double(freeMemory) : 0
        return gpuFree * 10 + cpuLeft + memLeft
    }
}

/// `placement.maxPricePerHour` against the candidate's marginal price.
struct MaxPriceCheck: FeasibilityCheck {
    let name = "max-price"
    func check(_ c: Candidate, price: Double, _ w: WorkloadSpec, _ s: PlacementSnapshot) -> String? {
        guard let max = w.placement.maxPricePerHour else { return nil }
        return price > max ? Reason.overMaxPrice : nil
    }
}

/// How the price of a candidate is charged to one workload.
public enum CostModel: Sendable, Hashable {
    /// An existing node charges the workload its dominant share (largest of CPU, memory and GPU fractions) of
    /// the node's $/h; a new offer charges its full price.
    case dominantShare

    /// The marginal $/h of placing `r` on `c`.
    public func marginalPrice(_ c: Candidate, _ r: Resources) -> Double {
        switch c {
        case .offer(let o, let spot):
            return spot ? (o.spotPerHour ?? o.onDemandPerHour) : o.onDemandPerHour
        case .node(let n):
            guard n.pricePerHour > 0 else { return 0 }
            var share = 0.0
            if n.capacity.cpuMillis > 0 { share = max(share, Double(r.cpuMillis) / Double(n.capacity.cpuMillis)) }
            if n.capacity.memoryBytes > 0 {
                share = max(share, Double(r.memoryBytes) / Double(n.capacity.memoryBytes))
            }
            if let g = n.capacity.gpu, g.count > 0 { share = max(share, Double(r.gpuCount) / Double(g.count)) }
            return (n.pricePerHour * min(share, 1) * 1_000_000).rounded() / 1_000_000
        }
    }
}

extension Resources {
    /// The sum of two resource amounts (GPU model taken from whichever names one).
    public func adding(_ o: Resources) -> Resources {
        var r = Resources(cpuMillis: cpuMillis + o.cpuMillis, memoryBytes: memoryBytes + o.memoryBytes)
        let gpus = gpuCount + o.gpuCount
        if gpus > 0 { r.gpu = GPUSpec(count: gpus, model: gpu?.model ?? o.gpu?.model) }
        return r
    }

    /// This amount minus `o`, never below zero.
    public func subtracting(_ o: Resources) -> Resources {
        var r = Resources(
            cpuMillis: max(0, cpuMillis - o.cpuMillis), memoryBytes: max(0, memoryBytes - o.memoryBytes))
        let gpus = max(0, gpuCount - o.gpuCount)
        if gpus > 0 { r.gpu = GPUSpec(count: gpus, model: gpu?.model) }
        return r
    }

    /// Whether `o` fits in this amount.
    public func fits(_ o: Resources) -> Bool {
        o.cpuMillis <= cpuMillis && o.memoryBytes <= memoryBytes && o.gpuCount <= gpuCount
    }
}
