import FabricActors
import FabricCore
import FabricRuntime
import Foundation
import Shuttle

/// A node's state change, as published on `fabric.events.node.<id>`.
public struct NodeEvent: Sendable, Hashable, Codable {
    public var node: String
    /// Per-node (per-subject) sequence number, from 1, without gaps within one weaver run and continued across
    /// restarts from the stored node record.
    public var seq: Int
    public var at: Timestamp
    public var from: NodeState?
    public var to: NodeState
    public var reason: String
    public var message: String?
}

extension WorkloadService: NodeRegistry {
    // MARK: - Node protocol (called through `ControlPlane`)

    public func register(_ r: NodeRegistration, node client: ShuttleNode) async throws -> RegistrationReply {
        await recovered()
        var info = r.info
        let id = info.id
        guard Self.tokensMatch(r.joinToken, options.joinToken) else {
            logger.warn(
                "refused node: wrong join token",
                ["node": id, "session": r.session, "hint": "the shuttle's cluster.join_token differs from weaver's"])
            throw FabricError(
                .permissionDenied,
                "join token rejected for node \(id): set cluster.join_token to the token weaver was started with")
        }
        try Self.validate(info)
        let now = clock.now()
        if let current = sessions[id], current != r.session, let e = lifecycle.nodes[id],
            e.state != .lost, now.since(e.lastHeartbeat) < options.nodeTiming.suspectAfter
        {
            throw FabricError(
                .alreadyExists,
                "node name \(id) is held by another shuttle that heartbeated \(now.since(e.lastHeartbeat)) ago: "
                    + "give this one another node.name, or wait \(options.nodeTiming.suspectAfter) after stopping "
                    + "the other")
        }
        let previous = nodes[id]
        info.allocated = .zero
        info.state = previous?.state ?? .ready
        info.registeredAt = now
        info.lastHeartbeat = now
        info.eventSeq = previous?.eventSeq ?? nodeEventSeq.removeValue(forKey: id)
        nodes[id] = info
        clients[id] = client
        sessions[id] = r.session
        for (wid, a) in allocations where a.node == id { allocations[wid] = nil }  // recounted by reconcile
        let directives = lifecycle.onRegister(id, now: now)
        let (adopted, stopped) = reconcile(id, inventory: r.inventory, client: client)
        apply(directives, reason: previous == nil ? "Registered" : "RegisteredAgain")
        if previous == nil || directives.isEmpty { persistNode(id) }
        fullPassNeeded = true
        machineJoined(id)
        schedulePass()
        logger.info(
            previous == nil ? "node registered" : "node registered again",
            [
                "node": id, "session": r.session, "version": r.version,
                "cpu": Quantity.formatCPU(info.capacity.cpuMillis),
                "memory": Quantity.formatMemory(info.capacity.memoryBytes), "gpus": info.capacity.gpuCount,
                "price": info.pricePerHour, "adopted": adopted, "stopped": stopped,
            ])
        return RegistrationReply(
            state: nodes[id]?.state ?? .ready,
            heartbeatIntervalMillis: Self.millis(options.nodeTiming.heartbeatInterval),
            lostAfterMillis: Self.millis(options.nodeTiming.lostAfter), adopted: adopted, stopped: stopped)
    }

    public func heartbeat(node id: String, session: String) async -> NodeAck {
        await recovered()
        guard sessions[id] == session, let e = lifecycle.nodes[id], e.state != .lost else { return .registerAgain }
        let now = clock.now()
        nodes[id]?.lastHeartbeat = now
        apply(lifecycle.onHeartbeat(id, now: now), reason: "Heartbeat")
        return .ok
    }

    public func report(node id: String, session: String, _ report: NodeReport) async -> NodeAck {
        await recovered()
        guard sessions[id] == session, let e = lifecycle.nodes[id], e.state != .lost else { return .registerAgain }
        handle(report, from: id)
        return .ok
    }

    // MARK: - Drain

    /// Stops placing new work on a node; what runs there keeps running. Draining a draining node is a no-op.
    public func drain(_ id: String) throws -> NodeInfo {
        guard let n = nodes[id] else { throw FabricError(.notFound, "node \(id) not found", field: "id") }
        switch n.state {
        case .draining: return n
        case .lost, .deregistered:
            throw FabricError(.failedPrecondition, "node \(id) is \(n.state.rawValue); only a live node can be drained")
        case .ready, .suspect:
            apply(lifecycle.onDrain(id), reason: "Drained")
            logger.info("node draining", ["node": id])
            return nodes[id] ?? n
        }
    }

    // MARK: - Deregister

    /// Removes a node for good: it leaves the node list and placement, and a `deregistered` event is published.
    ///
    /// Allowed when the node runs no workloads (drain it and let them end, or delete them, first), or when it is
    /// lost (its workloads were already marked lost and rescheduled). A shuttle still running under that name is
    /// answered `registerAgain` at its next heartbeat and joins again as a new node: stop it first.
    /// - Returns: the node as it was last, in state `deregistered`.
    /// - Throws: `.notFound` for an unknown node; `.failedPrecondition` naming the count while it runs workloads.
    public func deregister(_ id: String) throws -> NodeInfo {
        guard let n = nodes[id] else { throw FabricError(.notFound, "node \(id) not found", field: "id") }
        let running =
            n.state == .lost ? 0 : active.values.count(where: { $0.status.node == id && Self.isPlaced($0.phase) })
        guard running == 0 else {
            throw FabricError(
                .failedPrecondition,
                "node \(id) runs \(running) workload\(running == 1 ? "" : "s"): drain it and wait for them to end (or "
                    + "delete them) before deregistering it")
        }
        for (wid, a) in allocations where a.node == id { release(wid) }
        let directives = lifecycle.onDeregister(id)
        apply(directives.isEmpty ? [.forget(id)] : directives, reason: "Deregistered")
        logger.info("node deregistered", ["node": id, "from": n.state.rawValue])
        var last = n
        last.state = .deregistered
        last.allocated = .zero
        last.eventSeq = nodeEventSeq[id] ?? n.eventSeq
        return last
    }

    // MARK: - Lifecycle

    /// A node known from the store (it ran workloads before a restart): suspect until it registers again.
    func restoreNode(_ id: String, from stored: NodeInfo?) {
        guard nodes[id] == nil else { return }
        var info =
            stored
            ?? NodeInfo(id: id, name: id, capacity: .zero, registeredAt: clock.now())
        info.allocated = .zero
        nodes[id] = info
        apply(lifecycle.onRestore(id, now: clock.now()), reason: "WeaverRestarted")
    }

    /// Periodic: late nodes become suspect, silent ones lost. Nothing is declared lost while the link is down, nor
    /// right after weaver itself stalled for longer than `suspectAfter`.
    func nodeTick() {
        let now = clock.now()
        guard linkUp() else {
            if !linkWasDown { logger.warn("lost the link to the nodes; no node is declared lost until it is back") }
            linkWasDown = true
            return
        }
        if linkWasDown {
            linkWasDown = false
            _ = lifecycle.onLinkRestored(now: now)
            logger.info("link to the nodes is back; heartbeat clocks restarted")
        }
        if let last = lastNodeTick, now.since(last) > options.nodeTiming.suspectAfter {
            // Weaver itself did not run (paused, swapping, a stopped process): the silence is its own.
            _ = lifecycle.onLinkRestored(now: now)
            logger.warn("weaver stalled; node heartbeat clocks restarted", ["stalledFor": now.since(last)])
        }
        lastNodeTick = now
        apply(lifecycle.onTick(now: now), reason: "HeartbeatTimeout")
    }

    /// Carries out lifecycle directives.
    func apply(_ directives: [NodeDirective], reason: String) {
        for d in directives {
            switch d {
            case .markReady(let id):
                setNodeState(id, .ready, reason: reason, message: "schedulable")
                fullPassNeeded = true
                schedulePass()
            case .markSuspect(let id):
                setNodeState(
                    id, .suspect, reason: reason == "WeaverRestarted" ? reason : "HeartbeatLate",
                    message: "no new work until it heartbeats again")
            case .markLost(let id):
                nodeLost(id)
            case .markDraining(let id):
                setNodeState(id, .draining, reason: "Drained", message: "no new work; running work continues")
            case .forget(let id):
                setNodeState(id, .deregistered, reason: "Deregistered", message: "removed from the cluster")
                nodeEventSeq[id] = nodes[id]?.eventSeq  // a node joining again under this name continues the sequence
                nodes[id] = nil
                clients[id] = nil
                sessions[id] = nil
            case .reconcile, .scheduleCheck:
                break  // reconciliation runs inside `register`; the tick is periodic
            }
        }
    }

    func setNodeState(_ id: String, _ state: NodeState, reason: String, message: String?) {
        guard var n = nodes[id] else { return }
        let from = n.state
        let seq = (n.eventSeq ?? 0) + 1
        n.state = state
        n.eventSeq = seq
        nodes[id] = n
        persistNode(id)
        let event = NodeEvent(
            node: id, seq: seq, at: clock.now(), from: from, to: state, reason: reason, message: message)
        events?.publish(event)
        if state != from {
            logger.info("node \(state.rawValue)", ["node": id, "from": from.rawValue, "reason": reason])
        }
    }

    /// A node stopped heartbeating: every workload it held is lost (then restarted elsewhere or failed by its
    /// policy), its capacity is no longer counted, and its session ends (it must register again, with its
    /// inventory, before it is used).
    func nodeLost(_ id: String) {
        let onNode = active.values.filter { $0.status.node == id && Self.isPlaced($0.phase) }
            .sorted { $0.id < $1.id }
        sessions[id] = nil
        setNodeState(
            id, .lost, reason: "HeartbeatTimeout",
            message: "no heartbeat for \(options.nodeTiming.lostAfter); \(onNode.count) workloads lost")
        logger.warn("node lost", ["node": id, "workloads": onNode.count])
        for w in onNode {
            if w.phase == .terminating {
                finishDeletion(w.id, status: nil)
            } else {
                markLost(w.id, message: "node \(id) stopped heartbeating")
            }
        }
        for (wid, a) in allocations where a.node == id { release(wid) }
        if var n = nodes[id] {
            n.allocated = .zero
            nodes[id] = n
        }
        fullPassNeeded = true
        schedulePass()
    }

    static func isPlaced(_ p: Phase) -> Bool {
        switch p {
        case .scheduled, .provisioning, .starting, .running, .terminating: true
        default: false
        }
    }

    /// Compares what a (re)registering node runs with what weaver believes runs there: adopts what matches,
    /// records ends that happened meanwhile, re-sends assignments that never arrived, marks vanished work lost,
    /// and stops what runs there but belongs elsewhere now (so nothing runs twice).
    func reconcile(_ id: String, inventory: [RuntimeAttempt], client: ShuttleNode) -> (adopted: Int, stopped: Int) {
        // Holds for stale attempts from an earlier registration: this inventory says again what still runs.
        let suffix = "@" + id
        for key in allocations.keys where key.hasSuffix(suffix) && key.contains("#") { release(key) }
        var held = Dictionary(
            inventory.map { ($0.workloadID, $0) }, uniquingKeysWith: { a, b in a.attempt > b.attempt ? a : b })
        var adopted = 0
        var stale: [RuntimeAttempt] = []
        let mine = active.values.filter { $0.status.node == id && Self.isPlaced($0.phase) }.sorted { $0.id < $1.id }
        for w in mine {
            let entry = held.removeValue(forKey: w.id)
            guard let entry, entry.attempt == w.status.attempts else {
                if let entry { stale.append(entry) }
                switch w.phase {
                case .scheduled, .provisioning, .starting:
                    allocate(w.id, w.spec.resources, on: id)
                    dispatch(Assignment(workloadID: w.id, attempt: w.status.attempts, spec: w.spec), to: id, after: nil)
                case .terminating:
                    finishDeletion(w.id, status: nil)
                default:
                    markLost(w.id, message: "node \(id) registered again without it")
                }
                continue
            }
            adopted += 1
            switch entry.state {
            case .running:
                allocate(w.id, w.spec.resources, on: id)
                if w.phase == .terminating {
                    stopLater(w.id, nodeID: id)
                } else if w.phase != .running {
                    transition(w.id, to: .running, reason: "Adopted", message: "running on node \(id)") {
                        $0.status.startedAt = $0.status.startedAt ?? self.clock.now()
                    }
                }
            case .exited(let status):
                if w.phase == .terminating {
                    finishDeletion(w.id, status: status)
                } else {
                    recordExit(w.id, status: status, note: " while weaver did not hear from node \(id)")
                }
                acknowledgeLater(w.id, attempt: entry.attempt, on: id)
            case .missing(let why):
                if w.phase == .terminating { finishDeletion(w.id, status: nil) } else { markLost(w.id, message: why) }
                acknowledgeLater(w.id, attempt: entry.attempt, on: id)
            }
        }
        stale.append(contentsOf: held.values)
        var stopped = 0
        let grace = options.stopGrace
        for entry in stale.sorted(by: { $0.workloadID < $1.workloadID }) {
            let running: Bool
            if case .running = entry.state { running = true } else { running = false }
            if running {
                stopped += 1
                logger.warn(
                    "stopping a stale workload on a node that came back",
                    ["node": id, "workload": entry.workloadID, "attempt": entry.attempt])
            }
            let ended = endedWorkloads[entry.workloadID]
            let kind = active[entry.workloadID]?.spec.runtimeKind ?? ended?.kind ?? .process
            // Until it is stopped it still uses the node: its resources stay charged there, so nothing new is placed
            // into room that is not free yet (it may run elsewhere too, counted there as well; the workload may
            // have ended meanwhile).
            let hold = "\(entry.workloadID)#\(entry.attempt)@\(id)"
            let resources = active[entry.workloadID]?.spec.resources ?? ended?.resources
            if running, let resources { allocate(hold, resources, on: id) }
            Task { [logger] in
                do {
                    if running {
                        _ = try await ActorCall.$timeout.withValue(grace + .seconds(15)) {
                            try await client.stop(
                                workloadID: entry.workloadID, attempt: entry.attempt, kind: kind,
                                graceMillis: Self.millis(grace))
                        }
                        self.release(hold)
                        self.schedulePass()
                    } else {
                        try await client.acknowledge(workloadID: entry.workloadID, attempt: entry.attempt)
                    }
                } catch {
                    // It stays in the node's inventory and is handled at its next registration (the hold stays
                    // until then: the node may still run it).
                    logger.warn(
                        "stale workload not stopped", ["node": id, "workload": entry.workloadID, "error": error])
                }
            }
        }
        return (adopted, stopped)
    }

    /// Hands an assignment to a node once its `starting` state is stored, retrying while the node is
    /// unreachable; stops when the attempt is no longer starting there (started, deleted, or its node lost).
    func dispatch(_ a: Assignment, to nodeID: String, after stored: Promise<Void>?) {
        Task { [weak self] in
            if let stored {
                do { try await stored.value() } catch { return }
            }
            var delay: Duration = .milliseconds(200)
            var failures = 0
            while let self, let client = await self.clientWhileStarting(a.workloadID, attempt: a.attempt, on: nodeID) {
                do {
                    try await client.run(a)
                    return
                } catch {
                    failures += 1
                    if failures == 1 || failures % 10 == 0 {
                        self.logger.warn(
                            "assignment not delivered; retrying",
                            ["workload": a.workloadID, "node": nodeID, "attempts": failures, "error": error])
                    }
                    try? await self.timer.sleep(for: delay)
                    delay = min(delay * 2, .seconds(2))
                }
            }
        }
    }

    func clientWhileStarting(_ id: String, attempt: Int, on nodeID: String) -> ShuttleNode? {
        stillStarting(id, attempt: attempt, on: nodeID) ? clients[nodeID] : nil
    }

    /// Tells the node an attempt's end is recorded, once that write is stored (so a crash in between makes the
    /// node report it again rather than lose it).
    func acknowledgeLater(_ id: String, attempt: Int, on nodeID: String) {
        guard let client = clients[nodeID] else { return }
        let stored = persist.barrier(id)
        Task {
            _ = try? await stored.value()
            try? await client.acknowledge(workloadID: id, attempt: attempt)
        }
    }

    func persistNode(_ id: String) {
        guard let n = nodes[id] else { return }
        persist.enqueue(.node(n))
    }

    static func validate(_ info: NodeInfo) throws(FabricError) {
        do { try ActorID.validate(node: info.id) } catch {
            throw FabricError(.invalidArgument, "node name: \(error.message)", field: "node.name")
        }
        guard info.capacity.cpuMillis > 0, info.capacity.memoryBytes > 0 else {
            throw FabricError(.invalidArgument, "node \(info.id) offers no CPU or no memory", field: "node.capacity")
        }
        guard info.pricePerHour >= 0, info.pricePerHour.isFinite else {
            throw FabricError(.invalidArgument, "node \(info.id) has a negative price", field: "node.price_per_hour")
        }
    }

    /// Compares join tokens in time independent of where they differ.
    nonisolated static func tokensMatch(_ a: String, _ b: String) -> Bool {
        let x = Array(a.utf8)
        let y = Array(b.utf8)
        var diff = UInt8(x.count == y.count ? 0 : 1)
        for i in 0..<max(x.count, y.count) {
            diff |= (i < x.count ? x[i] : 0) ^ (i < y.count ? y[i] : 0)
        }
        return diff == 0
    }
}
