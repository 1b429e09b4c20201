import FabricCore

extension Simulation {
    /// The summary printed before the hash: what ran, what it cost, and how fast.
    public func summary(wallSeconds: Double) -> [String] {
        let s = stats
        let simSeconds = Double(s.simulated.components.seconds) + Double(s.simulated.components.attoseconds) / 1e18
        let speed = wallSeconds > 0 ? simSeconds / wallSeconds : 0
        let faults = s.faults.keys.sorted().map { "\($0)=\(s.faults[$0]!)" }.joined(separator: " ")
        let phases = Phase.allCases.compactMap { p in s.phases[p].map { "\(p.rawValue)=\($0)" } }
            .joined(separator: " ")
        let saving = s.naiveCostPerHour > 0 ? (1 - s.fabricComparableCostPerHour / s.naiveCostPerHour) * 100 : 0
        return [
            "seed:             \(options.seed) (scheduler \(options.scheduler.rawValue))",
            "nodes:            \(scenario.nodeCount) at start, \(s.peakNodes) at peak, \(s.provisioned) provisioned,"
                + " \(s.terminated) terminated",
            "workloads:        \(s.arrived) (\(phases))",
            "placements:       \(s.placements) decisions, \(s.onNodes) on nodes, \(s.onOffers) on new machines,"
                + " \(s.unplaceable) found nothing; \(s.referenceChecks) checked against the brute force",
            "faults injected:  \(s.totalFaults) (\(faults.isEmpty ? "none" : faults))",
            "simulated:        \(Int(simSeconds)) s (fault phase \(scenario.faultPhase.components.seconds) s),"
                + " \(s.events) events, \(log.lineCount) log lines",
            "wall:             \(fixed(wallSeconds, 2)) s, \(fixed(speed, 0)) simulated s per wall s",
            "cost:             placements \(fixed(s.placementsCostPerHour, 2)) $/h; on the \(s.naiveComparable)"
                + " workloads aws can host: fabric \(fixed(s.fabricComparableCostPerHour, 2)) $/h vs naive first-fit"
                + " (aws, on-demand) \(fixed(s.naiveCostPerHour, 2)) $/h (\(fixed(saving, 1))% less)",
            batchLine,
            "restarts:         \(s.restarts) controller restarts (rate \(fixed(scenario.restartsPerDay, 2))/day)",
        ]
    }

    /// The batches' cost: the plans' new machines, one machine each and naive, for the same workloads.
    var batchLine: String {
        let s = stats
        guard options.batch else { return "batches:          off (one machine each, at once)" }
        let saving = s.batchEachCostPerHour > 0 ? (1 - s.batchPlanCostPerHour / s.batchEachCostPerHour) * 100 : 0
        return
            "batches:          \(s.batches) batches, \(s.batchedWorkloads) workloads on \(s.batchMachines) new machines:"
            + " plan \(fixed(s.batchPlanCostPerHour, 2)) $/h, one machine each \(fixed(s.batchEachCostPerHour, 2)) $/h"
            + " (\(fixed(saving, 1))% less), naive first-fit (aws first, on-demand)"
            + " \(fixed(s.batchNaiveCostPerHour, 2)) $/h (\(s.batchNaiveWorkloads) of them hostable on demand)"
    }

    /// The final line of every run.
    public var hashLine: String { "event-log sha256=\(log.sha256Hex())" }

    /// The event log's lines (only when the simulation was made with `keepLog`).
    public var logLines: [String] { log.lines }
}

/// `x` with `digits` decimals, without Foundation's formatting.
func fixed(_ x: Double, _ digits: Int) -> String {
    var scale = 1.0
    for _ in 0..<digits { scale *= 10 }
    let v = (x * scale).rounded() / scale
    guard digits > 0 else { return String(Int64(v)) }
    let whole = Int64(v.magnitude)
    var frac = String(Int64(((v.magnitude - Double(whole)) * scale).rounded()))
    while frac.count < digits { frac = "0" + frac }
    return (v < 0 ? "-" : "") + "\(whole).\(frac)"
}
