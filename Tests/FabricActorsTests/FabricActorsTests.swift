import Testing

@testable import FabricActors
