// fabric-sim: the deterministic fleet simulator (filled by a later change).
import FabricCore
import FabricScheduler

print("fabric-sim: the deterministic simulator is not built yet")
