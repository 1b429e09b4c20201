import Testing

@testable import FabricHTTP
