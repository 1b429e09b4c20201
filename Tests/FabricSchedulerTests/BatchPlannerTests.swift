import FabricCore
import FabricProviders
import Foundation
import Testing

@testable import FabricScheduler

struct BatchPlannerTests {
    static let small = offer("aws", "r1", "small", cpu: 2, memGi: 4, price: 0.10)
    static let big = offer("aws", "r1", "big", cpu: 8, memGi: 16, price: 0.25)

    @Test func smallWorkloadsShareOneBiggerMachine() {
        let snapshot = PlacementSnapshot(nodes: [], offers: [Self.small, Self.big], enabledProviders: ["aws"])
        let plan = BatchPlanner().plan(snapshot, Array(repeating: spec(cpu: 2000, memGi: 2), count: 4))
        // One each would be 4 x 0.10; one big machine holds all four for 0.25.
        #expect(plan.machines.count == 1)
        #expect(plan.machines.first?.offer.machineType == "big")
        #expect(plan.newMachinesPerHour == 0.25)
        #expect(plan.machines.first?.workloads.sorted() == [0, 1, 2, 3])
        #expect(plan.machines.first?.free == Resources(cpuMillis: 0, memoryBytes: 8 << 30))
    }

    @Test func aLoneWorkloadGetsTheCheapestMachineThatFits() {
        let snapshot = PlacementSnapshot(nodes: [], offers: [Self.small, Self.big], enabledProviders: ["aws"])
        let plan = BatchPlanner().plan(snapshot, [spec(cpu: 1000, memGi: 1)])
        #expect(plan.machines.map(\.offer.machineType) == ["small"])
        #expect(plan.placement(of: 0)?.pricePerHour == 0.10)
    }

    @Test func freeNodesComeFirstAndUnplaceableOnesSayWhy() {
        let snapshot = PlacementSnapshot(
            nodes: [.node("n1", cpu: 4, memGi: 8)], offers: [Self.small], enabledProviders: ["aws"])
        let plan = BatchPlanner().plan(
            snapshot, [spec(cpu: 2000, memGi: 2), spec(cpu: 2000, memGi: 2), spec(cpu: 2000, memGi: 2), spec(gpus: 1)])
        #expect(plan.onNodes[0]?.node == "n1")
        #expect(plan.onNodes[1]?.node == "n1")
        #expect(plan.machines.map(\.workloads) == [[2]])
        #expect(plan.unplaced[3]?[Reason.insufficientGPU] != nil)
    }

    /// CPU-heavy and memory-heavy workloads are cheapest mixed on one machine type: 64 vCPUs are asked for, the
    /// cheapest CPU is $0.01 a vCPU on "wide", so $0.64 (four machines, each 3 CPU-heavy + 2 memory-heavy) is
    /// optimal. Filling each machine with one kind would cost $0.67 or more.
    @Test func complementaryWorkloadsShareMachines() {
        let wide = offer("gcp", "r1", "wide", cpu: 16, memGi: 64, price: 0.16)
        let highmem = offer("gcp", "r1", "highmem", cpu: 8, memGi: 64, price: 0.095)
        let snapshot = PlacementSnapshot(nodes: [], offers: [wide, highmem], enabledProviders: ["gcp"])
        let workloads =
            Array(repeating: spec(cpu: 4000, memGi: 2), count: 12)
            + Array(repeating: spec(cpu: 2000, memGi: 16), count: 8)
        let plan = BatchPlanner().plan(snapshot, workloads)
        #expect(abs(plan.newMachinesPerHour - 0.64) < 1e-9)
        #expect(plan.machines.map(\.offer.machineType) == Array(repeating: "wide", count: 4))
        #expect(Set(plan.machines.flatMap(\.workloads)) == Set(workloads.indices))
    }

    /// Random batches over the bundled catalog: every workload placed once or explained, no machine over-filled,
    /// every workload on a market it may use, and never dearer than one machine each.
    @Test(arguments: [11, 12, 13, 14] as [UInt64])
    func plansAreSoundAndNeverDearerThanOneMachineEach(seed: UInt64) {
        var r = RandomFleet(seed: seed)
        let offers = OfferCatalog.bundled.offers
        let snapshot = PlacementSnapshot(
            nodes: (0..<10).map { r.node($0) }, offers: offers, enabledProviders: ["aws", "gcp", "runpod", "coreweave"])
        let workloads = (0..<300).map { _ in r.workload() }
        let plan = BatchPlanner().plan(snapshot, workloads)
        let stack = PlacementStack()
        var seen = Set<Int>()
        for m in plan.machines {
            var need = Resources.zero
            for i in m.workloads {
                #expect(seen.insert(i).inserted, "workload \(i) placed twice")
                need = need.adding(workloads[i].resources)
                // The machine's market must be one select finds feasible for the workload on its own.
                let alone = PlacementSnapshot(nodes: [], offers: [m.offer], enabledProviders: snapshot.enabledProviders)
                let ok = stack.select(alone, workloads[i]).candidates.contains { $0.feasible && $0.spot == m.spot }
                #expect(ok, "workload \(i) on \(m.offer.machineType) spot=\(m.spot)")
            }
            #expect(m.offer.resources.fits(need), "\(m.offer.machineType) over-filled")
            #expect(m.free == m.offer.resources.subtracting(need))
        }
        for i in plan.onNodes.keys { #expect(seen.insert(i).inserted) }
        for i in plan.unplaced.keys { #expect(seen.insert(i).inserted) }
        #expect(seen == Set(workloads.indices))

        // Never dearer than buying each workload its own cheapest machine.
        let byItself = PlacementSnapshot(nodes: [], offers: offers, enabledProviders: snapshot.enabledProviders)
        let packed = plan.machines.flatMap(\.workloads)
        let each = packed.reduce(0.0) { $0 + (stack.select(byItself, workloads[$1]).placement?.pricePerHour ?? 0) }
        #expect(plan.newMachinesPerHour <= each + 1e-9)
        #expect(plan.newMachinesPerHour < each, "sharing machines should save something on 300 workloads")
    }

    @Test func samePlanForTheSameInput() {
        var r = RandomFleet(seed: 5)
        let snapshot = PlacementSnapshot(
            nodes: [], offers: OfferCatalog.bundled.offers, enabledProviders: ["aws", "gcp", "runpod"])
        let workloads = (0..<100).map { _ in r.workload() }
        #expect(BatchPlanner().plan(snapshot, workloads) == BatchPlanner().plan(snapshot, workloads))
    }

    /// The independent checker (scripts/cost-bound, HiGHS) on batches whose bound is known by hand.
    @Test func theLPCheckerFindsKnownBounds() async throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        let python = root.appendingPathComponent(".venv/bin/python").path
        try #require(
            FileManager.default.isExecutableFile(atPath: python), "run scripts/bootstrap: it installs highspy in .venv")
        // Three 1-CPU workloads, machines of 2 CPUs at $1: the LP says 1.5 machines, whole machines make it 2, so a
        // plan of 3 is over. One 1-CPU workload on a 4-CPU machine at $2 must buy a whole one. Three 1.2-CPU
        // workloads on 2-CPU machines: one fits per machine, so three machines (the assignment LP alone says 1.8).
        let batches = """
            {"name":"three-halves","planCostPerHour":3,"markets":[{"key":"a","price":1,"cpu":2000,"memory":100,"gpu":0}],\
            "workloads":[{"cpu":1000,"memory":1,"gpu":0,"markets":[0]},{"cpu":1000,"memory":1,"gpu":0,"markets":[0]},\
            {"cpu":1000,"memory":1,"gpu":0,"markets":[0]}]}
            {"name":"whole","planCostPerHour":2,"markets":[{"key":"b","price":2,"cpu":4000,"memory":100,"gpu":0}],\
            "workloads":[{"cpu":1000,"memory":1,"gpu":0,"markets":[0]}]}
            {"name":"one-each","planCostPerHour":3,"markets":[{"key":"c","price":1,"cpu":2000,"memory":100,"gpu":0}],\
            "workloads":[{"cpu":1200,"memory":1,"gpu":0,"markets":[0]},{"cpu":1200,"memory":1,"gpu":0,"markets":[0]},\
            {"cpu":1200,"memory":1,"gpu":0,"markets":[0]}]}

            """
        let (status, text) = try await Self.costBound(root: root, python: python, batches, "--max-ratio", "1.2")
        #expect(status == 0)
        let rows = text.split(separator: "\n").map { $0.split(separator: " ", omittingEmptySubsequences: true) }
        let three = try #require(rows.first { $0.first == "three-halves" })
        let whole = try #require(rows.first { $0.first == "whole" })
        #expect(three[3] == "2.00" && three[4] == "1.5000" && three.last == "OVER")
        #expect(whole[3] == "2.00" && whole[4] == "1.0000")
        let oneEach = try #require(rows.first { $0.first == "one-each" })
        #expect(oneEach[3] == "3.00" && oneEach[4] == "1.0000")
        // Six workloads on 2-CPU, 8 GiB machines at $1: two take 2 CPUs each, one takes all 8 GiB, and the three of
        // 1 CPU need two machines, so five in all; models that pool a market's machines say four.
        let gib = 1 << 30
        let six = [(2000, 2 * gib), (250, 8 * gib), (2000, gib / 4), (1000, 2 * gib), (1000, 4 * gib), (1000, gib)]
            .map { "{\"cpu\":\($0.0),\"memory\":\($0.1),\"gpu\":0,\"markets\":[0]}" }.joined(separator: ",")
        let bins = { (plan: Int) in
            "{\"name\":\"bins\",\"planCostPerHour\":\(plan),\"markets\":[{\"key\":\"d\",\"price\":1,\"cpu\":2000,"
                + "\"memory\":\(8 * gib),\"gpu\":0}],\"workloads\":[\(six)]}\n"
        }
        let (fiveStatus, five) = try await Self.costBound(root: root, python: python, bins(5))
        #expect(fiveStatus == 0)
        let row = try #require(
            five.split(separator: "\n").map { $0.split(separator: " ") }.first { $0.first == "bins" })
        #expect(row[3] == "5.00" && row[4] == "1.0000")
        // A plan that claims four machines' price claims less than any plan can cost: the checker fails.
        let (fourStatus, four) = try await Self.costBound(root: root, python: python, bins(4))
        #expect(fourStatus == 1)
        #expect(four.contains("bins: its plan claims 4.000000 $/h, less than any plan of its workloads can cost"))
    }

    /// Runs scripts/cost-bound on `batches` (JSON lines): its exit status and what it printed (both streams).
    static func costBound(root: URL, python: String, _ batches: String, _ args: String...) async throws
        -> (Int32, String)
    {
        let input = FileManager.default.temporaryDirectory.appendingPathComponent(
            "cost-bound-\(getpid())-\(UUID().uuidString.prefix(8)).jsonl")
        try batches.write(to: input, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: input) }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: python)
        p.arguments = [root.appendingPathComponent("scripts/cost-bound").path] + args + [input.path]
        let out = Pipe()
        p.standardOutput = out
        p.standardError = out
        try p.run()
        // Read and wait on a thread of its own: blocking a cooperative thread would stall other tests.
        let text = await withCheckedContinuation { (c: CheckedContinuation<String, Never>) in
            Thread {
                let data = out.fileHandleForReading.readDataToEndOfFile()
                p.waitUntilExit()
                c.resume(returning: String(decoding: data, as: UTF8.self))
            }.start()
        }
        return (p.terminationStatus, text)
    }
}
