// FabricActors: distributed actor systems over NATS and in one process.
//
//   distributed actor Scheduler { typealias ActorSystem = FabricActorSystem }   (one actor type, any system)
//        |  remoteCall (FabricInvocationEncoder: JSON per argument)
//        v
//   ActorSystemCore.call ── CallAdmission (in-flight slots, FIFO queue, deadline) ── WireCodec (CallEnvelope)
//        |  MessageTransport.request(subject: fabric.actor.<node>.<name>, timeout: remaining deadline)
//        v
//   NATSConnection (cnats) | LoopbackTransport (in process) | the simulator's network (later)
//        |  subscription callback on a transport thread: decode, admit, start a Task; never blocks
//        v
//   ActorSystemCore.onInbound ── Task ── executeDistributedTarget ── FabricResultHandler ── ReplyEnvelope
//
// Files:
//   ActorID.swift            ActorID, subjects, ActorLimits
//   ActorCallError.swift     ActorCallError (typed call failures), RemoteError (errors on the wire)
//   Envelope.swift           CallEnvelope, ReplyEnvelope, WireMessage, WireCodec (binary frame)
//   Invocation.swift         ArgumentCodec, invocation encoder/decoder, result handler
//   MessageTransport.swift   the transport seam, CallClock (time seam), ReplyMux (reply table with deadlines)
//   LoopbackTransport.swift  LoopbackNetwork and its endpoints
//   NATSConnection.swift     NATSOptions, NATSConnection (cnats), natsCheck (the one cnats error wrapper)
//   CallAdmission.swift      bounded in-flight calls
//   ActorSystemCore.swift    ActorSystemSettings, ActorCall.timeout, the shared core
//   ActorSystems.swift       FabricActorSystem (what actors name) and its two kinds, NATSActorSystem, LocalActorSystem
