// Provider protocol and the offer catalog.
import FabricCore
