import FabricCore
import FabricScheduler

/// The JSON documents of the API that are not stored types themselves.

/// `POST /v1/workloads?dryRun=true`: the placement (or null) and every candidate.
struct DryRunDocument: Encodable {
    var placement: Placement?
    var candidates: [CandidateResult]
    var filtered: [String: Int]

    /// The most candidates one dry run lists (a large catalog has many thousands); `filtered` counts them all.
    static let candidatesMax = 500

    enum CodingKeys: String, CodingKey { case placement, candidates, candidatesTotal, filtered }

    func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        if let placement {
            try c.encode(PlacementDocument(placement), forKey: .placement)
        } else {
            try c.encodeNil(forKey: .placement)
        }
        try c.encode(candidates.prefix(Self.candidatesMax).map(CandidateDocument.init), forKey: .candidates)
        try c.encode(candidates.count, forKey: .candidatesTotal)
        try c.encode(filtered, forKey: .filtered)
    }
}

/// A placement with every key present (`node` null for new machines).
struct PlacementDocument: Encodable {
    let p: Placement
    init(_ p: Placement) { self.p = p }
    enum CodingKeys: String, CodingKey { case provider, region, machineType, spot, pricePerHour, node }
    func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(p.provider, forKey: .provider)
        try c.encode(p.region, forKey: .region)
        try c.encode(p.machineType, forKey: .machineType)
        try c.encode(p.spot, forKey: .spot)
        try c.encode(p.pricePerHour, forKey: .pricePerHour)
        try c.encode(p.node, forKey: .node)
    }
}

/// A judged candidate with every key present (`reason` null when feasible).
struct CandidateDocument: Encodable {
    let r: CandidateResult
    init(_ r: CandidateResult) { self.r = r }
    enum CodingKeys: String, CodingKey {
        case provider, region, machineType, spot, pricePerHour, node, feasible, reason
    }
    func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(r.provider, forKey: .provider)
        try c.encode(r.region, forKey: .region)
        try c.encode(r.machineType, forKey: .machineType)
        try c.encode(r.spot, forKey: .spot)
        try c.encode(r.pricePerHour, forKey: .pricePerHour)
        try c.encode(r.node, forKey: .node)
        try c.encode(r.feasible, forKey: .feasible)
        try c.encode(r.reason, forKey: .reason)
    }
}

/// `GET /v1/workloads`: a page of workloads and the cursor of the next one.
struct WorkloadListDocument: Encodable {
    var items: [Workload]
    var nextCursor: String?

    enum CodingKeys: String, CodingKey { case items, nextCursor }
    func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(items, forKey: .items)
        try c.encode(nextCursor, forKey: .nextCursor)
    }
}

struct EventListDocument: Encodable {
    var events: [WorkloadEvent]
}

struct NodeListDocument: Encodable {
    var nodes: [NodeInfo]
}

struct HealthDocument: Encodable {
    var status: String
    var version: String
    var store: String
    var schemaVersion: Int
    var uptimeSeconds: Int64
}
