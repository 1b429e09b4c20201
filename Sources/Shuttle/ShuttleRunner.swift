import FabricActors
import FabricCore
import FabricLog
import FabricRuntime

/// The node side of the node protocol: registers with the control plane (join token, capacity, inventory),
/// heartbeats, and forwards every report of its `NodeAgent`, in order, retrying through outages.
///
/// When the control plane answers `registerAgain` (it restarted, or declared this node lost) the runner
/// registers again with a fresh inventory, which tells the control plane everything that happened meanwhile; a
/// report that was refused that way is therefore dropped, not resent. A wrong join token ends `run()` with
/// `permissionDenied`: retrying cannot fix it.
public actor ShuttleRunner {
    public struct Options: Sendable {
        public var joinToken: String
        public var session: String
        public var version: String
        public var heartbeatInterval: Duration
        /// The longest wait between registration (or report) retries.
        public var retryBackoffMax: Duration
        /// What heartbeats, retries and lease renewals wait on (the simulator's virtual clock in simulation).
        public var timer: TaskClock
        /// Whether this node's own link to the message bus is up (NATS: the connection's state). A node whose link
        /// stays down for `cluster.lost_after / 2` stops its workloads (link fencing): weaver, whose link is up,
        /// declares it lost at `lost_after` and runs them elsewhere, so nothing runs twice. A weaver outage leaves
        /// the node's link up and stops nothing.
        public var linkUp: @Sendable () -> Bool = { true }

        public init(
            joinToken: String, session: String, version: String, heartbeatInterval: Duration = .seconds(2),
            retryBackoffMax: Duration = .seconds(2), timer: TaskClock = .continuous
        ) {
            self.timer = timer
            self.joinToken = joinToken
            self.session = session
            self.version = version
            self.heartbeatInterval = heartbeatInterval
            self.retryBackoffMax = retryBackoffMax
        }
    }

    enum Event: Sendable {
        case report(NodeReport)
        /// The control plane asked for a registration; `generation` is the registration count when it asked.
        case registerAgain(generation: Int)
    }

    public nonisolated let agent: NodeAgent
    let control: ControlPlane
    let options: Options
    let logger: Logger
    var info: NodeInfo
    /// Successful registrations so far.
    public private(set) var registrations = 0
    /// How often to heartbeat: the control plane's word once registered, else the configured interval.
    var heartbeatInterval: Duration
    /// The state the control plane gave this node at the last registration.
    public private(set) var state: NodeState?
    /// The control plane's `lost_after` from the last registration (nil before one: no link fencing yet).
    var lostAfter: Duration?
    /// Times this node stopped its workloads because its link stayed down.
    public private(set) var linkFences = 0

    public init(agent: NodeAgent, control: ControlPlane, options: Options, logger: Logger) {
        self.agent = agent
        self.control = control
        self.options = options
        self.logger = logger
        self.info = agent.info
        self.heartbeatInterval = options.heartbeatInterval
    }

    /// Registers, then heartbeats and forwards reports until the task is cancelled or the agent finishes.
    /// Throws `FabricError(.permissionDenied)` when the control plane refuses the join token.
    public func run() async throws {
        let (events, sink) = AsyncStream.makeStream(of: Event.self, bufferingPolicy: .unbounded)
        let agent = self.agent
        let forwarder = Task {
            for await r in agent.reports { sink.yield(.report(r)) }
            sink.finish()
        }
        defer { forwarder.cancel() }
        let renewer = Task { await self.renewLease() }
        defer { renewer.cancel() }
        try await registerUntilAccepted()
        let heartbeats = Task { await self.heartbeatLoop(sink) }
        defer { heartbeats.cancel() }
        let linkWatch = Task { await self.linkWatch() }
        defer { linkWatch.cancel() }
        for await event in events {
            if Task.isCancelled { break }
            switch event {
            case .registerAgain(let generation):
                if generation == registrations { try await registerUntilAccepted() }
            case .report(let r):
                try await deliver(r)
            }
        }
    }

    /// Registers, retrying with backoff while the control plane is unreachable or busy.
    func registerUntilAccepted() async throws {
        var delay: Duration = .milliseconds(100)
        var failures = 0
        while !Task.isCancelled {
            let inventory = await agent.inventory()
            let registration = NodeRegistration(
                info: info, joinToken: options.joinToken, session: options.session, inventory: inventory,
                version: options.version)
            do {
                let reply = try await control.register(registration)
                registrations += 1
                state = reply.state
                if reply.heartbeatIntervalMillis > 0 {
                    heartbeatInterval = .milliseconds(min(reply.heartbeatIntervalMillis, 60_000))
                }
                if reply.lostAfterMillis > 0 { lostAfter = .milliseconds(reply.lostAfterMillis) }
                if let lease = agent.lease, reply.lostAfterMillis > 0 {
                    lease.setTerms(
                        .fencing(lostAfter: .milliseconds(reply.lostAfterMillis), stopGrace: agent.supersedeGrace))
                }
                logger.info(
                    registrations == 1 ? "registered" : "registered again",
                    [
                        "node": info.id, "state": reply.state.rawValue, "inventory": inventory.count,
                        "adopted": reply.adopted, "stopped": reply.stopped,
                    ])
                return
            } catch let error as FabricError where error.code == .permissionDenied {
                logger.error("weaver refused this node", ["node": info.id, "reason": error.message])
                throw error
            } catch {
                failures += 1
                // First failure, then every tenth: an outage does not flood the log.
                if failures == 1 || failures % 10 == 0 {
                    logger.warn(
                        "registration failed; retrying",
                        ["node": info.id, "attempts": failures, "in": delay, "error": Self.describe(error)])
                }
                try await options.timer.sleep(for: delay)
                delay = min(delay * 2, options.retryBackoffMax)
            }
        }
        throw CancellationError()
    }

    /// Sends one report until the control plane takes it (or asks for a registration, which supersedes it).
    func deliver(_ report: NodeReport) async throws {
        var delay: Duration = .milliseconds(100)
        var failures = 0
        while !Task.isCancelled {
            do {
                switch try await control.report(node: info.id, session: options.session, report) {
                case .ok: return
                case .registerAgain:
                    try await registerUntilAccepted()
                    return
                }
            } catch {
                failures += 1
                if failures == 1 || failures % 10 == 0 {
                    logger.warn(
                        "report not delivered; retrying",
                        ["node": info.id, "attempts": failures, "in": delay, "error": Self.describe(error)])
                }
                try await options.timer.sleep(for: delay)
                delay = min(delay * 2, options.retryBackoffMax)
            }
        }
    }

    /// Renews the node's lease while this runner lives, whatever the control plane does (its outage must not stop
    /// workloads; only this runner's death or hang does).
    func renewLease() async {
        guard let lease = agent.lease else { return }
        var failing = false
        while !Task.isCancelled {
            do {
                try lease.renew()
                if failing { logger.info("lease renewed again", ["path": lease.path]) }
                failing = false
            } catch {
                if !failing {
                    logger.error(
                        "cannot renew the lease; workloads will be fenced",
                        ["path": lease.path, "error": error.message])
                }
                failing = true
            }
            try? await options.timer.sleep(for: Self.leaseRenewInterval)
        }
    }

    /// How often the lease is renewed; fencing waits at least `cluster.lost_after / 2` (0.5 s or more).
    static let leaseRenewInterval: Duration = .milliseconds(250)

    /// Link fencing (see `Options.linkUp`): checked every `linkCheckInterval`, apart from heartbeats, whose calls
    /// can each wait out a whole call timeout while the link is down.
    func linkWatch() async {
        var linkDownSince: Duration?
        var fenced = false
        while !Task.isCancelled {
            try? await options.timer.sleep(for: Self.linkCheckInterval)
            if Task.isCancelled { return }
            if options.linkUp() {
                linkDownSince = nil
                fenced = false
                continue
            }
            let now = options.timer.elapsed()
            let since = linkDownSince ?? now
            linkDownSince = since
            if !fenced, let lostAfter, now - since >= lostAfter / 2 {
                fenced = true
                linkFences += 1
                logger.warn(
                    "link down for half of lost_after; stopping this node's workloads",
                    ["node": info.id, "downFor": now - since])
                await agent.fence(grace: min(agent.supersedeGrace, lostAfter / 4))
            }
        }
    }

    /// How often the link is checked for fencing.
    static let linkCheckInterval: Duration = .milliseconds(500)

    func heartbeatLoop(_ sink: AsyncStream<Event>.Continuation) async {
        var failing = 0
        while !Task.isCancelled {
            try? await options.timer.sleep(for: heartbeatInterval)
            if Task.isCancelled { return }
            let generation = registrations
            do {
                let ack = try await ActorCall.$timeout.withValue(Self.heartbeatDeadline(lostAfter: lostAfter)) {
                    try await control.heartbeat(node: info.id, session: options.session)
                }
                if failing > 0 {
                    logger.info("heartbeats reach weaver again", ["node": info.id, "missed": failing])
                    failing = 0
                }
                if ack == .registerAgain { sink.yield(.registerAgain(generation: generation)) }
            } catch {
                failing += 1
                if failing == 1 || failing % 10 == 0 {
                    logger.warn(
                        "heartbeat failed", ["node": info.id, "missed": failing, "error": Self.describe(error)])
                }
            }
        }
    }

    /// How long one heartbeat waits for its answer: a quarter of the control plane's `lost_after` (at most 5 s, at
    /// least 200 ms), so that a heartbeat lost on the way (weaver restarting as it was sent) is followed by others
    /// well before the node would be declared lost, instead of one call waiting out a timeout longer than that.
    static func heartbeatDeadline(lostAfter: Duration?) -> Duration {
        guard let lostAfter else { return .seconds(5) }
        return min(.seconds(5), max(.milliseconds(200), lostAfter / 4))
    }

    static func describe(_ error: any Error) -> String {
        if let e = error as? ActorCallError { return e.message }
        if let e = error as? FabricError { return e.message }
        return "\(error)"
    }
}
