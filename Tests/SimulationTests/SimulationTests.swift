import FabricCore
import Testing

@testable import FabricSimulation

/// Small fleets and one simulated hour keep these fast in debug builds.
private func simulate(_ seed: UInt64, nodes: Int = 20, scheduler: SchedulerVariant = .index) -> (
    violation: Violation?, hash: String, lines: [String]
) {
    let sim = Simulation(
        options: SimOptions(seed: seed, nodes: nodes, duration: .seconds(3600), scheduler: scheduler), keepLog: true)
    let v = sim.run()
    return (v, sim.log.sha256Hex(), sim.logLines)
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
    }

    @Test(arguments: [
        ([], "--seed N is required"),
        (["--seed"], "--seed needs a value"),
        (["--seed", "-1"], "--seed takes a whole number"),
        (["--seed", "1", "--nodes", "0"], "--nodes takes a whole number from 1 to 20000"),
        (["--seed", "1", "--duration", "6x"], "--duration takes a number and a unit"),
        (["--seed", "1", "--duration", "10s"], "--duration must be from 1m to 7d"),
        (["--seed", "1", "--scheduler", "fast"], "--scheduler takes one of index, reference"),
        (["--seed", "1", "--frobnicate"], "unknown option \"--frobnicate\""),
    ])
    func rejectsBadInput(args: [String], message: String) {
        #expect {
            try SimOptions.parse(args)
        } throws: { error in
            (error as? SimError)?.message.contains(message) == true
        }
    }

    @Test(arguments: [("90s", 90), ("30m", 1800), ("6h", 21600), ("1d", 86400)] as [(String, Int64)])
    func durations(text: String, seconds: Int64) {
        #expect(SimOptions.parseDuration(text) == .seconds(seconds))
    }

    @Test func reproduceLineCarriesTheOverrides() {
        #expect(SimOptions(seed: 5).reproduceCommand == "make sim SEED=5")
        #expect(
            SimOptions(seed: 5, nodes: 20, duration: .seconds(3600), scheduler: .brokenGPUType).reproduceCommand
                == "make sim SEED=5 SIM_ARGS=\"--nodes 20 --duration 3600s --scheduler broken-gpu-type\"")
    }
}
