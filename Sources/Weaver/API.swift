import FabricCore
import FabricHTTP
import FabricProviders
import FabricStore
import Foundation
import Shuttle

/// The REST API: routes, query parsing and documents. Handlers are thin; the services do the work.
struct WeaverAPI: Sendable {
    let service: WorkloadService
    let providers: ProviderService
    let store: any StateStore
    let storeKind: String
    let clock: any WallClock
    let startedAt: Timestamp
    let version: String

    /// Bytes of log tail returned when `tail` is not given, and the most one request may ask for: what one call
    /// to the node may carry, so a tail is never cut silently.
    static let logTailBytesDefault = NodeProtocolLimits.logBytesPerCallMax
    static let logTailBytesMax = NodeProtocolLimits.logBytesPerCallMax
    static let eventsPageMax = 1000
    /// How long /health waits for the store before answering 503.
    static let healthStoreTimeout: Duration = .seconds(2)

    /// Runs `body`, or throws `.unavailable` once `limit` has passed. The body runs unstructured, so a call stuck
    /// in a blocked database cannot hold the answer back; it finishes (or not) on its own.
    static func withDeadline<T: Sendable>(_ limit: Duration, _ body: @escaping @Sendable () async throws -> T)
        async throws -> T
    {
        let result = Promise<T>()
        Task {
            do { result.fulfil(.success(try await body())) } catch { result.fulfil(.failure(error)) }
        }
        let timer = Task {
            try await Task.sleep(for: limit)
            result.fulfil(.failure(FabricError(.unavailable, "no answer within \(limit)")))
        }
        defer { timer.cancel() }
        return try await result.value()
    }

    func router() -> Router {
        var r = Router()
        r.get("/health") { _ in try await health() }
        r.post("/v1/workloads", query: ["dryRun"]) { req in try await createWorkload(req) }
        r.get("/v1/workloads", query: ["status", "phase", "label", "labelSelector", "limit", "cursor"]) { req in
            try await listWorkloads(req)
        }
        r.get("/v1/workloads/:id") { req in
            let id = try req.parameter("id")
            // Unfinished workloads answer from the document cache, without suspending (the hot path).
            if let doc = service.documents.get(id) { return .bytes(doc, contentType: Response.jsonContentType) }
            return try .json(await service.get(id))
        }
        r.delete("/v1/workloads/:id") { req in try await deleteWorkload(req) }
        r.get("/v1/workloads/:id/logs", query: ["tail"]) { req in try await logs(req) }
        r.get("/v1/workloads/:id/events", query: ["after", "limit"]) { req in try await events(req) }
        r.get("/v1/providers") { _ in try .json(ProviderListDocument(providers: providers.statuses())) }
        r.get("/v1/providers/:name/regions") { req in
            let p = try providers.provider(try req.parameter("name"))
            return try .json(RegionListDocument(provider: p.rawValue, regions: providers.regions(p)))
        }
        r.get("/v1/providers/:name/machine-types", query: ["region"]) { req in
            let p = try providers.provider(try req.parameter("name"))
            let region = req.query["region"]
            let types = providers.machineTypes(p, region: region)
            return try .json(MachineTypeListDocument(provider: p.rawValue, region: region, machineTypes: types))
        }
        r.get("/v1/nodes") { _ in try .json(NodeListDocument(nodes: await service.listNodes())) }
        r.get("/v1/nodes/:id") { req in
            let id = try req.parameter("id")
            guard let n = await service.node(id: id) else {
                throw FabricError(.notFound, "node \(id) not found", field: "id")
            }
            return try .json(n)
        }
        r.post("/v1/nodes/:id/drain") { req in try .json(await service.drain(try req.parameter("id"))) }
        r.delete("/v1/nodes/:id") { req in try .json(await service.deregister(try req.parameter("id"))) }
        r.get("/v1/scheduler/status") { _ in try .json(await service.schedulerStatus()) }
        return r
    }

    func health() async throws -> Response {
        let schema: Int
        do { schema = try await Self.withDeadline(Self.healthStoreTimeout) { try await store.schemaVersion() } } catch {
            let detail = (error as? FabricError)?.message ?? "\(error)"
            throw FabricError(.unavailable, "the \(storeKind) store does not answer: \(detail)")
        }
        let uptime = clock.now().since(startedAt).components.seconds
        return try .json(
            HealthDocument(
                status: "ok", version: version, store: storeKind, schemaVersion: schema, uptimeSeconds: uptime))
    }

    func createWorkload(_ req: Request) async throws -> Response {
        let dryRun = try Self.bool(req.query["dryRun"], field: "dryRun")
        let spec = try WorkloadSpecParser.parse(req.body)
        if dryRun {
            let d = await service.dryRun(spec)
            return try .json(DryRunDocument(placement: d.placement, candidates: d.candidates, filtered: d.filtered))
        }
        return .bytes(try await service.submitEncoded(spec), status: 202, contentType: Response.jsonContentType)
    }

    func listWorkloads(_ req: Request) async throws -> Response {
        var filter = WorkloadFilter()
        let statuses = req.query.values(for: "status") + req.query.values(for: "phase")
        for s in statuses {
            guard let p = Phase(rawValue: s) else {
                let all = Phase.allCases.map(\.rawValue).joined(separator: ", ")
                throw FabricError.invalid("status", "unknown status \"\(s)\"; one of \(all)")
            }
            guard filter.phase == nil || filter.phase == p else {
                throw FabricError.invalid("status", "one status at a time, got \(statuses.joined(separator: " and "))")
            }
            filter.phase = p
        }
        for selector in req.query.values(for: "label") + req.query.values(for: "labelSelector") {
            for pair in selector.split(separator: ",", omittingEmptySubsequences: false) {
                let kv = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
                guard kv.count == 2, !kv[0].isEmpty, !kv[1].isEmpty else {
                    throw FabricError.invalid("label", "label filters are key=value[,key=value], got \"\(pair)\"")
                }
                filter.labels[kv[0]] = kv[1]
            }
        }
        if let l = req.query["limit"] {
            guard let n = Int(l), (1...Limits.listPageSizeMax).contains(n) else {
                throw FabricError.invalid("limit", "limit must be an integer from 1 to \(Limits.listPageSizeMax)")
            }
            filter.limit = n
        }
        filter.cursor = req.query["cursor"]
        let page = try await store.listWorkloads(filter)
        return try .json(WorkloadListDocument(items: page.items, nextCursor: page.nextCursor))
    }

    func deleteWorkload(_ req: Request) async throws -> Response {
        let w = try await service.delete(try req.parameter("id"))
        return try .json(w, status: w.phase == .deleted ? 200 : 202)
    }

    func logs(_ req: Request) async throws -> Response {
        var tail = Self.logTailBytesDefault
        if let t = req.query["tail"] {
            guard let n = Int(t), (1...Self.logTailBytesMax).contains(n) else {
                throw FabricError.invalid("tail", "tail is a byte count from 1 to \(Self.logTailBytesMax)")
            }
            tail = n
        }
        let bytes = try await service.logs(try req.parameter("id"), tailBytes: tail)
        return .bytes(bytes, contentType: "text/plain; charset=utf-8")
    }

    func events(_ req: Request) async throws -> Response {
        let id = try req.parameter("id")
        _ = try await service.get(id)  // 404 for an unknown workload
        var after: Int64 = 0
        if let a = req.query["after"] {
            guard let n = Int64(a), n >= 0 else {
                throw FabricError.invalid("after", "after is a sequence number >= 0")
            }
            after = n
        }
        var limit = Self.eventsPageMax
        if let l = req.query["limit"] {
            guard let n = Int(l), (1...Self.eventsPageMax).contains(n) else {
                throw FabricError.invalid("limit", "limit must be an integer from 1 to \(Self.eventsPageMax)")
            }
            limit = n
        }
        let events = try await store.events(workloadID: id, afterSeq: after, limit: limit)
        return try .json(EventListDocument(events: events))
    }

    static func bool(_ s: String?, field: String) throws(FabricError) -> Bool {
        switch s?.lowercased() {
        case nil, "false", "0", "no": return false
        case "", "true", "1", "yes": return true
        default: throw FabricError.invalid(field, "\(field) must be true or false")
        }
    }
}

struct ProviderListDocument: Encodable {
    var providers: [ProviderStatus]
}

struct RegionListDocument: Encodable {
    var provider: String
    var regions: [PricedRegion]
}

struct MachineTypeListDocument: Encodable {
    var provider: String
    var region: String?
    var machineTypes: [PricedOffer]
}
