import FabricActors
import FabricCore
import FabricLog
import FabricRuntime
import Foundation

/// What a node offers and where it keeps its workloads: the parts of the settings a node needs, shared by the
/// shuttle binary and weaver's embedded node.
public struct NodeConfig: Sendable {
    public var name: String
    public var region: String
    /// Overrides of the detected capacity (nil: detect).
    public var cpuMillis: Int64?
    public var memoryBytes: Int64?
    /// GPUs offered; nil detects them with nvidia-smi.
    public var gpuCount: Int?
    /// The GPU model; nil or empty takes the detected one.
    public var gpuModel: String?
    public var pricePerHour: Double
    public var labels: [String: String]
    /// Where workload records and logs live (`<dataDir>/workloads`).
    public var dataDir: String
    /// fabric-monitor; nil looks next to the running binary.
    public var monitorPath: String?
    public var logBytesMax: Int
    /// Whether workloads are fenced when this node runner dies (`NodeLease` under `dataDir`): on for shuttles.
    public var fenced: Bool
    /// SIGTERM-to-SIGKILL grace when a workload is stopped by the node itself.
    public var stopGrace: Duration

    public init(
        name: String, region: String, cpuMillis: Int64? = nil, memoryBytes: Int64? = nil, gpuCount: Int? = nil,
        gpuModel: String? = nil, pricePerHour: Double = 0, labels: [String: String] = [:], dataDir: String,
        monitorPath: String? = nil, logBytesMax: Int = 10 << 20, fenced: Bool = false,
        stopGrace: Duration = .seconds(10)
    ) {
        self.fenced = fenced
        self.stopGrace = stopGrace
        self.name = name
        self.region = region
        self.cpuMillis = cpuMillis
        self.memoryBytes = memoryBytes
        self.gpuCount = gpuCount
        self.gpuModel = gpuModel
        self.pricePerHour = pricePerHour
        self.labels = labels
        self.dataDir = dataDir
        self.monitorPath = monitorPath
        self.logBytesMax = logBytesMax
    }

    /// The capacity to register: detected, then overridden by the configured values (pure given `detected`).
    public func capacity(detected: Resources) -> Resources {
        var c = detected
        if let cpuMillis { c.cpuMillis = cpuMillis }
        if let memoryBytes { c.memoryBytes = memoryBytes }
        if let gpuCount {
            let model = (gpuModel?.isEmpty == false ? gpuModel : nil) ?? detected.gpu?.model
            c.gpu = gpuCount > 0 ? GPUSpec(count: gpuCount, model: model) : nil
        } else if let gpuModel, !gpuModel.isEmpty, let g = c.gpu {
            c.gpu = GPUSpec(count: g.count, model: gpuModel)
        }
        return c
    }

    /// The node agent with its process runtime, offering `capacity(detected:)` of this host.
    public func makeAgent(now: Timestamp, logger: Logger, detected: Resources = RuntimeCapacity.detect()) -> NodeAgent {
        let lease = fenced ? NodeLease(path: (dataDir as NSString).appendingPathComponent("lease")) : nil
        let runtime = ProcessRuntime(
            root: (dataDir as NSString).appendingPathComponent("workloads"), monitorPath: monitorPath,
            logBytesMax: logBytesMax, lease: lease)
        let info = NodeInfo(
            id: name, name: name, provider: "local", region: region, machineType: "local",
            capacity: capacity(detected: detected), labels: labels, runtimes: [.process], pricePerHour: pricePerHour,
            registeredAt: now)
        return NodeAgent(info: info, runtimes: [runtime], logger: logger, supersedeGrace: stopGrace, lease: lease)
    }
}

/// A running node: its agent served as a `ShuttleNode` on an actor system, and the runner that registers it and
/// carries its reports. Keep it alive as long as the node should run.
public final class NodeHost: Sendable {
    public let agent: NodeAgent
    public let node: ShuttleNode
    public let runner: ShuttleRunner
    public let system: FabricActorSystem
    let task: Task<Void, any Error>

    /// Serves `agent` on `system` and starts registering with the control plane reachable through it.
    public init(
        agent: NodeAgent, system: FabricActorSystem, options: ShuttleRunner.Options, logger: Logger
    ) throws {
        self.agent = agent
        self.system = system
        self.node = try ShuttleNode.serve(agent: agent, on: system)
        self.runner = ShuttleRunner(
            agent: agent, control: try ControlPlane.proxy(on: system), options: options, logger: logger)
        let runner = self.runner
        self.task = Task { try await runner.run() }
    }

    /// Waits until the node registered at least once (or `timeout` passed, or the runner stopped).
    /// - Returns: whether it registered.
    public func waitUntilRegistered(timeout: Duration) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if await runner.registrations > 0 { return true }
            try? await Task.sleep(for: .milliseconds(10))
        }
        return await runner.registrations > 0
    }

    /// Waits for the runner to end: it throws `permissionDenied` when the control plane refused the node.
    public func wait() async throws { try await task.value }

    /// Stops heartbeating and reporting. Workloads keep running under their monitors (adopted at the next start).
    public func stop() async {
        task.cancel()
        await agent.finish()
        _ = await task.result
    }
}
