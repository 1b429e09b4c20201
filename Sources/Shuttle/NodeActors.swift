import Distributed
import FabricActors
import FabricCore
import FabricLog
import FabricRuntime
import Foundation

/// A node as the control plane reaches it: the distributed face of a `NodeAgent`, served by the shuttle on
/// `fabric.actor.<node>.node`. Weaver holds a proxy per registered node; in single-process mode the same actor
/// runs on a `LocalActorSystem`, so the calls are encoded and decoded just the same.
public distributed actor ShuttleNode {
    public typealias ActorSystem = FabricActorSystem

    let agent: NodeAgent

    public init(agent: NodeAgent, actorSystem: FabricActorSystem) {
        self.agent = agent
        self.actorSystem = actorSystem
    }

    /// Serves the node under its well-known name on `system`.
    public static func serve(agent: NodeAgent, on system: FabricActorSystem) throws -> ShuttleNode {
        try system.makeActor(named: NodeProtocolLimits.nodeActorName) { ShuttleNode(agent: agent, actorSystem: system) }
    }

    /// The proxy for node `node`'s actor.
    public static func proxy(node: String, on system: FabricActorSystem) throws -> ShuttleNode {
        try ShuttleNode.resolve(id: ActorID(node: node, name: NodeProtocolLimits.nodeActorName), using: system)
    }

    /// Takes an assignment and returns at once; the start (or its failure) and the exit are reported through
    /// `ControlPlane.report`. A repeated delivery of the same attempt is ignored.
    public distributed func run(_ assignment: Assignment) {
        let agent = self.agent
        Task { await agent.run(assignment) }
    }

    /// Stops an attempt (SIGTERM, SIGKILL after `graceMillis`), acknowledges it, and returns how it ended (nil when
    /// it never started).
    public distributed func stop(workloadID: String, attempt: Int, kind: RuntimeKind, graceMillis: Int64) async
        -> ExitStatus?
    {
        let status = await agent.stop(
            workloadID: workloadID, attempt: attempt, kind: kind, grace: .milliseconds(max(0, graceMillis)))
        await agent.acknowledge(workloadID: workloadID, attempt: attempt)
        return status
    }

    /// Forgets an ended attempt (the control plane recorded its end).
    public distributed func acknowledge(workloadID: String, attempt: Int) async {
        await agent.acknowledge(workloadID: workloadID, attempt: attempt)
    }

    /// The newest `tailBytes` of a workload's output, at most `NodeProtocolLimits.logBytesPerCallMax`.
    public distributed func logs(workloadID: String, kind: RuntimeKind, tailBytes: Int?) async throws -> Data {
        let want = min(tailBytes ?? NodeProtocolLimits.logBytesPerCallMax, NodeProtocolLimits.logBytesPerCallMax)
        return Data(try await agent.logs(workloadID: workloadID, kind: kind, tailBytes: want))
    }
}

/// What the control plane does with node messages (weaver's workload service implements it).
public protocol NodeRegistry: Sendable {
    /// Checks the join token, records the node, reconciles its inventory, and answers.
    func register(_ registration: NodeRegistration, node: ShuttleNode) async throws -> RegistrationReply
    /// A node is alive.
    func heartbeat(node: String, session: String) async -> NodeAck
    /// A node reports a workload transition.
    func report(node: String, session: String, _ report: NodeReport) async -> NodeAck
}

/// The control plane as nodes reach it, on `fabric.actor.weaver.control`.
public distributed actor ControlPlane {
    public typealias ActorSystem = FabricActorSystem

    let registry: any NodeRegistry

    public init(registry: any NodeRegistry, actorSystem: FabricActorSystem) {
        self.registry = registry
        self.actorSystem = actorSystem
    }

    /// Serves the control plane under its well-known name on `system`.
    public static func serve(registry: any NodeRegistry, on system: FabricActorSystem) throws -> ControlPlane {
        try system.makeActor(named: NodeProtocolLimits.controlPlaneName) {
            ControlPlane(registry: registry, actorSystem: system)
        }
    }

    /// The proxy nodes call.
    public static func proxy(on system: FabricActorSystem) throws -> ControlPlane {
        try ControlPlane.resolve(
            id: ActorID(node: NodeProtocolLimits.controlPlaneNode, name: NodeProtocolLimits.controlPlaneName),
            using: system)
    }

    /// Joins a node. Throws `permissionDenied` for a wrong join token, `alreadyExists` while another live
    /// shuttle holds the node's name.
    public distributed func register(_ registration: NodeRegistration) async throws -> RegistrationReply {
        let node = try ShuttleNode.proxy(node: registration.info.id, on: actorSystem)
        return try await registry.register(registration, node: node)
    }

    public distributed func heartbeat(node: String, session: String) async -> NodeAck {
        await registry.heartbeat(node: node, session: session)
    }

    public distributed func report(node: String, session: String, _ report: NodeReport) async -> NodeAck {
        await registry.report(node: node, session: session, report)
    }
}
