import Testing

@testable import FabricScheduler
