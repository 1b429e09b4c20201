/// One batch as `scripts/cost-bound` reads it (the JSON-lines shape `fabric-bench-cost` writes): the markets the
/// batch's workloads may use, each workload with its feasible markets, and the $/h of the plan's new machines.
struct CostBatch: Codable {
    struct Market: Codable {
        var key: String
        var price: Double
        var cpu: Int64
        var memory: Int64
        var gpu: Int
    }

    struct Workload: Codable {
        var cpu: Int64
        var memory: Int64
        var gpu: Int
        /// Positions in `markets`.
        var markets: [Int]
    }

    var name: String
    var planCostPerHour: Double
    var markets: [Market]
    var workloads: [Workload]
}
