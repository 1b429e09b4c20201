/// What the node lifecycle asks its shell to do.
public enum NodeDirective: Sendable, Hashable {
    /// The node is (again) schedulable.
    case markReady(String)
    /// Heartbeats are late: stop placing new work there, keep what runs.
    case markSuspect(String)
    /// Heartbeats stopped: its workloads are lost (then rescheduled or failed by policy).
    case markLost(String)
    /// A lost node is back: stop or adopt what it still runs, before it takes new work.
    case reconcile(String)
    /// No new work; running work continues until it ends.
    case markDraining(String)
    /// The node left for good; forget it.
    case forget(String)
    /// Run `onTick` again after this long (timers are directives too).
    case scheduleCheck(after: Duration)
}

/// The node lifecycle, as a pure state machine: inputs and `now` in, directives out.
///
/// ```
///   register ──► ready ──(no heartbeat for suspectAfter)──► suspect ──(lostAfter)──► lost
///                  ▲  ▲                                        │                        │
///                  │  └──────────── heartbeat ─────────────────┘                        │
///                  └───── heartbeat: reconcile first, then ready ───────────────────────┘
///   drain: ready | suspect ──► draining (heartbeats keep it alive, never schedulable)
///   deregister: any ──► deregistered (forgotten)
/// ```
public struct NodeLifecycle: Sendable {
    /// Timings, with the defaults weaver runs with.
    public struct Timing: Sendable, Hashable {
        public var heartbeatInterval: Duration
        /// Silence after which a node is suspect (no new work).
        public var suspectAfter: Duration
        /// Silence after which a node is lost (its workloads are rescheduled).
        public var lostAfter: Duration

        public init(
            heartbeatInterval: Duration = .seconds(2), suspectAfter: Duration = .seconds(6),
            lostAfter: Duration = .seconds(15)
        ) {
            self.heartbeatInterval = heartbeatInterval
            self.suspectAfter = suspectAfter
            self.lostAfter = lostAfter
        }
    }

    /// One node as the lifecycle sees it.
    public struct Entry: Sendable, Hashable {
        public var state: NodeState
        public var lastHeartbeat: Timestamp
    }

    public let timing: Timing
    public private(set) var nodes: [String: Entry] = [:]

    public init(timing: Timing = Timing()) { self.timing = timing }

    /// A node (re)registers. A node that was lost must be reconciled before it is ready again.
    public mutating func onRegister(_ id: String, now: Timestamp) -> [NodeDirective] {
        let previous = nodes[id]?.state
        nodes[id] = Entry(state: .ready, lastHeartbeat: now)
        switch previous {
        case .lost?: return [.reconcile(id), .markReady(id), .scheduleCheck(after: timing.suspectAfter)]
        case .draining?:
            nodes[id]?.state = .draining
            return [.scheduleCheck(after: timing.suspectAfter)]
        default: return [.markReady(id), .scheduleCheck(after: timing.suspectAfter)]
        }
    }

    /// A node known from before a control-plane restart: suspect (no new work) until it registers again, lost
    /// when it stays silent for `lostAfter` from now.
    public mutating func onRestore(_ id: String, now: Timestamp) -> [NodeDirective] {
        guard nodes[id] == nil else { return [] }
        nodes[id] = Entry(state: .suspect, lastHeartbeat: now)
        return [.markSuspect(id), .scheduleCheck(after: timing.lostAfter)]
    }

    /// The control plane's own link to the nodes was down and is back: silence during the outage was not the
    /// nodes' fault, so every live node's clock restarts now (nobody is declared lost for it).
    public mutating func onLinkRestored(now: Timestamp) -> [NodeDirective] {
        for (id, e) in nodes where e.state == .ready || e.state == .suspect || e.state == .draining {
            nodes[id]?.lastHeartbeat = max(e.lastHeartbeat, now)
        }
        return []
    }

    /// A heartbeat arrives. Unknown nodes must register first (nothing happens).
    public mutating func onHeartbeat(_ id: String, now: Timestamp) -> [NodeDirective] {
        guard var e = nodes[id], e.state != .deregistered else { return [] }
        e.lastHeartbeat = max(e.lastHeartbeat, now)
        let previous = e.state
        var out: [NodeDirective] = []
        switch previous {
        case .suspect:
            e.state = .ready
            out = [.markReady(id)]
        case .lost:
            e.state = .ready
            out = [.reconcile(id), .markReady(id)]
        case .ready, .draining, .deregistered:
            break
        }
        nodes[id] = e
        return out
    }

    /// Time passes: late nodes become suspect, silent ones lost. Returns when to check next.
    public mutating func onTick(now: Timestamp) -> [NodeDirective] {
        var out: [NodeDirective] = []
        var next: Duration? = nil  // the earliest deadline of any node; suspectAfter when none is pending
        for id in nodes.keys.sorted() {
            guard var e = nodes[id] else { continue }
            let silence = now.since(e.lastHeartbeat)
            switch e.state {
            case .lost, .deregistered:
                continue
            case .ready, .suspect, .draining:
                if silence >= timing.lostAfter {
                    e.state = .lost
                    out.append(.markLost(id))
                } else if silence >= timing.suspectAfter && e.state == .ready {
                    e.state = .suspect
                    out.append(.markSuspect(id))
                    next = min(next ?? .seconds(1 << 40), timing.lostAfter - silence)
                } else if e.state == .ready {
                    next = min(next ?? .seconds(1 << 40), timing.suspectAfter - silence)
                } else {
                    next = min(next ?? .seconds(1 << 40), timing.lostAfter - silence)
                }
            }
            nodes[id] = e
        }
        out.append(.scheduleCheck(after: max(next ?? timing.suspectAfter, .milliseconds(10))))
        return out
    }

    /// An operator drains a node: no new work; running work continues.
    public mutating func onDrain(_ id: String) -> [NodeDirective] {
        guard var e = nodes[id], e.state == .ready || e.state == .suspect else { return [] }
        e.state = .draining
        nodes[id] = e
        return [.markDraining(id)]
    }

    /// A node leaves for good.
    public mutating func onDeregister(_ id: String) -> [NodeDirective] {
        guard nodes[id] != nil else { return [] }
        nodes[id] = nil
        return [.forget(id)]
    }
}
