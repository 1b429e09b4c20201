import Distributed
import FabricActors
import FabricCore
import FabricLog
import FabricRuntime
import Foundation
import Synchronization
import Testing

@testable import Shuttle

/// A control plane whose answers the test scripts, recording what nodes send it.
actor ScriptedRegistry: NodeRegistry {
    var token = "right"
    var registrations: [NodeRegistration] = []
    var heartbeats = 0
    var reports: [NodeReport] = []
    /// Heartbeats answered `registerAgain` before `ok` again.
    var refuseHeartbeats = 0
    var heartbeatIntervalMillis: Int64 = 20
    var lostAfterMillis: Int64 = 4000
    /// Heartbeats never answered (as if the reply was lost): each waits until the test ends.
    var swallowHeartbeats = false
    var heartbeatTimes: [Date] = []

    func setRefuseHeartbeats(_ n: Int) { refuseHeartbeats = n }
    func setSwallowHeartbeats(_ on: Bool) { swallowHeartbeats = on }

    func register(_ r: NodeRegistration, node: ShuttleNode) async throws -> RegistrationReply {
        guard r.joinToken == token else { throw FabricError(.permissionDenied, "join token rejected") }
        registrations.append(r)
        return RegistrationReply(
            state: .ready, heartbeatIntervalMillis: heartbeatIntervalMillis, lostAfterMillis: lostAfterMillis,
            adopted: 0, stopped: 0)
    }

    func heartbeat(node: String, session: String) async -> NodeAck {
        heartbeats += 1
        heartbeatTimes.append(Date())
        if swallowHeartbeats {
            try? await Task.sleep(for: .seconds(60))
            return .ok
        }
        if refuseHeartbeats > 0 {
            refuseHeartbeats -= 1
            return .registerAgain
        }
        return .ok
    }

    func report(node: String, session: String, _ report: NodeReport) async -> NodeAck {
        reports.append(report)
        return .ok
    }
}

/// A control plane and one node on in-process actor systems (every call encoded and decoded), with a real process
/// runtime under fabric-monitor.
struct NodeRig {
    let dir = NSTemporaryDirectory() + "fabric-shuttle-\(UUID().uuidString.prefix(8))"
    let registry = ScriptedRegistry()
    let control: ControlPlane
    let host: NodeHost
    let controlSystem: LocalActorSystem
    let sink = MemorySink()

    init(token: String = "right", fenced: Bool = false, linkUp: (@Sendable () -> Bool)? = nil) throws {
        let network = LoopbackNetwork()
        controlSystem = try LocalActorSystem(node: NodeProtocolLimits.controlPlaneNode, network: network)
        control = try ControlPlane.serve(registry: registry, on: controlSystem)
        let config = NodeConfig(
            name: "n1", region: "lab", cpuMillis: 2000, memoryBytes: 1 << 30, gpuCount: 2, gpuModel: "H100",
            pricePerHour: 1.5, labels: ["zone": "a"], dataDir: dir, logBytesMax: 1 << 16, fenced: fenced,
            stopGrace: .seconds(1))
        let logger = Logger(component: "test", level: .debug, sink: sink)
        let agent = config.makeAgent(now: Timestamp(millisecondsSinceEpoch: 0), logger: logger, detected: .zero)
        var options = ShuttleRunner.Options(
            joinToken: token, session: "session-a", version: "test", heartbeatInterval: .seconds(60))
        if let linkUp { options.linkUp = linkUp }
        host = try NodeHost(
            agent: agent, system: try LocalActorSystem(node: "n1", network: network), options: options, logger: logger)
    }

    /// Polls `condition` (bounded).
    func eventually(_ seconds: Double = 10, _ condition: () async -> Bool) async -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if await condition() { return true }
            try? await Task.sleep(for: .milliseconds(10))
        }
        return await condition()
    }
}

@Suite struct NodeProtocolMessageTests {
    /// Every message that crosses the wire, in every shape, survives a JSON round trip unchanged.
    @Test func everyMessageRoundTrips() throws {
        let info = NodeInfo(
            id: "n1", name: "n1", region: "eu", machineType: "local",
            capacity: Resources(cpuMillis: 4000, memoryBytes: 8 << 30, gpu: GPUSpec(count: 2, model: "A100")),
            labels: ["zone": "a"], runtimes: [.process], pricePerHour: 2.5,
            registeredAt: Timestamp(millisecondsSinceEpoch: 1_800_000_000_000))
        let registration = NodeRegistration(
            info: info, joinToken: "t", session: "s",
            inventory: [
                RuntimeAttempt(workloadID: "a", attempt: 1, state: .running),
                RuntimeAttempt(workloadID: "b", attempt: 2, state: .exited(.exited(code: 3))),
                RuntimeAttempt(workloadID: "c", attempt: 3, state: .exited(.signaled(signal: 9))),
                RuntimeAttempt(workloadID: "d", attempt: 4, state: .missing(reason: "gone")),
            ], version: "1")
        try roundTrip(registration)
        try roundTrip(
            RegistrationReply(
                state: .draining, heartbeatIntervalMillis: 200, lostAfterMillis: 3000, adopted: 1, stopped: 2))
        try roundTrip(NodeAck.ok)
        try roundTrip(NodeAck.registerAgain)
        try roundTrip(
            Assignment(
                workloadID: "w", attempt: 2,
                spec: WorkloadSpec(name: "x", command: ["sh", "-c", "echo"], env: ["A": "1"], workingDir: "/tmp")))
        for report in [
            NodeReport.started(workloadID: "w", attempt: 1),
            .startFailed(workloadID: "w", attempt: 1, message: "no such program"),
            .exited(workloadID: "w", attempt: 1, status: .signaled(signal: 15)),
        ] {
            try roundTrip(report)
        }
    }

    func roundTrip<T: Codable & Equatable>(_ value: T) throws {
        let data = try FabricJSON.encode(value)
        #expect(try JSONDecoder().decode(T.self, from: data) == value, "\(T.self)")
    }
}

/// A millisecond field of a monitor record.
func millis(_ key: String, in path: String) -> Int64? {
    guard let data = FileManager.default.contents(atPath: path),
        let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any]
    else { return nil }
    return (object[key] as? NSNumber)?.int64Value
}

@Suite(.serialized) struct ShuttleRunnerTests {
    @Test func registersWithItsCapacityAndHeartbeatsAtTheControlPlanesInterval() async throws {
        let rig = try NodeRig()
        #expect(await rig.host.waitUntilRegistered(timeout: .seconds(10)))
        let r = try #require(await rig.registry.registrations.first)
        #expect(
            r.info.capacity == Resources(cpuMillis: 2000, memoryBytes: 1 << 30, gpu: GPUSpec(count: 2, model: "H100")))
        #expect(r.info.labels == ["zone": "a"] && r.info.region == "lab" && r.info.pricePerHour == 1.5)
        #expect(r.session == "session-a" && r.inventory.isEmpty)
        // The configured interval is 60 s; the control plane said 20 ms.
        #expect(await rig.eventually { await rig.registry.heartbeats >= 5 })
        await rig.host.stop()
    }

    @Test func aHeartbeatWithoutAnAnswerIsFollowedByAnotherWellBeforeLostAfter() async throws {
        // As when weaver restarts while a heartbeat is on its way: that call never gets an answer. The next ones must
        // not wait out a whole call timeout (5 s), or the node is declared lost (lost_after 4 s here) meanwhile.
        let rig = try NodeRig()
        #expect(await rig.host.waitUntilRegistered(timeout: .seconds(10)))
        await rig.registry.setSwallowHeartbeats(true)
        let from = await rig.registry.heartbeats
        #expect(await rig.eventually(20) { await rig.registry.heartbeats >= from + 4 })
        let times = Array(await rig.registry.heartbeatTimes.suffix(4))
        let gaps = zip(times.dropFirst(), times).map { $0.timeIntervalSince($1) }
        #expect(gaps.allSatisfy { $0 < 4.0 }, "seconds between unanswered heartbeats: \(gaps)")
        await rig.registry.setSwallowHeartbeats(false)
        await rig.host.stop()
    }

    @Test func aWrongJoinTokenEndsTheRunnerWithPermissionDenied() async throws {
        let rig = try NodeRig(token: "wrong")
        await #expect(throws: FabricError.self) { try await rig.host.wait() }
        do { try await rig.host.wait() } catch let e as FabricError { #expect(e.code == .permissionDenied) }
        #expect(await rig.registry.registrations.isEmpty)
        #expect(rig.sink.lines.contains { $0.contains("weaver refused this node") })
        #expect(!rig.sink.lines.contains { $0.contains("wrong") && $0.contains("token=") })
    }

    @Test func registerAgainMakesItRegisterAgainWithItsInventory() async throws {
        let rig = try NodeRig()
        #expect(await rig.host.waitUntilRegistered(timeout: .seconds(10)))
        // A workload runs through the node actor, as the control plane would send it.
        let node = try ShuttleNode.proxy(node: "n1", on: rig.controlSystem)
        try await node.run(
            Assignment(workloadID: "wl-1", attempt: 1, spec: WorkloadSpec(name: "x", command: ["sleep", "30"])))
        #expect(await rig.eventually { await rig.registry.reports.contains(.started(workloadID: "wl-1", attempt: 1)) })
        await rig.registry.setRefuseHeartbeats(1)
        #expect(await rig.eventually { await rig.registry.registrations.count == 2 })
        let again = try #require(await rig.registry.registrations.last)
        #expect(again.inventory == [RuntimeAttempt(workloadID: "wl-1", attempt: 1, state: .running)])
        // Every node method crosses the encoder: logs, stop (with its exit status), acknowledge.
        #expect(try await node.logs(workloadID: "wl-1", kind: .process, tailBytes: nil) == Data())
        #expect(
            try await node.stop(workloadID: "wl-1", attempt: 1, kind: .process, graceMillis: 1000)
                == .signaled(signal: SIGTERM))
        #expect(
            await rig.eventually {
                await rig.registry.reports.contains(
                    .exited(workloadID: "wl-1", attempt: 1, status: .signaled(signal: SIGTERM)))
            })
        try await node.acknowledge(workloadID: "wl-1", attempt: 1)
        #expect(await rig.host.agent.inventory().isEmpty, "acknowledged attempts leave the inventory")
        await rig.host.stop()
    }

    @Test func aNodeWhoseLinkStaysDownForHalfOfLostAfterStopsItsWorkloads() async throws {
        let down = Mutex(false)
        let rig = try NodeRig(linkUp: { !down.withLock { $0 } })
        #expect(await rig.host.waitUntilRegistered(timeout: .seconds(10)))
        let node = try ShuttleNode.proxy(node: "n1", on: rig.controlSystem)
        try await node.run(
            Assignment(workloadID: "wl-f", attempt: 1, spec: WorkloadSpec(name: "x", command: ["sleep", "30"])))
        #expect(await rig.eventually { await rig.registry.reports.contains(.started(workloadID: "wl-f", attempt: 1)) })
        // Weaver said lost_after = 4 s: after 2 s with the link down the node stops its work (grace 1 s).
        down.withLock { $0 = true }
        #expect(
            await rig.eventually(10) {
                await rig.registry.reports.contains(
                    .exited(workloadID: "wl-f", attempt: 1, status: .signaled(signal: SIGTERM)))
            })
        #expect(rig.sink.lines.contains { $0.contains("link down for half of lost_after") })
        #expect(await rig.host.runner.linkFences == 1)
        down.withLock { $0 = false }
        await rig.host.stop()
    }

    @Test func aStopNamingAnotherRuntimeKindStillStopsTheAttempt() async throws {
        // Weaver stopping a stale attempt of a workload it no longer holds cannot know its runtime kind.
        let rig = try NodeRig()
        #expect(await rig.host.waitUntilRegistered(timeout: .seconds(10)))
        let node = try ShuttleNode.proxy(node: "n1", on: rig.controlSystem)
        try await node.run(
            Assignment(workloadID: "wl-k", attempt: 1, spec: WorkloadSpec(name: "x", command: ["sleep", "30"])))
        #expect(await rig.eventually { await rig.registry.reports.contains(.started(workloadID: "wl-k", attempt: 1)) })
        #expect(
            try await node.stop(workloadID: "wl-k", attempt: 1, kind: .container, graceMillis: 1000)
                == .signaled(signal: SIGTERM))
        await rig.host.stop()
    }

    @Test func aNewerAttemptSupersedesAnOlderOneStillRunning() async throws {
        let rig = try NodeRig()
        #expect(await rig.host.waitUntilRegistered(timeout: .seconds(10)))
        let node = try ShuttleNode.proxy(node: "n1", on: rig.controlSystem)
        try await node.run(
            Assignment(workloadID: "wl-2", attempt: 1, spec: WorkloadSpec(name: "x", command: ["sleep", "30"])))
        #expect(await rig.eventually { await rig.registry.reports.contains(.started(workloadID: "wl-2", attempt: 1)) })
        try await node.run(
            Assignment(workloadID: "wl-2", attempt: 2, spec: WorkloadSpec(name: "x", command: ["sleep", "30"])))
        #expect(await rig.eventually { await rig.registry.reports.contains(.started(workloadID: "wl-2", attempt: 2)) })
        // The first attempt's process ended (SIGTERM) before the second one's was spawned.
        let ended = try #require(millis("finishedAtMs", in: rig.dir + "/workloads/wl-2/1/exit.json"))
        let started = try #require(millis("startedAtMs", in: rig.dir + "/workloads/wl-2/2/state.json"))
        #expect(ended <= started)
        #expect(
            try String(contentsOfFile: rig.dir + "/workloads/wl-2/1/exit.json", encoding: .utf8).contains(
                "\"signal\":15"))
        #expect(await rig.host.agent.inventory() == [RuntimeAttempt(workloadID: "wl-2", attempt: 2, state: .running)])
        // A late stop of the superseded attempt (the control plane reconciling a node that came back) leaves the new
        // one running.
        #expect(try await node.stop(workloadID: "wl-2", attempt: 1, kind: .process, graceMillis: 1000) == nil)
        #expect(await rig.host.agent.inventory() == [RuntimeAttempt(workloadID: "wl-2", attempt: 2, state: .running)])
        _ = try await node.stop(workloadID: "wl-2", attempt: 2, kind: .process, graceMillis: 1000)
        await rig.host.stop()
    }

    @Test func aFencedNodeRenewsItsLeaseAndPassesTheControlPlanesTerms() async throws {
        let rig = try NodeRig(fenced: true)
        #expect(await rig.host.waitUntilRegistered(timeout: .seconds(10)))
        let lease = try #require(rig.host.agent.lease)
        #expect(lease.currentTerms == NodeLease.Terms(timeout: .seconds(2), grace: .seconds(1)))
        let first = try String(contentsOfFile: lease.path, encoding: .utf8)
        try await Task.sleep(for: .milliseconds(600))
        let later = try String(contentsOfFile: lease.path, encoding: .utf8)
        #expect(
            Int64(later.trimmingCharacters(in: .whitespacesAndNewlines))! > Int64(
                first.trimmingCharacters(in: .whitespacesAndNewlines))!)
        await rig.host.stop()
    }
}
