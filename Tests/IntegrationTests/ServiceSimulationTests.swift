import FabricProviders
import Foundation
import Testing

/// `fabric-sim --service` runs weaver's own control plane on the deterministic executor; the executor takes over the
/// process's global executor, so it runs as a child process, never inside the test runner.
@Suite("Service simulation")
struct ServiceSimulationTests {
    struct Run {
        var status: Int32
        var lines: [String]
        var hash: String? { lines.last.flatMap { $0.hasPrefix("event-log sha256=") ? $0 : nil } }
    }

    static func sim(_ args: [String]) throws -> Run {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: buildDirectory + "/fabric-sim")
        p.arguments = args
        let out = Pipe()
        p.standardOutput = out
        p.standardError = out
        try p.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        let text = String(decoding: data, as: UTF8.self)
        return Run(status: p.terminationStatus, lines: text.split(separator: "\n").map(String.init))
    }

    @Test("the same seed gives the same event log; every invariant holds and the fleet converges", arguments: [1, 5])
    func sameSeedSameLog(seed: Int) async throws {
        let args = ["--seed", String(seed), "--service", "--nodes", "6", "--duration", "20m", "--quiet"]
        async let first = Task.detached { try Self.sim(args) }.value
        async let second = Task.detached { try Self.sim(args) }.value
        let (a, b) = try await (first, second)
        #expect(a.status == 0, "\(a.lines.suffix(4))")
        let hash = try #require(a.hash, "\(a.lines.suffix(3))")
        #expect(hash.count == "event-log sha256=".count + 64)
        #expect(b.hash == hash)
        // Production's control plane did the work: workloads were submitted, started on machines, and ended.
        let workloads = try #require(a.lines.first { $0.hasPrefix("workloads:") })
        #expect(!workloads.contains(" 0 submitted"))
        #expect(workloads.contains("succeeded="))
        let starts = try #require(a.lines.first { $0.hasPrefix("starts:") })
        #expect(!starts.contains(" 0 process starts"))
    }

    @Test("without link fencing a partitioned node's work runs twice, and the invariants stop the run")
    func withoutLinkFencingTheInvariantsCatchADoubleRun() throws {
        // A node is cut off, weaver declares it lost and restarts its workloads elsewhere while they still run there.
        // Which seed shows it first depends on the build's interleavings (debug and release schedule jobs
        // differently), so a few known ones are tried in turn; each is deterministic for a given build.
        var caught: (seed: Int, run: Run)? = nil
        for seed in [6, 10, 8] {
            let run = try Self.sim(["--seed", String(seed), "--service", "--link-fencing", "off", "--quiet"])
            if run.status == 1 {
                caught = (seed, run)
                break
            }
        }
        let (seed, run) = try #require(caught, "no seed showed the double run")
        #expect(
            run.lines.contains { $0.hasPrefix("VIOLATION double-run: workload ") && $0.contains("while it runs on") })
        #expect(run.lines.contains("reproduce: make sim SEED=\(seed) SIM_ARGS=\"--service --link-fencing off\""))
        #expect(run.hash != nil)
    }

    @Test("an output file that cannot be written is refused before the run, naming the flag")
    func unwritableOutputsAreRefusedFirst() throws {
        for flag in ["--log", "--cost-batches"] {
            let run = try Self.sim(["--seed", "1", "--nodes", "10", "--duration", "1m", flag, "/nonexistent-dir/out"])
            #expect(run.status == 2)
            #expect(run.lines == ["fabric-sim: \(flag): cannot write /nonexistent-dir/out: No such file or directory"])
        }
        // A symlink is written through: the file it names holds the event log whose hash the last line prints.
        let dir = NSTemporaryDirectory() + "fabric-sim-out-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try FileManager.default.createSymbolicLink(atPath: dir + "/link", withDestinationPath: dir + "/events.txt")
        let run = try Self.sim(["--seed", "1", "--nodes", "10", "--duration", "1m", "--quiet", "--log", dir + "/link"])
        #expect(run.status == 0)
        let log = try #require(FileManager.default.contents(atPath: dir + "/events.txt"))
        #expect(log.count > 0)
        #expect(run.hash == "event-log sha256=" + Crypto.hex(Crypto.sha256(log)))
        #expect(try FileManager.default.destinationOfSymbolicLink(atPath: dir + "/link") == dir + "/events.txt")
        // What an earlier run left in the cost-batches file does not pass for this run's (--service writes none).
        try Data("{\"stale\":1}\n".utf8).write(to: URL(fileURLWithPath: dir + "/events.txt"))
        let service = try Self.sim([
            "--seed", "1", "--service", "--nodes", "5", "--duration", "10m", "--quiet", "--cost-batches", dir + "/link",
        ])
        #expect(service.status == 0)
        #expect(FileManager.default.contents(atPath: dir + "/events.txt") == Data())
        // The same file under two names is refused: the cost batches would overwrite the event log.
        let same = try Self.sim(["--seed", "1", "--log", dir + "/events.txt", "--cost-batches", dir + "/link"])
        #expect(same.status == 2)
        #expect(same.lines == ["fabric-sim: --log and --cost-batches name the same file"])
    }

    @Test("different seeds give different logs")
    func seedsDiffer() async throws {
        let a = try Self.sim(["--seed", "1", "--service", "--nodes", "5", "--duration", "10m", "--quiet"])
        let b = try Self.sim(["--seed", "2", "--service", "--nodes", "5", "--duration", "10m", "--quiet"])
        #expect(a.hash != nil && b.hash != nil)
        #expect(a.hash != b.hash)
    }
}
