import Testing

@testable import FabricStore
