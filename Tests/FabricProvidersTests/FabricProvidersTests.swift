import Testing

@testable import FabricProviders
