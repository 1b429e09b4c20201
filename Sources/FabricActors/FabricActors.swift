// Distributed actor systems over NATS and in one process: see ActorSystems.swift (NATSActorSystem,
// LocalActorSystem), MessageTransport.swift (the transport seam) and Envelope.swift (the wire format).
