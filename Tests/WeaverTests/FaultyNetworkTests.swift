import FabricActors
import FabricCore
import FabricLog
import FabricRuntime
import FabricStore
import Foundation
import Shuttle
import Testing

@testable import Weaver

/// The real control plane and node runner, their actor systems over a network that loses requests and replies,
/// duplicates and reorders them (seeded): every workload still runs exactly once and finishes.
@Suite(.serialized) struct FaultyNetworkTests {
    @Test(arguments: [1, 2] as [UInt64])
    func workloadsRunExactlyOnceOverALossyNetwork(seed: UInt64) async throws {
        let dir = NSTemporaryDirectory() + "fabric-faulty-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let store = try await SQLiteStore(path: dir + "/fabric.db")
        let sink = MemorySink()
        let logger = Logger(component: "test", level: .debug, sink: sink)
        var options = WorkloadServiceOptions()
        options.retryInterval = .milliseconds(100)
        options.persistLanes = 1
        let service = WorkloadService(
            store: store, clock: ManualClock(), ids: SeededIDGenerator(seed: seed), logger: logger, options: options)
        try await service.start()

        let faults = NetworkFaults(
            dropRate: 0.15, replyDropRate: 0.15, duplicateRate: 0.15, delayMax: .milliseconds(20))
        let settings = ActorSystemSettings(callTimeout: .milliseconds(400))
        let network = LoopbackNetwork()
        let toNode = FaultyTransport(network.endpoint(), faults: faults, seed: seed)
        let toControl = FaultyTransport(network.endpoint(), faults: faults, seed: seed &+ 1000)
        let controlSystem = try NATSActorSystem(
            node: NodeProtocolLimits.controlPlaneNode, transport: toNode, settings: settings, logger: logger)
        let control = try ControlPlane.serve(registry: service, on: controlSystem)
        let node = NodeInfo(
            id: "n1", name: "n1", capacity: Resources(cpuMillis: 8000, memoryBytes: 8 << 30),
            registeredAt: Timestamp(millisecondsSinceEpoch: 0))
        let host = try NodeHost(
            agent: NodeAgent(
                info: node, runtimes: [ProcessRuntime(root: dir + "/workloads", logBytesMax: 1 << 20)], logger: logger),
            system: try NATSActorSystem(node: "n1", transport: toControl, settings: settings, logger: logger),
            options: ShuttleRunner.Options(
                joinToken: "", session: "s1", version: "test", heartbeatInterval: .milliseconds(200),
                retryBackoffMax: .milliseconds(200)),
            logger: logger)
        #expect(await host.waitUntilRegistered(timeout: .seconds(30)))

        var ids: [String] = []
        for i in 0..<8 {
            let spec = WorkloadSpec(
                name: "w\(i)", command: ["sh", "-c", "echo ran >> \(dir)/runs-\(i); echo done"],
                resources: Resources(cpuMillis: 500, memoryBytes: 64 << 20))
            ids.append(try await service.submit(spec).id)
        }
        for (i, id) in ids.enumerated() {
            var w = try await service.get(id)
            for _ in 0..<600 where !w.phase.isFinal {
                try await Task.sleep(for: .milliseconds(50))
                w = try await service.get(id)
            }
            #expect(w.phase == .succeeded, "\(id): \(w.phase) \(w.status.message ?? "")")
            #expect(w.status.attempts == 1)
            // Ran once: one line, however many times the assignment was delivered.
            let runs = (try? String(contentsOfFile: "\(dir)/runs-\(i)", encoding: .utf8)) ?? ""
            #expect(runs == "ran\n", "\(id) ran \(runs.split(separator: "\n").count) times")
        }
        let a = toNode.counts
        let b = toControl.counts
        #expect(a.dropped + b.dropped > 0 && a.repliesDropped + b.repliesDropped > 0 && a.duplicated + b.duplicated > 0)
        await host.stop()
        _ = control
        await service.shutdown()
        await controlSystem.shutdown()
    }
}
