import Distributed
import FabricCore
import FabricLog

/// The IDs of unnamed actors when no generator is given: seeded once from the system's entropy (a shell may draw it).
func defaultActorIDs() -> any IDGenerator { SeededIDGenerator(seed: UInt64.random(in: .min ... .max)) }

/// Distributed actors across processes over NATS (or any `MessageTransport`).
///
/// Each actor is served on its own subject (`ActorID.subject`); a call is a `CallEnvelope` sent as a request there,
/// answered by a `ReplyEnvelope` on the caller's inbox. Every call has a deadline (`settings.callTimeout`, or
/// `ActorCall.timeout` per task), and at most `settings.inFlightCallsMax` calls await replies at once: further
/// callers queue (up to `settings.queuedCallsMax`, with their deadline running) and beyond that fail at once with
/// `.resourceExhausted`. `resolve` always returns a proxy, so every call through a resolved reference goes over the
/// transport, even to an actor of this system.
public final class NATSActorSystem: FabricActorSystem {
    public typealias ActorID = FabricActors.ActorID
    public typealias SerializationRequirement = any Codable
    public typealias InvocationEncoder = FabricInvocationEncoder
    public typealias InvocationDecoder = FabricInvocationDecoder
    public typealias ResultHandler = FabricResultHandler

    let core: ActorSystemCore

    /// The node this system hosts actors for.
    public var node: String { core.node }
    /// The settings it runs with.
    public var settings: ActorSystemSettings { core.settings }
    /// The transport under it (a `NATSConnection` unless another was given).
    public var transport: any MessageTransport { core.transport }
    /// The NATS connection under it, if the transport is one.
    public var connection: NATSConnection? { core.transport as? NATSConnection }

    /// A system for `node` over an open transport, which it owns from now on (`shutdown()` closes it).
    public init(
        node: String, transport: any MessageTransport, settings: ActorSystemSettings = .default,
        clock: some Clock<Duration> = ContinuousClock(), ids: (any IDGenerator)? = nil,
        logger: Logger = Logger(component: "actors")
    ) throws(FabricError) {
        core = try ActorSystemCore(
            node: node, transport: transport, settings: settings, clock: CallClock(clock),
            ids: ids ?? defaultActorIDs(),
            logger: logger)
        core.setExecutor { [weak self] actor, call, handler in
            guard let self else { throw ActorCallError(.unavailable, "actor system is gone") }
            var decoder = FabricInvocationDecoder(envelope: call)
            try await self.executeDistributedTarget(
                on: actor, target: RemoteCallTarget(call.target), invocationDecoder: &decoder, handler: handler)
        }
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

    /// Initialises an actor under a well-known name: `try system.makeActor(named: "/system/scheduler") { ... }`.
    public func makeActor<Act: DistributedActor>(named name: String, _ make: () throws -> Act) throws -> Act
    where Act.ID == ActorID {
        try core.makeActor(system: self, named: name, make)
    }

    /// Returns once the transport has sent everything so far (new actors' subscriptions included).
    public func flush() async throws { try await core.transport.flush(timeout: core.settings.callTimeout) }

    /// Stops serving, answers calls still executing with `.unavailable`, fails own pending calls, closes the transport.
    public func shutdown() async { await core.shutdown() }

    /// Outgoing calls holding an in-flight slot now.
    public var inFlightCalls: Int { core.admission.inFlight }

    public func resolve<Act>(id: ActorID, as actorType: Act.Type) throws -> Act?
    where Act: DistributedActor, Act.ID == ActorID { nil }

    public func assignID<Act>(_ actorType: Act.Type) -> ActorID where Act: DistributedActor, Act.ID == ActorID {
        core.assignID(system: self, actorType)
    }

    public func actorReady<Act>(_ actor: Act) where Act: DistributedActor, Act.ID == ActorID { core.actorReady(actor) }

    public func resignID(_ id: ActorID) { core.resignID(id) }

    public func makeInvocationEncoder() -> FabricInvocationEncoder { FabricInvocationEncoder() }

    public func remoteCall<Act, Err, Res>(
        on actor: Act, target: RemoteCallTarget, invocation: inout FabricInvocationEncoder, throwing: Err.Type,
        returning: Res.Type
    ) async throws -> Res where Act: DistributedActor, Act.ID == ActorID, Err: Error, Res: Codable {
        guard let bytes = try await core.call(actor.id, target: target, invocation: invocation) else {
            throw ActorCallError(.serialization, "\(target.identifier) returned no value")
        }
        return try ArgumentCodec.decode(Res.self, from: bytes)
    }

    public func remoteCallVoid<Act, Err>(
        on actor: Act, target: RemoteCallTarget, invocation: inout FabricInvocationEncoder, throwing: Err.Type
    ) async throws where Act: DistributedActor, Act.ID == ActorID, Err: Error {
        _ = try await core.call(actor.id, target: target, invocation: invocation)
    }
}

/// Distributed actors in one process (dev mode, unit tests), with NATSActorSystem's semantics: every call through a
/// resolved reference is encoded, sent over an in-process `LoopbackNetwork`, decoded and executed with
/// `executeDistributedTarget`, under the same deadlines and in-flight limits.
///
/// Several systems (nodes) can share one `LoopbackNetwork` to run a multi-node setup in one process.
public final class LocalActorSystem: FabricActorSystem {
    public typealias ActorID = FabricActors.ActorID
    public typealias SerializationRequirement = any Codable
    public typealias InvocationEncoder = FabricInvocationEncoder
    public typealias InvocationDecoder = FabricInvocationDecoder
    public typealias ResultHandler = FabricResultHandler

    let core: ActorSystemCore

    /// The node this system hosts actors for.
    public var node: String { core.node }
    /// The settings it runs with.
    public var settings: ActorSystemSettings { core.settings }
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
        core = try ActorSystemCore(
            node: node, transport: network.endpoint(clock: callClock), settings: settings, clock: callClock,
            ids: ids ?? defaultActorIDs(), logger: logger)
        core.setExecutor { [weak self] actor, call, handler in
            guard let self else { throw ActorCallError(.unavailable, "actor system is gone") }
            var decoder = FabricInvocationDecoder(envelope: call)
            try await self.executeDistributedTarget(
                on: actor, target: RemoteCallTarget(call.target), invocationDecoder: &decoder, handler: handler)
        }
    }

    /// Initialises an actor under a well-known name: `try system.makeActor(named: "/system/scheduler") { ... }`.
    public func makeActor<Act: DistributedActor>(named name: String, _ make: () throws -> Act) throws -> Act
    where Act.ID == ActorID {
        try core.makeActor(system: self, named: name, make)
    }

    /// Returns once the transport has sent everything so far (new actors' subscriptions included).
    public func flush() async throws { try await core.transport.flush(timeout: core.settings.callTimeout) }

    /// Stops serving, answers calls still executing with `.unavailable`, fails own pending calls, closes the transport.
    public func shutdown() async { await core.shutdown() }

    /// Outgoing calls holding an in-flight slot now.
    public var inFlightCalls: Int { core.admission.inFlight }

    public func resolve<Act>(id: ActorID, as actorType: Act.Type) throws -> Act?
    where Act: DistributedActor, Act.ID == ActorID { nil }

    public func assignID<Act>(_ actorType: Act.Type) -> ActorID where Act: DistributedActor, Act.ID == ActorID {
        core.assignID(system: self, actorType)
    }

    public func actorReady<Act>(_ actor: Act) where Act: DistributedActor, Act.ID == ActorID { core.actorReady(actor) }

    public func resignID(_ id: ActorID) { core.resignID(id) }

    public func makeInvocationEncoder() -> FabricInvocationEncoder { FabricInvocationEncoder() }

    public func remoteCall<Act, Err, Res>(
        on actor: Act, target: RemoteCallTarget, invocation: inout FabricInvocationEncoder, throwing: Err.Type,
        returning: Res.Type
    ) async throws -> Res where Act: DistributedActor, Act.ID == ActorID, Err: Error, Res: Codable {
        guard let bytes = try await core.call(actor.id, target: target, invocation: invocation) else {
            throw ActorCallError(.serialization, "\(target.identifier) returned no value")
        }
        return try ArgumentCodec.decode(Res.self, from: bytes)
    }

    public func remoteCallVoid<Act, Err>(
        on actor: Act, target: RemoteCallTarget, invocation: inout FabricInvocationEncoder, throwing: Err.Type
    ) async throws where Act: DistributedActor, Act.ID == ActorID, Err: Error {
        _ = try await core.call(actor.id, target: target, invocation: invocation)
    }
}
