// Every distributed method of the node protocol actors (ShuttleNode, ControlPlane), called through a resolved remote
// reference on LocalActorSystem, so each argument and result is encoded, crosses the loopback network and is decoded;
// the tests assert what arrived on the far side and what came back.
import Distributed
import FabricActors
import FabricCore
import FabricLog
import FabricRuntime
import Foundation
import Synchronization
import Testing

@testable import Shuttle

/// A control plane that records every call exactly as it arrived and answers with distinctive values.
actor RecordingRegistry: NodeRegistry {
    static let refusedToken = "wrong"
    static let reply = RegistrationReply(
        state: .draining, heartbeatIntervalMillis: 1234, lostAfterMillis: 56_789, adopted: 3, stopped: 2)

    var registrations: [(registration: NodeRegistration, node: ActorID)] = []
    var heartbeats: [(node: String, session: String)] = []
    var reports: [(node: String, session: String, report: NodeReport)] = []

    func register(_ r: NodeRegistration, node: ShuttleNode) async throws -> RegistrationReply {
        guard r.joinToken != Self.refusedToken else {
            throw FabricError(.permissionDenied, "join token rejected for node \(r.info.id)", field: "joinToken")
        }
        registrations.append((r, node.id))
        return Self.reply
    }

    /// `ok` for session `s1`, `registerAgain` for any other.
    func heartbeat(node: String, session: String) async -> NodeAck {
        heartbeats.append((node, session))
        return session == "s1" ? .ok : .registerAgain
    }

    /// `ok` for session `s1`, `registerAgain` for any other.
    func report(node: String, session: String, _ report: NodeReport) async -> NodeAck {
        reports.append((node, session, report))
        return session == "s1" ? .ok : .registerAgain
    }
}

/// The reports a node agent yields, collected as they come (the agent's stream has one reader: this). Its reading
/// task ends when the agent finishes.
final class ReportLog: Sendable {
    static let waitMax: Duration = .seconds(20)
    private let seen = Mutex<[NodeReport]>([])

    init(_ agent: NodeAgent) {
        Task { [self] in for await r in agent.reports { seen.withLock { $0.append(r) } } }
    }

    /// Waits (at most `waitMax`) until `count` reports arrived, and returns the first `count`.
    func first(_ count: Int) async -> [NodeReport] {
        let deadline = ContinuousClock.now + Self.waitMax
        while seen.withLock({ $0.count }) < count && ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(10))
        }
        return seen.withLock { Array($0.prefix(count)) }
    }
}

@Suite(.serialized) struct NodeActorRoundTripTests {
    /// The distributed methods the tests below call, as `Actor.method`.
    static let covered: Set<String> = [
        "ShuttleNode.run", "ShuttleNode.stop", "ShuttleNode.acknowledge", "ShuttleNode.logs",
        "ControlPlane.register", "ControlPlane.heartbeat", "ControlPlane.report",
    ]

    /// `Actor.method` for every `distributed func` declared in Sources/Shuttle/NodeActors.swift.
    static func declaredMethods() throws -> Set<String> {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { url.deleteLastPathComponent() }
        let text = try String(
            contentsOf: url.appendingPathComponent("Sources/Shuttle/NodeActors.swift"), encoding: .utf8)
        var actor = ""
        var found: Set<String> = []
        for line in text.split(separator: "\n") {
            let words = line.split(whereSeparator: { $0 == " " || $0 == "(" || $0 == "<" })
            if let i = words.firstIndex(of: "distributed"), i + 2 < words.count {
                if words[i + 1] == "actor" { actor = String(words[i + 2]) }
                if words[i + 1] == "func" { found.insert("\(actor).\(words[i + 2])") }
            }
        }
        return found
    }

    /// A control plane and node `n1` on two LocalActorSystems of one loopback network, the node's agent with a real
    /// process runtime; `body` gets proxies resolved on the other side, then everything shuts down.
    static func withRig(
        _ body: (
            _ control: ControlPlane, _ node: ShuttleNode, _ registry: RecordingRegistry, _ agent: NodeAgent,
            _ dir: String
        ) async throws -> Void
    ) async throws {
        let dir = NSTemporaryDirectory() + "fabric-roundtrip-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let network = LoopbackNetwork()
        let weaver = try LocalActorSystem(node: NodeProtocolLimits.controlPlaneNode, network: network)
        let shuttle = try LocalActorSystem(node: "n1", network: network)
        let registry = RecordingRegistry()
        let served = try ControlPlane.serve(registry: registry, on: weaver)
        let config = NodeConfig(
            name: "n1", region: "lab", cpuMillis: 2000, memoryBytes: 1 << 30, dataDir: dir, logBytesMax: 1 << 16,
            stopGrace: .seconds(1))
        let logger = Logger(component: "test", level: .warn, sink: MemorySink())
        let agent = config.makeAgent(now: Timestamp(millisecondsSinceEpoch: 0), logger: logger, detected: .zero)
        let node = try ShuttleNode.serve(agent: agent, on: shuttle)
        defer { withExtendedLifetime((served, node)) {} }  // the systems hold their actors weakly
        // Each side calls the other through a proxy: every call is encoded, sent and decoded.
        let control = try ControlPlane.proxy(on: shuttle)
        let nodeProxy = try ShuttleNode.proxy(node: "n1", on: weaver)
        #expect(__isRemoteActor(control) && __isRemoteActor(nodeProxy))
        do {
            try await body(control, nodeProxy, registry, agent, dir)
        } catch {
            await weaver.shutdown()
            await shuttle.shutdown()
            throw error
        }
        await agent.finish()
        await weaver.shutdown()
        await shuttle.shutdown()
        try? FileManager.default.removeItem(atPath: dir)
    }

    @Test func everyDeclaredDistributedMethodIsCovered() throws {
        let declared = try Self.declaredMethods()
        #expect(declared.count >= 7)
        #expect(declared == Self.covered, "uncovered: \(declared.subtracting(Self.covered).sorted())")
    }

    @Test func controlPlaneMethodsRoundTrip() async throws {
        try await Self.withRig { control, _, registry, _, _ throws in
            // register: a registration in every shape (GPU, labels, every inventory state) arrives whole.
            let info = NodeInfo(
                id: "n1", name: "n1", provider: "local", region: "lab", machineType: "local",
                capacity: Resources(cpuMillis: 3500, memoryBytes: 7 << 30, gpu: GPUSpec(count: 2, model: "H100")),
                labels: ["zone": "a", "tier": "gold ✓"], runtimes: [.process, .container], pricePerHour: 1.25,
                registeredAt: Timestamp(millisecondsSinceEpoch: 1_800_000_000_123))
            let registration = NodeRegistration(
                info: info, joinToken: "right", session: "s1",
                inventory: [
                    RuntimeAttempt(workloadID: "wl-a", attempt: 1, state: .running),
                    RuntimeAttempt(workloadID: "wl-b", attempt: 2, state: .exited(.exited(code: 7))),
                    RuntimeAttempt(workloadID: "wl-c", attempt: 3, state: .exited(.signaled(signal: 9))),
                    RuntimeAttempt(workloadID: "wl-d", attempt: 4, state: .missing(reason: "record gone")),
                ], version: "1.2.3")
            #expect(try await control.register(registration) == RecordingRegistry.reply)
            let got = await registry.registrations
            #expect(got.count == 1)
            #expect(got.first?.registration == registration)
            #expect(got.first?.node == ActorID(node: "n1", name: NodeProtocolLimits.nodeActorName))

            // A refused registration arrives as the registry's typed error.
            var refused = registration
            refused.joinToken = RecordingRegistry.refusedToken
            await #expect(
                throws: FabricError(.permissionDenied, "join token rejected for node n1", field: "joinToken")
            ) { try await control.register(refused) }
            #expect(await registry.registrations.count == 1)

            // heartbeat: both answers come back.
            #expect(try await control.heartbeat(node: "n1", session: "s1") == .ok)
            #expect(try await control.heartbeat(node: "n1", session: "s0") == .registerAgain)
            #expect(await registry.heartbeats.map { "\($0.node)/\($0.session)" } == ["n1/s1", "n1/s0"])

            // report: every report shape arrives whole.
            let reports: [NodeReport] = [
                .started(workloadID: "wl-a", attempt: 1),
                .startFailed(workloadID: "wl-b", attempt: 2, message: "no such program: \"nope\" ✗"),
                .exited(workloadID: "wl-c", attempt: 3, status: .exited(code: -1)),
                .exited(workloadID: "wl-d", attempt: 4, status: .signaled(signal: 15)),
            ]
            for r in reports { #expect(try await control.report(node: "n1", session: "s1", r) == .ok) }
            #expect(try await control.report(node: "n1", session: "old", reports[0]) == .registerAgain)
            let arrived = await registry.reports
            #expect(arrived.map(\.report) == reports + [reports[0]])
            #expect(arrived.map(\.session) == ["s1", "s1", "s1", "s1", "old"])
            #expect(arrived.allSatisfy { $0.node == "n1" })
        }
    }

    @Test func shuttleNodeMethodsRoundTrip() async throws {
        try await Self.withRig { _, node, _, agent, dir throws in
            let reports = ReportLog(agent)
            // run: the assignment (command, env, working directory) arrives whole; the workload prints them.
            let workdir = dir + "/work dir"
            try FileManager.default.createDirectory(atPath: workdir, withIntermediateDirectories: true)
            let spec = WorkloadSpec(
                name: "echo", command: ["sh", "-c", #"printf '%s|%s|%s' "$GREETING" "$PWD" "$1""#, "sh", "arg ✓"],
                env: ["GREETING": "héllo wörld"], workingDir: workdir,
                resources: Resources(cpuMillis: 100, memoryBytes: 16 << 20))
            try await node.run(Assignment(workloadID: "wl-echo", attempt: 3, spec: spec))
            #expect(
                await reports.first(2) == [
                    .started(workloadID: "wl-echo", attempt: 3),
                    .exited(workloadID: "wl-echo", attempt: 3, status: .exited(code: 0)),
                ])

            // logs: the whole output, and a tail of it.
            let output = "héllo wörld|\(workdir)|arg ✓"
            #expect(try await node.logs(workloadID: "wl-echo", kind: .process, tailBytes: nil) == Data(output.utf8))
            #expect(
                try await node.logs(workloadID: "wl-echo", kind: .process, tailBytes: 5) == Data(output.utf8.suffix(5)))
            // A workload the node never ran: the runtime's error arrives typed.
            await #expect(
                throws: FabricError(
                    .notFound, "no logs for workload wl-none: it was never started on this node")
            ) { try await node.logs(workloadID: "wl-none", kind: .process, tailBytes: nil) }

            // acknowledge: the ended attempt leaves the node's inventory.
            #expect(
                await agent.inventory() == [
                    RuntimeAttempt(workloadID: "wl-echo", attempt: 3, state: .exited(.exited(code: 0)))
                ])
            try await node.acknowledge(workloadID: "wl-echo", attempt: 3)
            #expect(await agent.inventory().isEmpty)

            // stop: a running attempt ends by SIGTERM and its status comes back; an unknown one gives nil.
            try await node.run(
                Assignment(workloadID: "wl-sleep", attempt: 1, spec: WorkloadSpec(name: "s", command: ["sleep", "30"])))
            #expect(await reports.first(3).last == .started(workloadID: "wl-sleep", attempt: 1))
            #expect(
                try await node.stop(workloadID: "wl-sleep", attempt: 1, kind: .process, graceMillis: 2000)
                    == .signaled(signal: SIGTERM))
            #expect(
                await reports.first(4).last
                    == .exited(workloadID: "wl-sleep", attempt: 1, status: .signaled(signal: SIGTERM)))
            #expect(await agent.inventory().isEmpty, "stop acknowledges the attempt")
            #expect(try await node.stop(workloadID: "wl-never", attempt: 1, kind: .process, graceMillis: 0) == nil)
        }
    }
}
