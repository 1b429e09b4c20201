// Composition of the control plane.
import FabricCore
