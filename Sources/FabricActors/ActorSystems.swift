import Distributed
import FabricCore
import FabricLog

/// The IDs of unnamed actors when no generator is given: seeded once from the system's entropy (a shell may draw it).
func defaultActorIDs() -> any IDGenerator { SeededIDGenerator(seed: UInt64.random(in: .min ... .max)) }

/// The actor system every Fabric distributed actor names, so that one actor type runs on NATS and in one process:
/// `distributed actor Scheduler { typealias ActorSystem = FabricActorSystem }` (or a module-wide
/// `typealias DefaultDistributedActorSystem = FabricActorSystem`).
///
/// It is a class with two final subclasses, `NATSActorSystem` and `LocalActorSystem`, rather than a protocol that
/// actors are generic over: Swift 6.3 crashes compiling generic distributed actors whose system type is pinned by a
/// protocol in another module (IRGen in debug builds, and any specialisation of the distributed thunk with `-O`).
///
/// Each actor is served on its own subject (`ActorID.subject`); a call is a `CallEnvelope` sent as a request there,
/// answered by a `ReplyEnvelope` on the caller's inbox. Every call has a deadline (`settings.callTimeout`, or
/// `ActorCall.timeout` per task); at most `settings.inFlightCallsMax` calls await replies at once, further callers
/// queue (up to `settings.queuedCallsMax`, their deadline running) and beyond that fail at once with
/// `.resourceExhausted`. `resolve` always returns a proxy, so every call through a resolved reference is encoded and
/// crosses the transport, even to an actor of the same system. The system holds its actors weakly: keep a reference
/// to each actor you serve.
public class FabricActorSystem: DistributedActorSystem, @unchecked Sendable {
    public typealias ActorID = FabricActors.ActorID
    public typealias SerializationRequirement = any Codable
    public typealias InvocationEncoder = FabricInvocationEncoder
    public typealias InvocationDecoder = FabricInvocationDecoder
    public typealias ResultHandler = FabricResultHandler

    let core: ActorSystemCore

    init(core: ActorSystemCore) {
        self.core = core
        core.setExecutor { [weak self] actor, call, handler in
            guard let self else { throw ActorCallError(.unavailable, "actor system is gone") }
            var decoder = FabricInvocationDecoder(envelope: call)
            try await self.executeDistributedTarget(
                on: actor, target: RemoteCallTarget(call.target), invocationDecoder: &decoder, handler: handler)
        }
    }

    /// The node this system hosts actors for.
    public var node: String { core.node }
    /// The settings it runs with.
    public var settings: ActorSystemSettings { core.settings }
    /// The transport under it.
    public var transport: any MessageTransport { core.transport }
    /// Outgoing calls holding an in-flight slot now.
    public var inFlightCalls: Int { core.admission.inFlight }
    /// Outgoing calls waiting for an in-flight slot now.
    public var queuedCalls: Int { core.admission.queued }

    /// Initialises an actor under a well-known name: `try system.makeActor(named: "/system/scheduler") { ... }`.
    ///
    /// The first actor of this system initialised inside `make` takes the name; a name in use throws `.alreadyExists`.
    public func makeActor<Act: DistributedActor>(named name: String, _ make: () throws -> Act) throws -> Act
    where Act.ID == ActorID {
        try core.makeActor(system: self, named: name, make)
    }

    /// Returns once the transport has sent everything so far (new actors' subscriptions included).
    public func flush() async throws { try await core.transport.flush(timeout: core.settings.callTimeout) }

    /// Stops serving, answers calls still executing with `.unavailable`, fails own pending calls, closes the transport.
    public func shutdown() async { await core.shutdown() }

    /// Always nil: references are proxies whose calls go through the transport.
    public func resolve<Act>(id: ActorID, as actorType: Act.Type) throws -> Act?
    where Act: DistributedActor, Act.ID == ActorID { nil }

    /// A well-known name from `makeActor(named:)`, else a generated one such as `counter-0k3v9x2m4q8d1`.
    public func assignID<Act>(_ actorType: Act.Type) -> ActorID where Act: DistributedActor, Act.ID == ActorID {
        core.assignID(system: self, actorType)
    }

    /// Starts serving the actor on its subject.
    public func actorReady<Act>(_ actor: Act) where Act: DistributedActor, Act.ID == ActorID { core.actorReady(actor) }

    /// Stops serving an actor that was deallocated.
    public func resignID(_ id: ActorID) { core.resignID(id) }

    /// A fresh invocation encoder.
    public func makeInvocationEncoder() -> FabricInvocationEncoder { FabricInvocationEncoder() }

    /// Sends a call and decodes its result (the distributed actor runtime calls this).
    public func remoteCall<Act, Err, Res>(
        on actor: Act, target: RemoteCallTarget, invocation: inout FabricInvocationEncoder, throwing: Err.Type,
        returning: Res.Type
    ) async throws -> Res where Act: DistributedActor, Act.ID == ActorID, Err: Error, Res: Codable {
        guard let bytes = try await core.call(actor.id, target: target, invocation: invocation) else {
            throw ActorCallError(.serialization, "\(target.identifier) returned no value")
        }
        return try ArgumentCodec.decode(Res.self, from: bytes)
    }

    /// Sends a call to a method without result (the distributed actor runtime calls this).
    public func remoteCallVoid<Act, Err>(
        on actor: Act, target: RemoteCallTarget, invocation: inout FabricInvocationEncoder, throwing: Err.Type
    ) async throws where Act: DistributedActor, Act.ID == ActorID, Err: Error {
        _ = try await core.call(actor.id, target: target, invocation: invocation)
    }
}

/// Distributed actors across processes over NATS (or any other `MessageTransport`, e.g. the simulator's network).
public final class NATSActorSystem: FabricActorSystem, @unchecked Sendable {
    /// The NATS connection under it, if the transport is one.
    public var connection: NATSConnection? { core.transport as? NATSConnection }

    /// A system for `node` over an open transport, which it owns from now on (`shutdown()` closes it).
    public init(
        node: String, transport: any MessageTransport, settings: ActorSystemSettings = .default,
        clock: some Clock<Duration> = ContinuousClock(), ids: (any IDGenerator)? = nil,
        logger: Logger = Logger(component: "actors")
    ) throws(FabricError) {
        super.init(
            core: try ActorSystemCore(
                node: node, transport: transport, settings: settings, clock: CallClock(clock),
                ids: ids ?? defaultActorIDs(), logger: logger))
    }

    /// Connects to NATS and starts a system for `node` on that connection.
    public static func connect(
        node: String, options: NATSOptions = .default, settings: ActorSystemSettings = .default,
        logger: Logger = Logger(component: "actors")
    ) async throws -> NATSActorSystem {
        try ActorID.validate(node: node)
        let connection = try await NATSConnection.connect(options, logger: logger.with(component: "nats"))
        do {
            return try NATSActorSystem(node: node, transport: connection, settings: settings, logger: logger)
        } catch {
            await connection.close()
            throw error
        }
    }
}

/// Distributed actors in one process (dev mode, unit tests), with NATSActorSystem's semantics: every call through a
/// resolved reference is encoded, sent over an in-process `LoopbackNetwork`, decoded and executed with
/// `executeDistributedTarget`, under the same deadlines and in-flight limits.
///
/// Several systems (nodes) can share one `LoopbackNetwork` to run a multi-node setup in one process.
public final class LocalActorSystem: FabricActorSystem, @unchecked Sendable {
    /// The in-process network it is attached to.
    public let network: LoopbackNetwork

    /// A system for `node` on `network` (by default a network of its own).
    public init(
        node: String = "local", network: LoopbackNetwork = LoopbackNetwork(),
        settings: ActorSystemSettings = .default, clock: some Clock<Duration> = ContinuousClock(),
        ids: (any IDGenerator)? = nil, logger: Logger = Logger(component: "actors")
    ) throws(FabricError) {
        let callClock = CallClock(clock)
        self.network = network
        super.init(
            core: try ActorSystemCore(
                node: node, transport: network.endpoint(clock: callClock), settings: settings, clock: callClock,
                ids: ids ?? defaultActorIDs(), logger: logger))
    }
}
