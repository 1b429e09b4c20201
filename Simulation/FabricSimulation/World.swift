import FabricCore
import FabricScheduler

/// What the simulator schedules. Each case is one step; invariants are checked after every one.
enum SimEvent: Sendable {
    case arrive
    case heartbeatRound
    case lifecycleTick
    case toNode(String, NodeCommand)
    case toController(String, NodeReport)
    case finish(node: String, workload: String, attempt: Int)
    case partitionFault
    case crashFault
    case preemptionFault
    case heal(String, epoch: Int)
    case fence(String, epoch: Int)
    case preemptionNotice(String)
    case providerCall(Int)
    case boot(String)
    case idleCheck(String)
    case priceChange
    case refreshOffers
    case schedulingPass
    case gc
    case delete(Int)
    case faultPhaseEnds
    case convergenceCheck
    /// The controller crashes and restarts from what its store holds.
    case controllerRestart
}

/// What the controller tells a node's runtime.
enum NodeCommand: Sendable {
    case start(String, attempt: Int, runFor: Duration, exitCode: Int32)
    case stop(String, attempt: Int)
    /// Keep exactly these attempts; stop everything else (a node back from lost).
    case reconcile([String: Int])
}

/// What a node's runtime tells the controller.
enum NodeReport: Sendable {
    case started(String, attempt: Int)
    case exited(String, attempt: Int, code: Int32)
    case stopped(String, attempt: Int)
    /// Stopped by the node itself: it lost contact with the controller for `fenceAfter` (its lease ran out).
    case fenced(String, attempt: Int)
}

/// A simulated node runtime (what a shuttle would be): what actually runs, and its link to the controller.
struct SimNode {
    var alive = true
    var connected = true
    var lastAck: Timestamp
    var epoch = 0
    var running: [String: (attempt: Int, code: Int32)] = [:]
    /// Reports written while cut off, sent when the link heals.
    var outbox: [NodeReport] = []
    /// The latest attempt of each workload this node began (a repeated start is not run twice).
    var started: [String: Int] = [:]
}

/// One workload as the controller holds it.
struct SimWorkload {
    let id: String
    var spec: WorkloadSpec
    var phase: Phase = .pending
    var reason = "Submitted"
    /// The node it holds capacity on (or the machine being provisioned for it).
    var node: String? = nil
    var attempt = 0
    var restarts = 0
    let runFor: Duration
    /// After a spot preemption: the region to avoid if anywhere else fits.
    var avoidRegion: String? = nil
    var nextTryAt = Timestamp(millisecondsSinceEpoch: 0)
    var tries = 0
    var inPendingList = false
    var placed = false
    /// Waiting in the batch for a new machine (still pending).
    var queued = false
}

/// A node as the controller holds it.
struct ControllerNode {
    var info: NodeInfo
    var priceMicros: Int64
    var workloads: Set<String> = []
    /// Created by a provision call in this run (idle ones are terminated).
    var provisioned: Bool
    var idleSince: Timestamp? = nil
    var lostSince: Timestamp? = nil
}

/// A cloud instance in the controller's books.
struct BookEntry {
    enum State: String { case provisioning, running, terminating }
    var key: OfferKey
    var priceMicros: Int64
    var state: State
    /// Workloads waiting for this machine to boot.
    var waiting: [String] = []
    /// The provision call's client token (the first workload's ID and attempt), kept with the name.
    var tag = ""
}

/// A provider call in flight.
struct ProviderCall {
    enum Kind {
        case provision(name: String, key: OfferKey, tag: String)
        case terminate(name: String)
        case list
    }
    var kind: Kind
    var tries: Int
    /// Sent by a controller that has since restarted: the provider still acts on it, but the answer is lost.
    var stale = false
}
