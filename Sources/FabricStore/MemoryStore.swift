import FabricCore
import Foundation
import Synchronization

/// A store that keeps everything in memory, for the fleet simulator and tests: the same contract as SQLiteStore and
/// PostgresStore (the contract suite runs against it too), with every call completing synchronously on the caller's
/// task, so that a simulated run has no thread of its own whose timing could change an interleaving.
///
/// Documents are kept encoded, as the database stores keep them, so a read returns a fresh value decoded from what
/// was written (a caller changing its copy changes nothing stored). The data lives in a `MemoryDatabase`, which
/// outlives the stores opened on it as a database outlives the control plane: a simulated restart closes its store
/// and opens a new one on the same database. Nothing survives the process.
public final class MemoryStore: StateStore {
    /// The data several `MemoryStore`s (one at a time, or a closed one and its successor) can open.
    public let database: MemoryDatabase
    private let closed = Mutex(false)

    /// A store on `database` (a fresh, empty one by default).
    public init(database: MemoryDatabase = MemoryDatabase()) { self.database = database }

    /// Workloads stored (final ones included).
    public var workloadCount: Int { database.state.withLock { $0.rows.count } }

    /// Events stored across all workloads.
    public var eventCount: Int { database.state.withLock { $0.eventCount } }

    private func open<T>(_ body: (inout MemoryDatabase.State) throws(FabricError) -> T) throws(FabricError) -> T {
        guard !closed.withLock({ $0 }) else { throw FabricError(.unavailable, "the store is closed") }
        return try database.state.withLock { (s: inout MemoryDatabase.State) throws(FabricError) -> T in try body(&s) }
    }

    @discardableResult
    public func createWorkload(_ workload: Workload, event: WorkloadEvent, document: Data?) async throws(FabricError)
        -> WorkloadEvent
    {
        try StoreValidation.checkCreate(workload)
        let row = try WorkloadRow(workload, document: document)
        let (stored, eventDoc) = try EventRow(event, workloadID: workload.id).stored(seq: 1)
        try open { (s: inout MemoryDatabase.State) throws(FabricError) in
            guard s.rows[row.id] == nil else {
                throw FabricError(.alreadyExists, "workload \(row.id) already exists", field: "id")
            }
            s.nextSeq += 1
            s.rows[row.id] = MemoryDatabase.Row(
                seq: s.nextSeq, version: workload.version, phase: workload.phase, labels: row.labelMap, doc: row.doc)
            s.order.append(row.id)
            s.events[row.id] = [eventDoc]
            s.eventCount += 1
        }
        return stored
    }

    @discardableResult
    public func updateWorkload(_ workload: Workload, event: WorkloadEvent?, document: Data?) async throws(FabricError)
        -> WorkloadEvent?
    {
        let row = try WorkloadRow(workload, document: document)
        let eventRow: EventRow? = try event.map { (e) throws(FabricError) in try EventRow(e, workloadID: workload.id) }
        return try open { (s: inout MemoryDatabase.State) throws(FabricError) -> WorkloadEvent? in
            guard let old = s.rows[row.id] else {
                throw FabricError(.notFound, "workload \(row.id) not found", field: "id")
            }
            guard old.version == workload.version - 1 else {
                throw FabricError(
                    .conflict,
                    "workload \(row.id) is at version \(old.version); the update expected version \(workload.version - 1)",
                    field: "version")
            }
            var stored: WorkloadEvent?
            if let eventRow {
                let seq = Int64(s.events[row.id, default: []].count + 1)
                let (e, doc) = try eventRow.stored(seq: seq)
                s.events[row.id, default: []].append(doc)
                s.eventCount += 1
                stored = e
            }
            s.rows[row.id] = MemoryDatabase.Row(
                seq: old.seq, version: workload.version, phase: workload.phase, labels: row.labelMap, doc: row.doc)
            return stored
        }
    }

    public func workload(id: String) async throws(FabricError) -> Workload? {
        let doc = try open { (s: inout MemoryDatabase.State) throws(FabricError) in s.rows[id]?.doc }
        return try doc.map { (d) throws(FabricError) in try FabricJSON.decode(Workload.self, from: d) }
    }

    public func listWorkloads(_ filter: WorkloadFilter) async throws(FabricError) -> WorkloadPage {
        let query = try ListQuery(filter)
        let rows = try open { (s: inout MemoryDatabase.State) throws(FabricError) -> [(seq: Int64, doc: Data)] in
            // Creation order is seq order: binary search for the first row after the cursor.
            var lo = 0
            var hi = s.order.count
            while lo < hi {
                let mid = (lo + hi) / 2
                if s.rows[s.order[mid]]!.seq <= query.afterSeq { lo = mid + 1 } else { hi = mid }
            }
            var out: [(seq: Int64, doc: Data)] = []
            for id in s.order[lo...] {
                guard let r = s.rows[id] else { continue }
                if let phase = query.phase, r.phase != phase { continue }
                if !query.labels.allSatisfy({ r.labels[$0.key] == $0.value }) { continue }
                out.append((seq: r.seq, doc: r.doc))
                if out.count > query.limit { break }
            }
            return out
        }
        return try query.page(from: rows)
    }

    public func events(workloadID: String, afterSeq: Int64, limit: Int) async throws(FabricError) -> [WorkloadEvent] {
        let limit = StoreValidation.clampEventLimit(limit)
        let docs = try open { (s: inout MemoryDatabase.State) throws(FabricError) -> [Data] in
            let all = s.events[workloadID] ?? []
            let from = Int(min(max(afterSeq, 0), Int64(all.count)))
            return Array(all[from...].prefix(limit))
        }
        return try StoreQueries.decodeAll(WorkloadEvent.self, docs)
    }

    public func activeWorkloads() async throws(FabricError) -> [Workload] {
        let docs = try open { (s: inout MemoryDatabase.State) throws(FabricError) -> [Data] in
            s.order.compactMap { id in s.rows[id].flatMap { $0.phase.isFinal ? nil : $0.doc } }
        }
        return try StoreQueries.decodeAll(Workload.self, docs)
    }

    public func upsertNode(_ node: NodeInfo) async throws(FabricError) {
        let doc = try FabricJSON.encode(node)
        try open { (s: inout MemoryDatabase.State) throws(FabricError) in s.nodes[node.id] = doc }
    }

    public func nodes() async throws(FabricError) -> [NodeInfo] {
        let docs = try open { (s: inout MemoryDatabase.State) throws(FabricError) -> [Data] in
            s.nodes.keys.sorted().compactMap { s.nodes[$0] }
        }
        return try StoreQueries.decodeNodes(docs)
    }

    public func schemaVersion() async throws(FabricError) -> Int {
        try open { (_: inout MemoryDatabase.State) throws(FabricError) in Migrations.latest }
    }

    public func close() async { closed.withLock { $0 = true } }
}

/// What a `MemoryStore` keeps: workloads with their creation order and events, and node records.
public final class MemoryDatabase: Sendable {
    struct Row {
        var seq: Int64
        var version: Int
        var phase: Phase
        var labels: [String: String]
        var doc: Data
    }

    struct State {
        var nextSeq: Int64 = 0
        var rows: [String: Row] = [:]
        /// Workload IDs in creation order (seq ascending).
        var order: [String] = []
        var events: [String: [Data]] = [:]
        var nodes: [String: Data] = [:]
        /// Stored events so far (all workloads).
        var eventCount = 0
    }

    let state = Mutex(State())

    public init() {}
}
