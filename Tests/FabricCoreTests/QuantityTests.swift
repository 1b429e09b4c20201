import Testing

@testable import FabricCore

@Suite struct QuantityTests {
    @Test(
        arguments: [
            ("500m", 500), ("2", 2000), ("0.5", 500), ("0.25", 250), ("1.5", 1500), ("100m", 100), ("1024", 1_024_000),
        ] as [(String, Int64)])
    func cpuParses(text: String, millis: Int64) throws {
        #expect(try Quantity.parseCPU(text, field: "cpu") == millis)
    }

    @Test(arguments: ["", "0", "-1", "-500m", "abc", "1.2.3", "m", "1025", "99999999999999999999999", "1e3", "5Gi"])
    func cpuRejects(text: String) {
        #expect(throws: FabricError.self) { try Quantity.parseCPU(text, field: "resources.cpu") }
        do {
            _ = try Quantity.parseCPU(text, field: "resources.cpu")
        } catch {
            #expect(error.field == "resources.cpu")
            #expect(error.code == .invalidArgument)
        }
    }

    @Test(
        arguments: [
            ("64Mi", 64 << 20), ("64Gi", 64 << 30), ("1G", 1_000_000_000), ("1048576", 1_048_576), ("1.5Gi", 3 << 29),
            ("2048Ki", 2 << 20), ("2Ti", 2 << 40),
        ] as [(String, Int64)])
    func memoryParses(text: String, bytes: Int64) throws {
        #expect(try Quantity.parseMemory(text, field: "memory") == bytes)
    }

    @Test(arguments: ["", "0", "64", "1000", "-64Mi", "64Mb", "Gi", "65Ti", "9Ei", "99999999999999999999Gi", "1.2.3Gi"])
    func memoryRejects(text: String) {
        #expect(throws: FabricError.self) { try Quantity.parseMemory(text, field: "resources.memory") }
    }

    @Test(arguments: [(500, "500m"), (2000, "2"), (1500, "1500m")] as [(Int64, String)])
    func cpuFormats(millis: Int64, text: String) {
        #expect(Quantity.formatCPU(millis) == text)
    }

    @Test(
        arguments: [(64 << 20, "64Mi"), (64 << 30, "64Gi"), (1000, "1000"), (1536 << 20, "1536Mi")] as [(Int64, String)]
    )
    func memoryFormats(bytes: Int64, text: String) {
        #expect(Quantity.formatMemory(bytes) == text)
    }
}
