import FabricCore
import Foundation

/// Decodes a stored node document (written by `FabricJSON.encode(NodeInfo)`) into a `NodeInfo`.
///
/// `Resources` decoding rejects zero quantities (it validates API input), yet `NodeInfo.allocated` is `.zero` for an
/// idle node and encodes as `"0"`. Until FabricCore accepts zero when decoding, the store reads node documents
/// through this mirror, which takes the same keys and accepts `"0"`. The documents themselves stay exactly what
/// `FabricJSON.encode` writes; a test checks that this mirror covers every key `NodeInfo` encodes.
struct NodeDocument: Decodable {
    static let keys: Set<String> = Set(CodingKeys.allCases.map(\.rawValue))

    enum CodingKeys: String, CodingKey, CaseIterable {
        case id, name, provider, region, machineType, capacity, allocated, labels, runtimes, pricePerHour, spot, state
        case registeredAt, lastHeartbeat
    }

    let node: NodeInfo

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        node = NodeInfo(
            id: try c.decode(String.self, forKey: .id),
            name: try c.decode(String.self, forKey: .name),
            provider: try c.decode(String.self, forKey: .provider),
            region: try c.decode(String.self, forKey: .region),
            machineType: try c.decode(String.self, forKey: .machineType),
            capacity: try c.decode(StoredResources.self, forKey: .capacity).resources,
            allocated: try c.decode(StoredResources.self, forKey: .allocated).resources,
            labels: try c.decode([String: String].self, forKey: .labels),
            runtimes: try c.decode([RuntimeKind].self, forKey: .runtimes),
            pricePerHour: try c.decode(Double.self, forKey: .pricePerHour),
            spot: try c.decode(Bool.self, forKey: .spot),
            state: try c.decode(NodeState.self, forKey: .state),
            registeredAt: try c.decode(Timestamp.self, forKey: .registeredAt),
            lastHeartbeat: try c.decodeIfPresent(Timestamp.self, forKey: .lastHeartbeat))
    }

    /// Decodes one stored node document.
    static func decode(_ data: Data) throws(FabricError) -> NodeInfo {
        try FabricJSON.decode(NodeDocument.self, from: data).node
    }
}

/// `Resources` as `Resources.encode(to:)` writes it, decoded with zero allowed.
private struct StoredResources: Decodable {
    enum CodingKeys: String, CodingKey { case cpu, memory, gpu }

    let resources: Resources

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let cpu = try c.decode(String.self, forKey: .cpu)
        let memory = try c.decode(String.self, forKey: .memory)
        do {
            resources = Resources(
                cpuMillis: cpu == "0" ? 0 : try Quantity.parseCPU(cpu, field: "cpu"),
                memoryBytes: memory == "0" ? 0 : try Quantity.parseMemory(memory, field: "memory"),
                gpu: try c.decodeIfPresent(GPUSpec.self, forKey: .gpu))
        } catch let e as FabricError {
            throw DecodingError.dataCorruptedError(forKey: .cpu, in: c, debugDescription: e.message)
        }
    }
}
