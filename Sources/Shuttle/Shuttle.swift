// The node runner: capacity, assignments, runtimes.
import FabricCore
import FabricRuntime
