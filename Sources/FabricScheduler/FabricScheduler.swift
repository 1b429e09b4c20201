// Placement: feasibility checks, scorers and the placement stack. See Scheduler.swift.
import FabricCore
