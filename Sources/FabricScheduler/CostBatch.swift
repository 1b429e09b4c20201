/// One batch as `scripts/cost-bound` reads it (the JSON-lines shape `fabric-bench-cost` writes): the markets the
/// batch's workloads may use, each workload with its feasible markets, and the $/h of the plan's new machines.
public struct CostBatch: Codable, Sendable, Hashable {
    public struct Market: Codable, Sendable, Hashable {
        public var key: String
        public var price: Double
        public var cpu: Int64
        public var memory: Int64
        public var gpu: Int

        public init(key: String, price: Double, cpu: Int64, memory: Int64, gpu: Int) {
            self.key = key
            self.price = price
            self.cpu = cpu
            self.memory = memory
            self.gpu = gpu
        }
    }

    public struct Workload: Codable, Sendable, Hashable {
        public var cpu: Int64
        public var memory: Int64
        public var gpu: Int
        /// Positions in `markets`.
        public var markets: [Int]

        public init(cpu: Int64, memory: Int64, gpu: Int, markets: [Int]) {
            self.cpu = cpu
            self.memory = memory
            self.gpu = gpu
            self.markets = markets
        }
    }

    public init(name: String, planCostPerHour: Double, markets: [Market], workloads: [Workload]) {
        self.name = name
        self.planCostPerHour = planCostPerHour
        self.markets = markets
        self.workloads = workloads
    }

    public var name: String
    public var planCostPerHour: Double
    public var markets: [Market]
    public var workloads: [Workload]
}
