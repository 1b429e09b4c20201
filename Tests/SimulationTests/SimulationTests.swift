import FabricCore
import FabricScheduler
import Foundation
import Testing

@testable import FabricSimulation

/// Small fleets and one simulated hour keep these fast in debug builds.
private func simulate(
    _ seed: UInt64, nodes: Int = 20, scheduler: SchedulerVariant = .index, batch: Bool = true,
    restartsPerDay: Double? = nil, costBatches: Bool = false, hours: Int64 = 1
) -> (violation: Violation?, hash: String, lines: [String], sim: Simulation) {
    var options = SimOptions(seed: seed, nodes: nodes, duration: .seconds(hours * 3600), scheduler: scheduler)
    options.batch = batch
    options.restartsPerDay = restartsPerDay
    if costBatches { options.costBatchesPath = "(in memory)" }
    let sim = Simulation(options: options, keepLog: true)
    let v = sim.run()
    return (v, sim.log.sha256Hex(), sim.logLines, sim)
}

struct DeterminismTests {
    @Test(arguments: [1, 2, 3, 42] as [UInt64])
    func sameSeedSameLog(seed: UInt64) {
        let a = simulate(seed)
        let b = simulate(seed)
        #expect(a.violation == nil)
        #expect(a.lines.count > 50)
        #expect(a.lines == b.lines)
        #expect(a.hash == b.hash)
        #expect(a.hash == EventLog.sha256Hex(of: a.lines.map { $0 + "\n" }.joined()))
    }

    @Test func differentSeedsDiffer() {
        let hashes = Set((1...4 as ClosedRange<UInt64>).map { simulate($0).hash })
        #expect(hashes.count == 4)
    }

    @Test func shortSwarmPasses() {
        for seed in 100...104 as ClosedRange<UInt64> {
            let r = simulate(seed, nodes: 10 + Int(seed % 5) * 10)
            #expect(r.violation == nil, "seed \(seed): \(r.violation.map(\.description) ?? "")")
        }
    }

    @Test func referenceSchedulerAgreesWithTheIndex() {
        // Both place at the cheapest feasible price with the same tie-breaks, so the runs are identical but for the
        // first line, which names the scheduler.
        let reference = simulate(7, scheduler: .reference)
        let index = simulate(7, scheduler: .index)
        #expect(reference.violation == nil)
        #expect(reference.lines.count > 50)
        #expect(Array(reference.lines.dropFirst()) == Array(index.lines.dropFirst()))
    }
}

struct BrokenSchedulerTests {
    /// The invariants catch each deliberately broken scheduler on some small seed, with the expected kind.
    @Test(arguments: [
        (SchedulerVariant.brokenGPUType, Violation.Kind.gpuMismatch),
        (SchedulerVariant.brokenDoubleBook, Violation.Kind.overCommit),
    ])
    func caught(variant: SchedulerVariant, kind: Violation.Kind) {
        let kinds = (1...5 as ClosedRange<UInt64>).map { simulate($0, scheduler: variant).violation?.kind }
        #expect(kinds.contains(kind), "\(variant.rawValue): \(kinds)")
        #expect(kinds.allSatisfy { $0 == nil || $0 == kind })
    }
}

struct BatchTests {
    /// Workloads that need new machines are planned together; the plans never cost more than a machine each.
    @Test func batchesCostNoMoreThanOneMachineEach() {
        let r = simulate(3, nodes: 50, hours: 2)
        let s = r.sim.stats
        #expect(r.violation == nil)
        #expect(s.batches == 11)
        #expect(s.batchedWorkloads == 74)
        #expect(s.batchMachines == 29)
        #expect(abs(s.batchPlanCostPerHour - 152.49) < 0.01, "\(s.batchPlanCostPerHour)")
        #expect(abs(s.batchEachCostPerHour - 156.91) < 0.01, "\(s.batchEachCostPerHour)")
        #expect(s.batchPlanCostPerHour < s.batchEachCostPerHour)
        #expect(s.batchEachCostPerHour < s.batchNaiveCostPerHour)
        for seed in 1...4 as ClosedRange<UInt64> {
            let t = simulate(seed).sim.stats
            #expect(t.batchPlanCostPerHour <= t.batchEachCostPerHour + 1e-9, "seed \(seed)")
        }
    }

    /// The batches are written in cost-bound's JSON-lines shape, and add up to what the summary reports.
    @Test func costBatchLinesAddUp() throws {
        let r = simulate(3, nodes: 50, costBatches: true, hours: 2)
        let lines = r.sim.costBatchLines
        #expect(lines.count == r.sim.stats.batches)
        var plan = 0.0
        var workloads = 0
        for line in lines {
            let b = try JSONDecoder().decode(CostBatch.self, from: Data(line.utf8))
            plan += b.planCostPerHour
            workloads += b.workloads.count
            #expect(b.workloads.allSatisfy { w in !w.markets.isEmpty && w.markets.allSatisfy { $0 < b.markets.count } })
            #expect(b.markets.allSatisfy { $0.price > 0 && $0.cpu > 0 })
        }
        #expect(abs(plan - r.sim.stats.batchPlanCostPerHour) < 1e-6)
        #expect(workloads == r.sim.stats.batchedWorkloads)
    }

    /// `--batch off` gives each workload its own machine at once: another run, and no batches.
    @Test func batchOffDiffers() {
        let on = simulate(3, nodes: 50, hours: 2)
        let off = simulate(3, nodes: 50, batch: false, hours: 2)
        #expect(on.violation == nil)
        #expect(off.violation == nil)
        #expect(on.hash != off.hash)
        #expect(on.sim.stats.batches > 0)
        #expect(off.sim.stats.batches == 0)
        #expect(off.lines.contains { $0.contains("awaiting batch") } == false)
        #expect(on.lines.contains { $0.contains("awaiting batch") })
    }
}

struct RestartTests {
    /// Controller restarts in the fault phase keep every invariant (no workload twice, no orphaned or duplicated
    /// machine, the $/h adds up), and the run is still the same for the same seed.
    @Test(arguments: [1, 2, 5, 9] as [UInt64])
    func restartsKeepInvariantsAndDeterminism(seed: UInt64) {
        let a = simulate(seed, nodes: 25, restartsPerDay: 200)
        let b = simulate(seed, nodes: 25, restartsPerDay: 200)
        #expect(a.violation == nil, "seed \(seed): \(a.violation.map(\.description) ?? "")")
        #expect(a.sim.stats.restarts >= 3)
        #expect(a.lines.contains { $0.contains("controller restarted") })
        #expect(a.hash == b.hash)
        #expect(a.lines == b.lines)
    }

    /// Restarts with one machine each, and with the broken schedulers, which the invariants still catch.
    @Test func restartsWithoutBatches() {
        let r = simulate(2, nodes: 25, batch: false, restartsPerDay: 200)
        #expect(r.violation == nil, "\(r.violation.map(\.description) ?? "")")
        #expect(r.sim.stats.restarts >= 3)
        let caught = (1...5 as ClosedRange<UInt64>).map {
            simulate($0, scheduler: .brokenDoubleBook, restartsPerDay: 200).violation?.kind
        }
        #expect(caught.contains(.overCommit), "\(caught)")
    }
}

struct EventQueueTests {
    @Test func ordersByTimeThenPushOrder() {
        var q = EventQueue<String>()
        let t = { (ms: Int64) in Timestamp(millisecondsSinceEpoch: ms) }
        q.push("c", at: t(30))
        q.push("a1", at: t(10))
        q.push("b", at: t(20))
        q.push("a2", at: t(10))
        q.push("a3", at: t(10))
        q.push("z", at: t(5))
        var out: [String] = []
        while let e = q.pop() { out.append(e.event) }
        #expect(out == ["z", "a1", "a2", "a3", "b", "c"])
        #expect(q.isEmpty)
    }

    @Test func manyEqualTimesKeepPushOrder() {
        var q = EventQueue<Int>()
        var rng = SplitMix64(seed: 9)
        for i in 0..<1000 { q.push(i, at: Timestamp(millisecondsSinceEpoch: Int64(rng.next() % 10))) }
        var last: (Int64, Int)? = nil
        while let e = q.pop() {
            if let (t, i) = last {
                #expect(t < e.at.millisecondsSinceEpoch || (t == e.at.millisecondsSinceEpoch && i < e.event))
            }
            last = (e.at.millisecondsSinceEpoch, e.event)
        }
    }
}

struct EventLogTests {
    @Test func sha256OfKnownText() {
        #expect(EventLog.sha256Hex(of: "abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        let log = EventLog()
        log.write("ab")
        #expect(log.sha256Hex() == EventLog.sha256Hex(of: "ab\n"))
    }
}

struct OptionsTests {
    @Test func parsesEveryOption() throws {
        let parsed = try SimOptions.parse([
            "--seed", "7", "--nodes", "500", "--duration", "6h", "--scheduler", "reference", "--quiet",
        ])
        var want = SimOptions(seed: 7, nodes: 500, duration: .seconds(6 * 3600), scheduler: .reference)
        want.quiet = true
        #expect(parsed == .run(want))
        #expect(try SimOptions.parse(["--help"]) == .help)
        var batchOff = SimOptions(seed: 3)
        batchOff.batch = false
        batchOff.restartsPerDay = 12
        batchOff.costBatchesPath = "b.jsonl"
        #expect(
            try SimOptions.parse([
                "--seed", "3", "--batch", "off", "--restarts-per-day", "12", "--cost-batches", "b.jsonl",
            ]) == .run(batchOff))
        var service = SimOptions(seed: 8)
        service.service = true
        service.linkFencing = false
        let parsedService = try SimOptions.parse(["--seed", "8", "--service", "--link-fencing", "off"])
        #expect(parsedService == .run(service))
        #expect(service.reproduceCommand == "make sim SEED=8 SIM_ARGS=\"--service --link-fencing off\"")
        #expect(throws: SimError.self) { try SimOptions.parse(["--seed", "8", "--link-fencing", "maybe"]) }
        #expect(throws: SimError.self) { try SimOptions.parse(["--seed", "8", "--link-fencing", "off"]) }
        #expect(throws: SimError.self) { try SimOptions.parse(["--seed", "8", "--service", "--nodes", "1000"]) }
        #expect(throws: SimError.self) { try SimOptions.parse(["--seed", "8", "--service", "--duration", "1d"]) }
        var windowed = SimOptions(seed: 9)
        windowed.service = true
        windowed.batchWindow = .zero
        #expect(try SimOptions.parse(["--seed", "9", "--service", "--batch-window", "0s"]) == .run(windowed))
        #expect(windowed.reproduceCommand == "make sim SEED=9 SIM_ARGS=\"--service --batch-window 0s\"")
        windowed.batchWindow = .milliseconds(1500)
        #expect(try SimOptions.parse(["--seed", "9", "--service", "--batch-window", "1.5s"]) == .run(windowed))
        #expect(windowed.reproduceCommand == "make sim SEED=9 SIM_ARGS=\"--service --batch-window 1500ms\"")
    }

    @Test(arguments: [
        ([], "--seed N is required"),
        (["--seed"], "--seed needs a value"),
        (["--seed", "-1"], "--seed takes a whole number"),
        (["--seed", "1", "--nodes", "0"], "--nodes takes a whole number from 1 to 20000"),
        (["--seed", "1", "--duration", "6x"], "--duration takes numbers with units"),
        (["--seed", "1", "--duration", "10s"], "--duration must be from 1m to 7d"),
        (["--seed", "1", "--scheduler", "fast"], "--scheduler takes one of index, reference"),
        (["--seed", "1", "--frobnicate"], "unknown option \"--frobnicate\""),
        (["--seed", "1", "--batch", "maybe"], "--batch takes on or off"),
        (["--seed", "1", "--restarts-per-day", "-2"], "--restarts-per-day takes a number"),
        (["--seed", "1", "--service", "--batch-window", "10m"], "--batch-window takes 0s to 300s"),
        (["--seed", "1", "--batch-window", "2s"], "--batch-window applies only with --service"),
        (["--seed", "1", "--service", "--batch-window", "-1s"], "--batch-window takes 0s to 300s"),
        (["--seed", "1", "--duration", "0s"], "--duration must be from 1m to 7d"),
        (
            ["--seed", "1", "--service", "--scheduler", "broken-double-book"],
            "--scheduler applies only without --service"
        ),
        (["--seed", "1", "--service", "--batch", "off"], "--batch applies only without --service"),
        (["--seed", "1", "--log", "x", "--cost-batches", "x"], "--log and --cost-batches name the same file"),
    ])
    func rejectsBadInput(args: [String], message: String) {
        #expect {
            try SimOptions.parse(args)
        } throws: { error in
            (error as? SimError)?.message.contains(message) == true
        }
    }

    @Test(
        arguments: [
            ("90s", 90_000), ("30m", 1_800_000), ("6h", 21_600_000), ("1d", 86_400_000), ("1h30m", 5_400_000),
            ("1.5s", 1500), ("500ms", 500), ("0s", 0),
        ] as [(String, Int64)])
    func durations(text: String, millis: Int64) {
        #expect(SimOptions.parseDuration(text) == .milliseconds(millis))
    }

    @Test func reproduceLineCarriesTheOverrides() {
        #expect(SimOptions(seed: 5).reproduceCommand == "make sim SEED=5")
        #expect(
            SimOptions(seed: 5, nodes: 20, duration: .seconds(3600), scheduler: .brokenGPUType).reproduceCommand
                == "make sim SEED=5 SIM_ARGS=\"--nodes 20 --duration 1h --scheduler broken-gpu-type\"")
    }
}
