// Distributed actor systems over NATS and in one process.
import FabricCore
