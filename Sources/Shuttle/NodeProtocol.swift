import FabricCore
import FabricRuntime

// The messages between a node (shuttle) and the control plane (weaver). They cross NATS as arguments of
// distributed actor calls, so every one is Codable; see `ControlPlane` and `ShuttleNode`.

/// A node asking to join: who it is, what it offers, the join token, and what it already runs.
public struct NodeRegistration: Sendable, Hashable, Codable {
    /// Name, capacity, labels, region, runtimes and price. `allocated` and `state` are the control plane's to set.
    public var info: NodeInfo
    /// The cluster's join token (`cluster.join_token`); compared in constant time, never logged.
    public var joinToken: String
    /// Identifies this run of the shuttle process: a new session replaces the node's previous one.
    public var session: String
    /// Every attempt the node runs, or that ended without the control plane acknowledging it.
    public var inventory: [RuntimeAttempt]
    /// The shuttle's version, for logs.
    public var version: String

    public init(info: NodeInfo, joinToken: String, session: String, inventory: [RuntimeAttempt], version: String) {
        self.info = info
        self.joinToken = joinToken
        self.session = session
        self.inventory = inventory
        self.version = version
    }
}

/// The control plane's answer to a registration.
public struct RegistrationReply: Sendable, Hashable, Codable {
    /// The node's state after joining (`ready`, or `draining` for a drained node that came back).
    public var state: NodeState
    /// How often the node must heartbeat, in milliseconds.
    public var heartbeatIntervalMillis: Int64
    /// How long the control plane waits for a silent node before declaring it lost, in milliseconds: the node fences
    /// its workloads (`NodeLease`) well before that.
    public var lostAfterMillis: Int64
    /// Inventory entries the control plane adopted (running, or ended and now recorded).
    public var adopted: Int
    /// Inventory entries it asked the node to stop (they run elsewhere now, or were deleted).
    public var stopped: Int

    public init(state: NodeState, heartbeatIntervalMillis: Int64, lostAfterMillis: Int64, adopted: Int, stopped: Int) {
        self.state = state
        self.heartbeatIntervalMillis = heartbeatIntervalMillis
        self.lostAfterMillis = lostAfterMillis
        self.adopted = adopted
        self.stopped = stopped
    }
}

/// The control plane's answer to a heartbeat or a report.
public enum NodeAck: String, Sendable, Hashable, Codable {
    /// Taken.
    case ok
    /// The control plane does not know this session (it restarted, or declared the node lost): register again,
    /// with a fresh inventory, before anything else.
    case registerAgain
}

/// Limits of the node protocol.
public enum NodeProtocolLimits {
    /// The most log bytes one `logs` call returns (the tail), so a reply stays under the actor message limit.
    public static let logBytesPerCallMax = 512 << 10
    /// The well-known actor names.
    public static let controlPlaneNode = "weaver"
    public static let controlPlaneName = "control"
    public static let nodeActorName = "node"
}
