import FabricCore
import Foundation
import Glibc
import Synchronization
import Testing

@testable import FabricRuntime

// Real processes under the real fabric-monitor (built beside the test bundle: `swift build --product fabric-monitor`).
// Waits are bounded and generous; assertions are on values, never on timings.

/// A throwaway runtime root, removed when the test ends.
final class Sandbox {
    let root: String

    init() {
        var template = Array("/tmp/fabric-runtime-test-XXXXXX".utf8CString)
        let made = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        precondition(made != nil, "mkdtemp failed")
        root = String(decoding: template.dropLast().map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    deinit { try? FileManager.default.removeItem(atPath: root) }

    func runtime(logBytesMax: Int = 1 << 20) -> ProcessRuntime {
        ProcessRuntime(root: root, logBytesMax: logBytesMax)
    }
}

/// A request for `command` with no resource limits unless given.
func run(
    _ id: String, _ command: [String], attempt: Int = 0, env: [String: String] = [:], workingDir: String? = nil,
    resources: Resources = .zero
) -> RunRequest {
    RunRequest(
        workloadID: id, attempt: attempt, command: command, env: env, workingDir: workingDir, resources: resources)
}

/// `sh -c script`.
func sh(_ script: String) -> [String] { ["/bin/sh", "-c", script] }

/// Polls `condition` every 50 ms for up to `timeout`; returns its last value.
func eventually(timeout: Duration = .seconds(20), _ condition: () async throws -> Bool) async rethrows -> Bool {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if try await condition() { return true }
        try? await Task.sleep(for: .milliseconds(50))
    }
    return try await condition()
}

/// The workload's output as text.
func logText(_ runtime: ProcessRuntime, _ id: String, tailBytes: Int? = nil) async throws -> String {
    String(decoding: try await runtime.logs(workloadID: id, tailBytes: tailBytes), as: UTF8.self)
}

/// Pids of live (non-zombie) and zombie processes whose process group is `pgid`, from /proc.
func processes(inGroup pgid: Int32) -> [(pid: Int32, zombie: Bool)] {
    let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
    return entries.compactMap { name in
        guard let pid = Int32(name), let stat = Posix.procStat(pid), stat.pgid == pgid else { return nil }
        return (pid, stat.isDead)
    }
}

/// The state.json of a workload's current attempt.
func monitorState(_ runtime: ProcessRuntime, _ id: String) -> MonitorState? {
    runtime.currentAttempt(id)?.readState()
}

/// Whether this process holds CAP_SYS_RESOURCE (needed to lower an OOM score), from /proc/self/status.
func hasCapSysResource() -> Bool {
    let capSysResource = 24
    guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
        let line = status.split(separator: "\n").first(where: { $0.hasPrefix("CapEff:") }),
        let mask = UInt64(line.dropFirst("CapEff:".count).trimmingCharacters(in: .whitespaces), radix: 16)
    else { return false }
    return mask & (1 << capSysResource) != 0
}

/// Whether this process may create cgroups of a v1 controller: its own cgroup folder there is writable (root here).
func cgroupWritable(_ controller: String) -> Bool {
    ownCgroup(controller).map { access("/sys/fs/cgroup/\(controller)" + $0, W_OK) == 0 } ?? false
}

/// This process's cgroup path for a v1 controller ("" for the root), from /proc/self/cgroup.
func ownCgroup(_ controller: String) -> String? {
    guard let text = try? String(contentsOfFile: "/proc/self/cgroup", encoding: .utf8) else { return nil }
    for line in text.split(separator: "\n") {
        let parts = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
        guard parts.count == 3, parts[1].split(separator: ",").contains(Substring(controller)) else { continue }
        return parts[2] == "/" ? "" : String(parts[2])
    }
    return nil
}

@Suite("ProcessRuntime: start, exit, logs")
struct StartAndExitTests {
    @Test("stdout and stderr both land in the log; exit 0")
    func echoesBothStreams() async throws {
        let box = Sandbox()
        let runtime = box.runtime()
        try await runtime.start(run("echo", sh("echo to-stdout; echo to-stderr >&2")))
        #expect(await runtime.waitForExit(workloadID: "echo") == .exited(code: 0))
        let text = try await logText(runtime, "echo")
        #expect(text.contains("to-stdout\n"))
        #expect(text.contains("to-stderr\n"))
        #expect(text.utf8.count == "to-stdout\nto-stderr\n".utf8.count)
        #expect(await runtime.recover(workloadID: "echo") == .exited(.exited(code: 0)))
    }

    @Test("a non-zero exit code is reported")
    func exitCode() async throws {
        let box = Sandbox()
        let runtime = box.runtime()
        try await runtime.start(run("three", sh("exit 3")))
        #expect(await runtime.waitForExit(workloadID: "three") == .exited(code: 3))
        #expect(await runtime.waitForExit(workloadID: "three") == .exited(code: 3))
    }

    @Test("a program that does not exist: start throws naming it; the attempt ends with 127")
    func programNotFound() async throws {
        let box = Sandbox()
        let runtime = box.runtime()
        let error = await #expect(throws: FabricError.self) {
            try await runtime.start(run("nope", ["fabric-no-such-program-4711", "arg"]))
        }
        #expect(error?.code == .failedPrecondition)
        #expect(error?.message.contains("\"fabric-no-such-program-4711\" not found") == true)
        #expect(await runtime.waitForExit(workloadID: "nope") == .exited(code: 127))
        #expect(await runtime.recover(workloadID: "nope") == .exited(.exited(code: 127)))
    }

    @Test("a file that is not executable: start throws; the attempt ends with 126")
    func notExecutable() async throws {
        let box = Sandbox()
        let runtime = box.runtime()
        let script = box.root + "/script.sh"
        try "echo hi\n".write(toFile: script, atomically: true, encoding: .utf8)
        let error = await #expect(throws: FabricError.self) { try await runtime.start(run("noexec", [script])) }
        #expect(error?.message == "program \"\(script)\" is not executable (permission denied)")
        #expect(await runtime.waitForExit(workloadID: "noexec") == .exited(code: 126))
    }

    @Test("a working directory that does not exist: start throws naming it")
    func badWorkingDirectory() async throws {
        let box = Sandbox()
        let runtime = box.runtime()
        let error = await #expect(throws: FabricError.self) {
            try await runtime.start(run("nodir", ["true"], workingDir: "/nonexistent/fabric-dir"))
        }
        #expect(error?.code == .failedPrecondition)
        #expect(error?.message.contains("\"/nonexistent/fabric-dir\"") == true)
    }

    @Test("env and workingDir are applied; PATH is inherited")
    func environmentAndWorkingDirectory() async throws {
        let box = Sandbox()
        let runtime = box.runtime()
        let dir = box.root + "/work dir"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try await runtime.start(
            run(
                "env", sh("echo \"$GREETING\"; pwd; echo \"$EMPTY|\"; echo \"$PATH\""),
                env: ["GREETING": "hello fabric", "EMPTY": ""], workingDir: dir))
        #expect(await runtime.waitForExit(workloadID: "env") == .exited(code: 0))
        let path = ProcessInfo.processInfo.environment["PATH"] ?? ProcessRuntime.Limits.defaultPath
        #expect(try await logText(runtime, "env") == "hello fabric\n\(dir)\n|\n\(path)\n")
    }

    @Test("a missing monitor executable, or one that exits without a record, makes start throw")
    func brokenMonitor() async throws {
        let box = Sandbox()
        let missing = ProcessRuntime(root: box.root, monitorPath: "/nonexistent/fabric-monitor", logBytesMax: 4096)
        let error = await #expect(throws: FabricError.self) { try await missing.start(run("m", ["true"])) }
        #expect(error?.code == .failedPrecondition)
        #expect(error?.message.contains("/nonexistent/fabric-monitor") == true)

        let silent = ProcessRuntime(root: box.root, monitorPath: "/bin/true", logBytesMax: 4096)
        let silentError = await #expect(throws: FabricError.self) { try await silent.start(run("s", ["true"])) }
        #expect(silentError?.code == .internalError)
        #expect(silentError?.message.contains("exited before starting true") == true)
        guard case .missing = await silent.recover(workloadID: "s") else {
            Issue.record("expected .missing")
            return
        }
    }

    @Test("the default monitor is fabric-monitor beside the running executable")
    func defaultMonitorPath() throws {
        let exe = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")
        let expected = URL(fileURLWithPath: exe).deletingLastPathComponent().appendingPathComponent("fabric-monitor")
        #expect(ProcessRuntime.defaultMonitorPath() == expected.path)
        #expect(access(ProcessRuntime.defaultMonitorPath(), X_OK) == 0)
    }

    @Test("invalid requests are refused before anything runs")
    func validation() async throws {
        let box = Sandbox()
        let runtime = box.runtime()
        for (id, command) in [("../escape", ["true"]), ("", ["true"]), (".hidden", ["true"]), ("ok", [String]())] {
            let error = await #expect(throws: FabricError.self) { try await runtime.start(run(id, command)) }
            #expect(error?.code == .invalidArgument)
        }
        let error = await #expect(throws: FabricError.self) {
            try await runtime.start(run("rel", ["true"], workingDir: "relative"))
        }
        #expect(error?.field == "workingDir")
        #expect(try FileManager.default.contentsOfDirectory(atPath: box.root).isEmpty)
    }

    @Test("the same attempt cannot start twice; a new attempt cannot start while the last one runs")
    func attemptsDoNotOverlap() async throws {
        let box = Sandbox()
        let runtime = box.runtime()
        try await runtime.start(run("w", ["sleep", "30"], attempt: 1))
        let again = await #expect(throws: FabricError.self) { try await runtime.start(run("w", ["true"], attempt: 1)) }
        #expect(again?.code == .alreadyExists)
        let next = await #expect(throws: FabricError.self) { try await runtime.start(run("w", ["true"], attempt: 2)) }
        #expect(next?.code == .conflict)
        await runtime.stop(workloadID: "w", grace: .seconds(5))
        #expect(await runtime.waitForExit(workloadID: "w") == .signaled(signal: SIGTERM))
        try await runtime.start(run("w", sh("echo second"), attempt: 2))
        #expect(await runtime.waitForExit(workloadID: "w") == .exited(code: 0))
        #expect(try await logText(runtime, "w") == "second\n")
        #expect(runtime.currentAttempt("w")?.attempt == 2)
    }

    @Test("unknown workloads: logs throws notFound, recover says missing, stop does nothing")
    func unknownWorkload() async throws {
        let box = Sandbox()
        let runtime = box.runtime()
        let error = await #expect(throws: FabricError.self) {
            _ = try await runtime.logs(workloadID: "x", tailBytes: 10)
        }
        #expect(error?.code == .notFound)
        guard case .missing(let reason) = await runtime.recover(workloadID: "x") else {
            Issue.record("expected .missing")
            return
        }
        #expect(reason.contains("no record of workload x"))
        await runtime.stop(workloadID: "x", grace: .seconds(1))
    }
}

@Suite("ProcessRuntime: stop and process groups")
struct StopTests {
    @Test("stop of `sleep 60` ends it with SIGTERM")
    func stopTerminates() async throws {
        let box = Sandbox()
        let runtime = box.runtime()
        try await runtime.start(run("sleeper", ["sleep", "60"]))
        #expect(await runtime.recover(workloadID: "sleeper") == .running)
        await runtime.stop(workloadID: "sleeper", grace: .seconds(30))
        #expect(await runtime.recover(workloadID: "sleeper") == .exited(.signaled(signal: SIGTERM)))
        #expect(await runtime.waitForExit(workloadID: "sleeper") == .signaled(signal: SIGTERM))
        // Stopping again is a no-op.
        await runtime.stop(workloadID: "sleeper", grace: .seconds(1))
    }

    @Test("a program that ignores SIGTERM is killed with SIGKILL after the grace")
    func stopKillsAfterGrace() async throws {
        let box = Sandbox()
        let runtime = box.runtime()
        try await runtime.start(run("stubborn", sh("trap '' TERM; echo ready; sleep 60")))
        #expect(try await eventually { try await logText(runtime, "stubborn") == "ready\n" })
        await runtime.stop(workloadID: "stubborn", grace: .milliseconds(300))
        #expect(await runtime.waitForExit(workloadID: "stubborn") == .signaled(signal: SIGKILL))
    }

    @Test("stop kills the whole process group, grandchildren included, and nothing is left as a zombie")
    func stopKillsGroup() async throws {
        let box = Sandbox()
        let runtime = box.runtime()
        try await runtime.start(run("family", sh("sleep 60 & sleep 60")))
        let state = try #require(monitorState(runtime, "family"))
        #expect(state.pgid == state.pid)
        #expect(await eventually { processes(inGroup: state.pgid).count >= 2 })
        await runtime.stop(workloadID: "family", grace: .seconds(30))
        #expect(await runtime.waitForExit(workloadID: "family") == .signaled(signal: SIGTERM))
        #expect(processes(inGroup: state.pgid).isEmpty)
    }

    @Test("when the workload exits, what it left running in its group is killed too")
    func exitKillsLeftovers() async throws {
        let box = Sandbox()
        let runtime = box.runtime()
        try await runtime.start(run("parent", sh("sleep 60 & echo started")))
        let state = try #require(monitorState(runtime, "parent"))
        #expect(await runtime.waitForExit(workloadID: "parent") == .exited(code: 0))
        #expect(processes(inGroup: state.pgid).isEmpty)
        let monitorLog = try String(contentsOfFile: runtime.currentAttempt("parent")!.monitorLog, encoding: .utf8)
        #expect(monitorLog.contains("killing processes left in group \(state.pgid)"))
    }

    @Test(
        "a descendant that left the process group (setsid) is killed through the cgroup",
        .enabled(if: cgroupWritable("memory")))
    func setsidEscapeeIsKilled() async throws {
        let box = Sandbox()
        let runtime = box.runtime()
        let marker = "4\(Int.random(in: 100_000...999_999))"
        let limits = Resources(cpuMillis: 500, memoryBytes: 256 << 20)
        try await runtime.start(run("escapee", sh("setsid sleep \(marker) & sleep 60"), resources: limits))
        #expect(await eventually { pids(matching: "sleep \(marker)").count == 1 })
        await runtime.stop(workloadID: "escapee", grace: .seconds(5))
        #expect(await runtime.waitForExit(workloadID: "escapee") == .signaled(signal: SIGTERM))
        #expect(await eventually { pids(matching: "sleep \(marker)").isEmpty })
    }

    @Test("the monitor ignores SIGTERM and SIGHUP and keeps supervising")
    func monitorIgnoresTerm() async throws {
        let box = Sandbox()
        let runtime = box.runtime()
        // Long enough that a stalled test thread still finds the monitor alive when it signals it.
        try await runtime.start(run("calm", sh("sleep 4; echo done")))
        let state = try #require(monitorState(runtime, "calm"))
        #expect(kill(state.monitorPid, SIGTERM) == 0)
        #expect(kill(state.monitorPid, SIGHUP) == 0)
        #expect(await runtime.waitForExit(workloadID: "calm") == .exited(code: 0))
        #expect(try await logText(runtime, "calm") == "done\n")
    }

    @Test("the monitor is a session leader, apart from the workload's own group, and stays small")
    func monitorDetached() async throws {
        let box = Sandbox()
        let runtime = box.runtime()
        try await runtime.start(run("detached", ["sleep", "30"]))
        let state = try #require(monitorState(runtime, "detached"))
        #expect(getsid(state.monitorPid) == state.monitorPid)
        #expect(getpgid(state.monitorPid) == state.monitorPid)
        #expect(getpgid(state.pid) == state.pid)
        #expect(state.pgid != getpgrp())
        // Only the monitor is shielded from the OOM killer; the workload keeps the score it inherited.
        func oomScoreAdj(_ pid: Int32) -> String? {
            (try? String(contentsOfFile: "/proc/\(pid)/oom_score_adj", encoding: .utf8))?
                .trimmingCharacters(in: .whitespacesAndNewlines)
        }
        if hasCapSysResource() {
            #expect(oomScoreAdj(state.monitorPid) == "-1000")
        } else {
            let monitorLog = try String(contentsOfFile: runtime.currentAttempt("detached")!.monitorLog, encoding: .utf8)
            #expect(monitorLog.contains("cannot set oom_score_adj=-1000"))
        }
        #expect(oomScoreAdj(state.pid) == oomScoreAdj(getpid()))
        let status = try String(contentsOfFile: "/proc/\(state.monitorPid)/status", encoding: .utf8)
        let anonKiB = status.split(separator: "\n").first { $0.hasPrefix("RssAnon:") }
            .flatMap { Int($0.split(separator: " ")[1]) }
        print(
            "fabric-monitor RSS: "
                + status.split(separator: "\n").filter { $0.hasPrefix("Rss") || $0.hasPrefix("VmRSS") }
                .map { $0.split(separator: " ", omittingEmptySubsequences: true).joined(separator: " ") }.joined(
                    separator: ", "))
        #expect((anonKiB ?? .max) < 16 << 10)
        await runtime.stop(workloadID: "detached", grace: .seconds(10))
    }
}

@Suite("ProcessRuntime: bounded logs")
struct LogTests {
    @Test("5 MB written under a 64 KiB limit leave at most 128 KiB on disk; the tail is the newest bytes")
    func rotationBoundsDisk() async throws {
        let box = Sandbox()
        let limit = 64 << 10
        let runtime = box.runtime(logBytesMax: limit)
        try await runtime.start(
            run("chatty", sh("head -c 5000000 /dev/zero | tr '\\000' x; echo; echo END-OF-OUTPUT")))
        #expect(await runtime.waitForExit(workloadID: "chatty") == .exited(code: 0))
        let paths = try #require(runtime.currentAttempt("chatty"))
        let current = Posix.fileSize(paths.output)
        let rotated = Posix.fileSize(paths.rotatedOutput)
        #expect(current <= limit)
        #expect(rotated > 0 && rotated <= limit)
        #expect(current + rotated <= 2 * limit)

        #expect(try await logText(runtime, "chatty", tailBytes: 14) == "END-OF-OUTPUT\n")
        // A tail reaching into the rotated file.
        let want = current + rotated / 2
        let tail = try await runtime.logs(workloadID: "chatty", tailBytes: want)
        #expect(tail.count == want)
        #expect(String(decoding: tail.suffix(15), as: UTF8.self) == "\nEND-OF-OUTPUT\n")
        #expect(tail.dropLast(15).allSatisfy { $0 == UInt8(ascii: "x") })
        let all = try await runtime.logs(workloadID: "chatty", tailBytes: nil)
        #expect(all.count == current + rotated)
        #expect(try await runtime.logs(workloadID: "chatty", tailBytes: 0).isEmpty)
        let error = await #expect(throws: FabricError.self) {
            _ = try await runtime.logs(workloadID: "chatty", tailBytes: -1)
        }
        #expect(error?.code == .invalidArgument)
    }
}

@Suite("ProcessRuntime: recovery after a control-plane restart")
struct RecoveryTests {
    @Test("a new runtime on the same root adopts a running workload and sees it exit")
    func adoptsRunning() async throws {
        let box = Sandbox()
        let a = box.runtime()
        try await a.start(run("adopt", sh("sleep 5; echo bye")))
        let b = box.runtime()
        #expect(await b.recover(workloadID: "adopt") == .running)
        #expect(await b.waitForExit(workloadID: "adopt") == .exited(code: 0))
        #expect(try await logText(b, "adopt") == "bye\n")
    }

    @Test("a workload that ended while nobody watched is reported as exited")
    func exitedUnwatched() async throws {
        let box = Sandbox()
        let a = box.runtime()
        try await a.start(run("quick", ["true"]))
        let paths = try #require(a.currentAttempt("quick"))
        #expect(await eventually { Posix.exists(paths.exit) })
        let b = box.runtime()
        #expect(await b.recover(workloadID: "quick") == .exited(.exited(code: 0)))
    }

    @Test("a runtime can stop an adopted workload")
    func stopsAdopted() async throws {
        let box = Sandbox()
        try await box.runtime().start(run("adopted", ["sleep", "60"]))
        let b = box.runtime()
        #expect(await b.recover(workloadID: "adopted") == .running)
        await b.stop(workloadID: "adopted", grace: .seconds(30))
        #expect(await b.waitForExit(workloadID: "adopted") == .signaled(signal: SIGTERM))
    }

    @Test(
        "records whose monitor is dead and left no exit status are missing",
        arguments: [
            // A pid that cannot exist (above pid_max).
            Int32(0x7fff_fff0),
            // This test process, with a start time that is not its own: a pid reused by another process.
            getpid(),
        ])
    func missingWhenMonitorGone(monitorPid: Int32) async throws {
        let box = Sandbox()
        let dir = box.root + "/ghost/0"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try "0\n".write(toFile: box.root + "/ghost/current", atomically: true, encoding: .utf8)
        let state = MonitorState(
            monitorPid: monitorPid, monitorStartTime: 1, pid: 0x7fff_fff1, pgid: 0x7fff_fff1, startTime: 1,
            startedAtMs: 0, program: "sleep")
        try JSONEncoder().encode(state).write(to: URL(fileURLWithPath: dir + "/state.json"))
        let runtime = box.runtime()
        #expect(
            await runtime.recover(workloadID: "ghost")
                == .missing(reason: "monitor pid \(monitorPid) is gone and left no exit status"))
        #expect(await runtime.waitForExit(workloadID: "ghost") == .signaled(signal: SIGKILL))
    }

    @Test("an attempt folder without state.json is missing")
    func missingWithoutState() async throws {
        let box = Sandbox()
        try FileManager.default.createDirectory(atPath: box.root + "/empty/3", withIntermediateDirectories: true)
        try "3\n".write(toFile: box.root + "/empty/current", atomically: true, encoding: .utf8)
        guard case .missing(let reason) = await box.runtime().recover(workloadID: "empty") else {
            Issue.record("expected .missing")
            return
        }
        #expect(reason.contains("attempt 3 of workload empty has no state.json"))
    }

    @Test("a killed monitor leaves a missing attempt, and its unsupervised workload is killed")
    func monitorKilled() async throws {
        let box = Sandbox()
        let runtime = box.runtime()
        try await runtime.start(run("orphan", ["sleep", "60"]))
        let state = try #require(monitorState(runtime, "orphan"))
        #expect(kill(state.monitorPid, SIGKILL) == 0)
        #expect(await eventually { !Posix.isRunning(pid: state.monitorPid, startTime: state.monitorStartTime) })
        let recovered = await box.runtime().recover(workloadID: "orphan")
        #expect(
            recovered
                == .missing(
                    reason: "monitor pid \(state.monitorPid) is gone and left no exit status; killed its "
                        + "unsupervised workload pid \(state.pid)"))
        #expect(await runtime.waitForExit(workloadID: "orphan") == .signaled(signal: SIGKILL))
        // The workload was the monitor's child: now orphaned to init, which may not reap it; it must not run.
        #expect(await eventually { !Posix.isRunning(pid: state.pid, startTime: state.startTime) })
    }
}

@Suite("ProcessRuntime: cgroup limits")
struct CgroupTests {
    @Test("a workload over its 32Mi memory limit is killed with SIGKILL", .enabled(if: cgroupWritable("memory")))
    func memoryLimitKills() async throws {
        let box = Sandbox()
        let runtime = box.runtime()
        let limits = Resources(cpuMillis: 1000, memoryBytes: 32 << 20)
        try await runtime.start(
            run("hog", sh("a=$(head -c 200000000 /dev/zero | tr '\\000' x); echo survived"), resources: limits))
        #expect(await runtime.waitForExit(workloadID: "hog") == .signaled(signal: SIGKILL))
        // The monitor recorded it (a lost monitor would also read as SIGKILL in waitForExit).
        #expect(await runtime.recover(workloadID: "hog") == .exited(.signaled(signal: SIGKILL)))
        #expect(try await logText(runtime, "hog") == "")
        let paths = try #require(runtime.currentAttempt("hog"))
        let monitorLog = try String(contentsOfFile: paths.monitorLog, encoding: .utf8)
        #expect(monitorLog.contains("cgroup memory: entered"))
        #expect(monitorLog.contains("memory.limit_in_bytes=33554432"))
        // The cgroup is removed once the workload has ended.
        let name = "hog-0-\(runtime.cgroupSuffix)"
        #expect(!monitorLog.contains("cannot remove"))
        #expect(monitorLog.contains("/fabric/\(name) "))
    }

    @Test("the same workload under its limit runs to the end", .enabled(if: cgroupWritable("memory")))
    func underLimitRuns() async throws {
        let box = Sandbox()
        let runtime = box.runtime()
        try await runtime.start(
            run(
                "small",
                sh(
                    "a=$(head -c 1000000 /dev/zero | tr '\\000' x); echo ${#a}; grep -E ':(memory|cpu):' /proc/self/cgroup"
                ),
                resources: Resources(cpuMillis: 500, memoryBytes: 64 << 20)))
        #expect(await runtime.waitForExit(workloadID: "small") == .exited(code: 0))
        let lines = try await logText(runtime, "small").split(separator: "\n")
        let name = "small-0-\(runtime.cgroupSuffix)"
        #expect(lines.first == "1000000")
        #expect(lines.contains { $0.contains(":memory:") && $0.hasSuffix("/fabric/\(name)") })
        if cgroupWritable("cpu") {
            #expect(lines.contains { $0.contains(":cpu:") && $0.hasSuffix("/fabric/\(name)") })
            let monitorLog = try String(contentsOfFile: runtime.currentAttempt("small")!.monitorLog, encoding: .utf8)
            #expect(monitorLog.contains("cpu.cfs_period_us=100000 cpu.cfs_quota_us=50000"))
        }
        // The workload's cgroup is removed once it has ended.
        let own = try #require(ownCgroup("memory"))
        #expect(!FileManager.default.fileExists(atPath: "/sys/fs/cgroup/memory\(own)/fabric/\(name)"))
    }

    @Test("without limits enforcement no cgroup is made")
    func noEnforcement() async throws {
        let box = Sandbox()
        let runtime = ProcessRuntime(root: box.root, logBytesMax: 4096, enforcesResourceLimits: false)
        let args = runtime.monitorArguments(
            run("x", ["true"], resources: Resources(cpuMillis: 500, memoryBytes: 1 << 20)),
            runtime.attemptPaths("x", 0))
        #expect(!args.contains("--cgroup-memory-bytes"))
        let enforcing = box.runtime().monitorArguments(
            run("x", ["true"], attempt: 2, resources: Resources(cpuMillis: 500, memoryBytes: 1 << 20)),
            runtime.attemptPaths("x", 2))
        #expect(
            enforcing == [
                "--dir", box.root + "/x/2", "--log-bytes-max", String(1 << 20), "--cgroup-memory-bytes", "1048576",
                "--cgroup-cpu-millis", "500", "--cgroup-name", "x-2-\(runtime.cgroupSuffix)", "--", "true",
            ])
    }
}

@Suite("RuntimeCapacity")
struct CapacityTests {
    @Test("CPUs and memory of this host")
    func hostCapacity() {
        let resources = RuntimeCapacity.detect()
        #expect(resources.cpuMillis == Int64(RuntimeCapacity.cpuCount()) * 1000)
        #expect(resources.cpuMillis >= 1000)
        #expect(resources.cpuMillis <= Int64(sysconf(Int32(_SC_NPROCESSORS_CONF))) * 1000)
        let pages = Int64(sysconf(Int32(_SC_PHYS_PAGES))) * Int64(sysconf(Int32(_SC_PAGESIZE)))
        // /proc/meminfo and sysconf agree to within a page per KiB of rounding.
        #expect(abs(resources.memoryBytes - pages) < 1 << 20)
        if RuntimeCapacity.findNvidiaSMI() == nil { #expect(resources.gpu == nil) }
    }

    @Test("/proc/meminfo parsing")
    func memTotal() {
        #expect(
            RuntimeCapacity.parseMemTotal("MemTotal:       24683520 kB\nMemFree: 1 kB\n") == Int64(24_683_520) * 1024)
        #expect(RuntimeCapacity.parseMemTotal("MemFree: 1 kB\n") == nil)
    }

    @Test("nvidia-smi CSV parsing")
    func nvidiaSMI() {
        let gpus = RuntimeCapacity.parseNvidiaSMI("NVIDIA H200, 143771 MiB\nNVIDIA H100 80GB HBM3, 81559 MiB\n\n")
        #expect(
            gpus == [
                .init(name: "NVIDIA H200", model: "H200", memoryBytes: 143_771 << 20),
                .init(
                    name: "NVIDIA H100 80GB HBM3", model: GPUModel.canonical("NVIDIA H100 80GB HBM3"),
                    memoryBytes: 81_559 << 20),
            ])
        #expect(RuntimeCapacity.parseNvidiaSMI("").isEmpty)
        #expect(RuntimeCapacity.parseNvidiaSMI("garbage").isEmpty)
    }

    @Test("capacity summary: the most common GPU model, the first listed on a tie")
    func summary() {
        let h200 = RuntimeCapacity.DetectedGPU(name: "NVIDIA H200", model: "H200", memoryBytes: 1)
        let l4 = RuntimeCapacity.DetectedGPU(name: "NVIDIA L4", model: "L4", memoryBytes: 1)
        let r = RuntimeCapacity.summarize(cpuCount: 16, memoryBytes: 1 << 30, gpus: [l4, h200, h200])
        #expect(r == Resources(cpuMillis: 16_000, memoryBytes: 1 << 30, gpu: GPUSpec(count: 2, model: "H200")))
        #expect(
            RuntimeCapacity.summarize(cpuCount: 1, memoryBytes: 1, gpus: [l4, h200]).gpu
                == GPUSpec(count: 1, model: "L4"))
        #expect(RuntimeCapacity.summarize(cpuCount: 2, memoryBytes: 5, gpus: []).gpu == nil)
    }
}

/// PIDs whose command line is exactly `command` (from /proc).
func pids(matching command: String) -> [Int32] {
    guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return [] }
    return entries.compactMap { e -> Int32? in
        guard let pid = Int32(e),
            let raw = FileManager.default.contents(atPath: "/proc/\(e)/cmdline"), !raw.isEmpty
        else { return nil }
        let line = String(decoding: raw.dropLast(), as: UTF8.self).replacingOccurrences(of: "\u{0}", with: " ")
        return line == command ? pid : nil
    }
}

/// Lease fencing: a monitor stops its workload once the node runner stops renewing the node's lease.
struct FencingTests {
    @Test("a renewed lease keeps the workload running; a stale one gets SIGTERM, then SIGKILL after the grace")
    func staleLeaseFencesTheWorkload() async throws {
        let box = Sandbox()
        let lease = NodeLease(path: box.root + "/lease")
        // A timeout well above the renewal period, and renewals from a thread of their own (not the test's task,
        // which a busy cooperative pool can stall), so the lease does not go stale early on a loaded machine.
        lease.setTerms(NodeLease.Terms(timeout: .seconds(3), grace: .milliseconds(300)))
        try lease.renew()
        let renewing = Mutex(true)
        let renewer = Thread {
            while renewing.withLock({ $0 }) {
                try? lease.renew()
                Thread.sleep(forTimeInterval: 0.1)
            }
        }
        let runtime = ProcessRuntime(root: box.root + "/workloads", logBytesMax: 4096, lease: lease)
        try await runtime.start(run("polite", ["sleep", "60"]))
        try await runtime.start(run("stubborn", sh("trap '' TERM; echo ready; sleep 60")))
        #expect(try await eventually { try await logText(runtime, "stubborn") == "ready\n" })
        // Renewed for 4 s (past the 3 s timeout): both keep running.
        renewer.start()
        try await Task.sleep(for: .seconds(4))
        #expect(await runtime.recover(workloadID: "polite") == .running)
        #expect(await runtime.recover(workloadID: "stubborn") == .running)
        // Renewals stop: SIGTERM ends one, SIGKILL the one that ignores it.
        renewing.withLock { $0 = false }
        #expect(await runtime.waitForExit(workloadID: "polite") == .signaled(signal: SIGTERM))
        #expect(await runtime.waitForExit(workloadID: "stubborn") == .signaled(signal: SIGKILL))
        let record = try String(contentsOfFile: box.root + "/workloads/polite/0/exit.json", encoding: .utf8)
        #expect(record.contains("\"fenced\":true"))
        let log = try String(contentsOfFile: box.root + "/workloads/polite/0/monitor.log", encoding: .utf8)
        #expect(log.contains("fence: lease"))
    }

    @Test("without lease terms monitors get no lease flags; fencing terms end a workload before the node is lost")
    func termsAndArguments() throws {
        let box = Sandbox()
        let lease = NodeLease(path: box.root + "/lease")
        #expect(lease.monitorArguments() == [])
        let t = NodeLease.Terms.fencing(lostAfter: .seconds(15), stopGrace: .seconds(10))
        #expect(t == NodeLease.Terms(timeout: .milliseconds(7500), grace: .milliseconds(3750)))
        #expect(t.timeout + t.grace < .seconds(15))
        #expect(NodeLease.Terms.fencing(lostAfter: .seconds(15), stopGrace: .seconds(1)).grace == .seconds(1))
        lease.setTerms(t)
        #expect(
            lease.monitorArguments() == [
                "--lease-file", box.root + "/lease", "--lease-timeout-ms", "7500", "--fence-grace-ms", "3750",
            ])
    }
}
