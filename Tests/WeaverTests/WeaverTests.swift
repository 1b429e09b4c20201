import Testing

@testable import Weaver
