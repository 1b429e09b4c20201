import Distributed
import FabricCore
import FabricLog
import Synchronization

/// Settings shared by every Fabric actor system.
public struct ActorSystemSettings: Sendable, Equatable {
    /// The deadline of each call unless `ActorCall.timeout` overrides it for a task.
    public var callTimeout: Duration
    /// Outgoing calls that may await replies at once.
    public var inFlightCallsMax: Int
    /// Callers that may wait for an in-flight slot; callers beyond it fail at once with `.resourceExhausted`.
    public var queuedCallsMax: Int
    /// Incoming calls executed at once; more are answered at once with `.resourceExhausted`.
    public var inboundCallsMax: Int

    /// Settings from their parts (each defaults to its `ActorLimits` constant).
    public init(
        callTimeout: Duration = ActorLimits.callTimeoutDefault, inFlightCallsMax: Int = ActorLimits.inFlightCallsMax,
        queuedCallsMax: Int = ActorLimits.queuedCallsMax, inboundCallsMax: Int = ActorLimits.inboundCallsMax
    ) {
        self.callTimeout = callTimeout
        self.inFlightCallsMax = inFlightCallsMax
        self.queuedCallsMax = queuedCallsMax
        self.inboundCallsMax = inboundCallsMax
    }

    /// The defaults: a 5 s deadline and the `ActorLimits` bounds.
    public static let `default` = ActorSystemSettings()
}

/// Per-task call options.
public enum ActorCall {
    /// Overrides the system's `callTimeout` for calls made inside `ActorCall.$timeout.withValue(...) { }`.
    @TaskLocal public static var timeout: Duration?
}

/// The transport-independent half of the actor systems: registry, outgoing calls with deadlines and admission,
/// incoming calls executed in tasks.
final class ActorSystemCore: Sendable {
    typealias Executor =
        @Sendable (any DistributedActor, CallEnvelope, FabricResultHandler) async throws -> Void

    struct Registration {
        weak var actor: (any DistributedActor)?
        var subscription: (any TransportSubscription)?
    }

    struct InboundCall {
        let replyTo: String
        let callID: UInt64
        var task: Task<Void, Never>?
    }

    struct State {
        var registry: [ActorID: Registration] = [:]
        var inbound: [UInt64: InboundCall] = [:]
        var nextInbound: UInt64 = 0
        var shuttingDown = false
    }

    /// The name a `makeActor(named:)` call gives to the first actor of this system initialised inside it.
    final class PendingName: Sendable {
        let system: ObjectIdentifier
        let name: String
        private let used = Atomic<Bool>(false)

        init(system: ObjectIdentifier, name: String) {
            self.system = system
            self.name = name
        }

        /// The name, once.
        func take() -> String? { used.exchange(true, ordering: .acquiringAndReleasing) ? nil : name }
    }
    @TaskLocal static var pendingName: PendingName?

    static let shutdownFlushTimeout: Duration = .seconds(1)

    let node: String
    let transport: any MessageTransport
    let settings: ActorSystemSettings
    let clock: CallClock
    let ids: any IDGenerator
    let logger: Logger
    let admission: CallAdmission
    private let callIDs = Atomic<UInt64>(0)
    private let state = Mutex(State())
    /// Set once by the system. A class box, not the closure itself: a function value kept directly in a `Mutex` is
    /// re-wrapped in two reabstraction thunks by every `withLock`, so each call would get slower than the last.
    private let executor = Mutex<ExecutorBox?>(nil)

    final class ExecutorBox: Sendable {
        let run: Executor
        init(_ run: @escaping Executor) { self.run = run }
    }

    init(
        node: String, transport: any MessageTransport, settings: ActorSystemSettings, clock: CallClock,
        ids: any IDGenerator, logger: Logger
    ) throws(FabricError) {
        try ActorID.validate(node: node)
        guard settings.callTimeout > .zero else { throw FabricError.invalid("callTimeout", "must be positive") }
        guard settings.inFlightCallsMax > 0 else { throw FabricError.invalid("inFlightCallsMax", "must be positive") }
        guard settings.inboundCallsMax > 0 else { throw FabricError.invalid("inboundCallsMax", "must be positive") }
        self.node = node
        self.transport = transport
        self.settings = settings
        self.clock = clock
        self.ids = ids
        self.logger = logger
        self.admission = CallAdmission(
            limit: settings.inFlightCallsMax, queueMax: settings.queuedCallsMax, clock: clock)
    }

    func setExecutor(_ e: @escaping Executor) {
        let box = ExecutorBox(e)
        executor.withLock { $0 = box }
    }

    // MARK: identities

    func makeActor<Act: DistributedActor>(
        system: AnyObject, named name: String, _ make: () throws -> Act
    ) throws -> Act where Act.ID == ActorID {
        try ActorID.validate(name: name, field: "name")
        let id = ActorID(node: node, name: name)
        let taken = state.withLock { $0.registry[id]?.actor != nil }
        if taken { throw FabricError(.alreadyExists, "actor \(id) already exists", field: "name") }
        let actor = try Self.$pendingName.withValue(PendingName(system: ObjectIdentifier(system), name: name)) {
            try make()
        }
        guard actor.id == id else {
            throw FabricError.invalid("make", "the closure must initialise the named actor on this system first")
        }
        return actor
    }

    func assignID<Act: DistributedActor>(system: AnyObject, _ type: Act.Type) -> ActorID {
        if let p = Self.pendingName, p.system == ObjectIdentifier(system), let name = p.take() {
            return ActorID(node: node, name: name)
        }
        var base = String(describing: type)
        if let lt = base.firstIndex(of: "<") { base = String(base[..<lt]) }
        return ActorID(node: node, name: ids.next(prefix: base.lowercased()))
    }

    func actorReady<Act: DistributedActor>(_ actor: Act) where Act.ID == ActorID {
        let id = actor.id
        let subscription: (any TransportSubscription)?
        do {
            subscription = try transport.subscribe(subject: id.subject) { [weak self] message in
                self?.onInbound(message)
            }
        } catch {
            logger.error("could not serve actor", ["actor": id, "error": error])
            subscription = nil
        }
        let replaced = state.withLock { s -> (any TransportSubscription)? in
            let old = s.registry[id]?.subscription
            s.registry[id] = Registration(actor: actor, subscription: subscription)
            return old
        }
        if let replaced {
            logger.warn("actor name reused; the newer actor serves it", ["actor": id])
            replaced.cancel()
        }
    }

    func resignID(_ id: ActorID) {
        // Proxies share IDs with live actors: only an entry whose actor is gone is removed.
        let sub = state.withLock { s -> (any TransportSubscription)? in
            guard let r = s.registry[id], r.actor == nil else { return nil }
            s.registry[id] = nil
            return r.subscription
        }
        sub?.cancel()
    }

    // MARK: outgoing calls

    /// Sends one call and returns the reply outcome; errors of the remote method are rethrown as they were thrown.
    func call(
        _ recipient: ActorID, target: RemoteCallTarget, invocation: FabricInvocationEncoder
    ) async throws -> [UInt8]? {
        let timeout = ActorCall.timeout ?? settings.callTimeout
        let start = clock.elapsed()
        try await admission.acquire(timeout: timeout, what: "call to \(recipient)")
        defer { admission.release() }
        if state.withLock({ $0.shuttingDown }) {
            throw ActorCallError(.unavailable, "actor system of node \(node) is shut down")
        }
        let remaining = timeout - (clock.elapsed() - start)
        guard remaining > .zero else {
            throw ActorCallError(.deadlineExceeded, "call to \(recipient) waited \(timeout) for an in-flight slot")
        }
        let callID = callIDs.add(1, ordering: .relaxed).newValue
        let envelope = CallEnvelope(
            callID: callID, recipient: recipient, target: target.identifier,
            genericSubstitutions: invocation.genericSubstitutions, arguments: invocation.arguments,
            timeoutMilliseconds: Self.milliseconds(remaining))
        let bytes = WireCodec.encode(.call(envelope))
        guard bytes.count <= ActorLimits.messageBytesMax else {
            throw ActorCallError(
                .payloadTooLarge, "call to \(recipient) is \(bytes.count) bytes (max \(ActorLimits.messageBytesMax))")
        }
        let replyBytes: [UInt8]
        do {
            replyBytes = try await transport.request(subject: recipient.subject, data: bytes, timeout: remaining)
        } catch let e as ActorCallError {
            switch e.code {
            case .deadlineExceeded:
                throw ActorCallError(.deadlineExceeded, "call to \(recipient) got no reply within \(timeout)")
            case .noResponders:
                throw ActorCallError(.noResponders, "nobody serves actor \(recipient)")
            default:
                throw e
            }
        } catch is CancellationError {
            throw CancellationError()
        } catch {
            throw ActorCallError(.unavailable, "call to \(recipient) failed: \(error)")
        }
        guard case .reply(let reply) = try WireCodec.decode(replyBytes) else {
            throw ActorCallError(.serialization, "expected a reply from \(recipient), got a call")
        }
        // Call ID 0 answers a call the recipient could not even decode; its error is still the answer.
        guard reply.callID == callID || reply.callID == 0 else {
            throw ActorCallError(.serialization, "reply for call \(reply.callID) arrived for call \(callID)")
        }
        switch reply.outcome {
        case .value(let v): return v
        case .void: return nil
        case .error(let e): throw e.rebuilt
        }
    }

    static func milliseconds(_ d: Duration) -> UInt32 {
        let (s, atto) = d.components
        let ms = s * 1000 + atto / 1_000_000_000_000_000
        return UInt32(clamping: max(0, ms))
    }

    // MARK: incoming calls

    /// Runs on a transport thread: decodes, admits and hands the call to a task; never blocks.
    func onInbound(_ message: InboundMessage) {
        guard let replyTo = message.replyTo else {
            logger.debug("dropped a call without a reply address", ["subject": message.subject])
            return
        }
        let call: CallEnvelope
        do {
            guard case .call(let c) = try WireCodec.decode(message.data) else {
                throw ActorCallError(.serialization, "expected a call, got a reply")
            }
            call = c
        } catch {
            send(replyTo: replyTo, ReplyEnvelope(callID: 0, outcome: .error(RemoteError(error))))
            return
        }
        enum Admit {
            case run(UInt64, any DistributedActor)
            case refuse(ActorCallError)
        }
        let admit = state.withLock { s -> Admit in
            if s.shuttingDown { return .refuse(ActorCallError(.unavailable, "node \(node) is shutting down")) }
            guard let actor = s.registry[call.recipient]?.actor else {
                return .refuse(ActorCallError(.actorNotFound, "node \(node) hosts no actor \(call.recipient.name)"))
            }
            guard s.inbound.count < settings.inboundCallsMax else {
                return .refuse(
                    ActorCallError(
                        .resourceExhausted, "node \(node) is executing \(settings.inboundCallsMax) calls already"))
            }
            s.nextInbound += 1
            s.inbound[s.nextInbound] = InboundCall(replyTo: replyTo, callID: call.callID, task: nil)
            return .run(s.nextInbound, actor)
        }
        switch admit {
        case .refuse(let e):
            send(replyTo: replyTo, ReplyEnvelope(callID: call.callID, outcome: .error(RemoteError(e))))
        case .run(let key, let actor):
            let task = Task { await self.execute(key, call, on: actor) }
            state.withLock { s in s.inbound[key]?.task = task }
        }
    }

    private func execute(_ key: UInt64, _ call: CallEnvelope, on actor: any DistributedActor) async {
        guard let run = executor.withLock({ $0 })?.run else {
            finish(key, .error(RemoteError(ActorCallError(.unavailable, "actor system is not running"))))
            return
        }
        let handler = FabricResultHandler { [weak self] outcome in self?.finish(key, outcome) }
        do {
            try await run(actor, call, handler)
        } catch let e as ActorCallError {
            finish(key, .error(RemoteError(e)))
        } catch let e as ExecuteDistributedTargetError {
            finish(key, .error(RemoteError(ActorCallError(.unknownTarget, "\(call.target): \(e.message)"))))
        } catch {
            finish(key, .error(RemoteError(ActorCallError(.serialization, "\(call.target): \(error)"))))
        }
    }

    /// Sends the reply of an incoming call once; a call already answered (by shutdown) is ignored.
    private func finish(_ key: UInt64, _ outcome: ReplyEnvelope.Outcome) {
        guard let call = state.withLock({ $0.inbound.removeValue(forKey: key) }) else { return }
        send(replyTo: call.replyTo, ReplyEnvelope(callID: call.callID, outcome: outcome))
    }

    private func send(replyTo: String, _ reply: ReplyEnvelope) {
        var bytes = WireCodec.encode(.reply(reply))
        if bytes.count > ActorLimits.messageBytesMax {
            let e = ActorCallError(
                .payloadTooLarge, "reply is \(bytes.count) bytes (max \(ActorLimits.messageBytesMax))")
            bytes = WireCodec.encode(.reply(ReplyEnvelope(callID: reply.callID, outcome: .error(RemoteError(e)))))
        }
        do { try transport.publish(subject: replyTo, data: bytes) } catch {
            logger.debug("could not send a reply", ["error": error])
        }
    }

    // MARK: shutdown

    func shutdown() async {
        let first = state.withLock { s -> ([InboundCall], [any TransportSubscription])? in
            if s.shuttingDown { return nil }
            s.shuttingDown = true
            let calls = Array(s.inbound.values)
            s.inbound = [:]
            let subs = s.registry.values.compactMap(\.subscription)
            s.registry = [:]
            return (calls, subs)
        }
        guard let (calls, subs) = first else { return }
        for sub in subs { sub.cancel() }
        let gone = ActorCallError(.unavailable, "node \(node) shut down during the call")
        for c in calls {
            send(replyTo: c.replyTo, ReplyEnvelope(callID: c.callID, outcome: .error(RemoteError(gone))))
            c.task?.cancel()
        }
        admission.close(ActorCallError(.unavailable, "actor system of node \(node) is shut down"))
        do { try await transport.flush(timeout: Self.shutdownFlushTimeout) } catch {
            logger.debug("flush at shutdown failed", ["error": error])
        }
        await transport.close()
        if !calls.isEmpty { logger.info("shut down with calls in flight", ["node": node, "calls": calls.count]) }
    }

    var isShutDown: Bool { state.withLock { $0.shuttingDown } }
}
