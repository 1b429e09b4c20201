import Testing

@testable import FabricRuntime
