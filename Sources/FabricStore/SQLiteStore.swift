import FabricCore
import Foundation

/// The embedded store: one SQLite file in WAL mode, one writer connection and a few read-only connections, each on
/// its own thread.
///
/// Writes are serialized on the writer's thread (SQLite allows one writer); reads run in parallel on the readers
/// and see every write that has returned. JSON encoding and decoding happen on the caller's task.
public final class SQLiteStore: StateStore {
    /// The database file.
    public let path: String
    private let writer: ConnectionPool<SQLiteConnection>
    private let readers: ConnectionPool<SQLiteConnection>

    /// Opens or creates the database at `path` (and its parent folders) and applies pending migrations.
    /// - Parameters:
    ///   - path: the database file.
    ///   - readers: read-only connections next to the writer, 1...StoreLimits.sqliteReadersMax.
    public init(path: String, readers: Int = StoreLimits.sqliteReadersDefault) async throws(FabricError) {
        guard !path.isEmpty, path != ":memory:" else {
            throw .invalid("path", "the SQLite store needs a file path (WAL readers cannot share :memory:)")
        }
        guard (1...StoreLimits.sqliteReadersMax).contains(readers) else {
            throw .invalid("readers", "readers must be in 1...\(StoreLimits.sqliteReadersMax), got \(readers)")
        }
        self.path = path
        let writer = try await ConnectionPool(name: "sqlite-writer", size: 1) { () throws(FabricError) in
            try SQLiteConnection.openWriter(path: path)
        }
        do {
            self.readers = try await ConnectionPool(name: "sqlite-reader", size: readers) { () throws(FabricError) in
                try SQLiteConnection.openReader(path: path)
            }
        } catch {
            await writer.shutdown()
            throw error
        }
        self.writer = writer
    }

    deinit {
        // A store dropped without close() must not leave its threads (and the file) open.
        writer.requestShutdown()
        readers.requestShutdown()
    }

    /// Stores a new workload (version 1) and its first event (seq 1).
    @discardableResult
    public func createWorkload(_ workload: Workload, event: WorkloadEvent, document: Data?) async throws(FabricError)
        -> WorkloadEvent
    {
        try StoreValidation.checkCreate(workload)
        let row = try WorkloadRow(workload, document: document)
        let (stored, doc) = try EventRow(event, workloadID: workload.id).stored(seq: 1)
        try await writer.run { (db: SQLiteConnection) throws(FabricError) in
            try StoreQueries.createWorkload(db, row, event: doc, at: stored.at.millisecondsSinceEpoch)
        }
        return stored
    }

    /// Replaces a workload whose stored version is `workload.version - 1` and appends `event`.
    @discardableResult
    public func updateWorkload(_ workload: Workload, event: WorkloadEvent?, document: Data?) async throws(FabricError)
        -> WorkloadEvent?
    {
        let row = try WorkloadRow(workload, document: document)
        let eventRow: EventRow? = try event.map { (e) throws(FabricError) in try EventRow(e, workloadID: workload.id) }
        return try await writer.run { (db: SQLiteConnection) throws(FabricError) in
            try StoreQueries.updateWorkload(db, row, event: eventRow)
        }
    }

    /// One workload by ID, or nil.
    public func workload(id: String) async throws(FabricError) -> Workload? {
        let doc = try await readers.run { (db: SQLiteConnection) throws(FabricError) in
            try StoreQueries.workloadDocument(db, id: id)
        }
        return try doc.map { (d) throws(FabricError) in try FabricJSON.decode(Workload.self, from: d) }
    }

    /// A page of workloads matching `filter`, oldest first.
    public func listWorkloads(_ filter: WorkloadFilter) async throws(FabricError) -> WorkloadPage {
        let query = try ListQuery(filter)
        let rows = try await readers.run { (db: SQLiteConnection) throws(FabricError) in
            try StoreQueries.listWorkloads(db, query)
        }
        return try query.page(from: rows)
    }

    /// A workload's events after `afterSeq`, in order, at most `limit` (clamped to 1...eventsPageSizeMax).
    public func events(workloadID: String, afterSeq: Int64, limit: Int) async throws(FabricError) -> [WorkloadEvent] {
        let limit = StoreValidation.clampEventLimit(limit)
        let docs = try await readers.run { (db: SQLiteConnection) throws(FabricError) in
            try StoreQueries.eventDocuments(db, workloadID: workloadID, afterSeq: afterSeq, limit: limit)
        }
        return try StoreQueries.decodeAll(WorkloadEvent.self, docs)
    }

    /// Every workload not in a final phase, oldest first.
    public func activeWorkloads() async throws(FabricError) -> [Workload] {
        let docs = try await readers.run { (db: SQLiteConnection) throws(FabricError) in
            try StoreQueries.activeWorkloadDocuments(db)
        }
        return try StoreQueries.decodeAll(Workload.self, docs)
    }

    /// Stores or replaces a node record.
    public func upsertNode(_ node: NodeInfo) async throws(FabricError) {
        let doc = try FabricJSON.encode(node)
        let updatedAt = (node.lastHeartbeat ?? node.registeredAt).millisecondsSinceEpoch
        try await writer.run { (db: SQLiteConnection) throws(FabricError) in
            try StoreQueries.upsertNode(db, id: node.id, doc: doc, updatedAt: updatedAt)
        }
    }

    /// Every stored node, by ID.
    public func nodes() async throws(FabricError) -> [NodeInfo] {
        let docs = try await readers.run { (db: SQLiteConnection) throws(FabricError) in
            try StoreQueries.nodeDocuments(db)
        }
        return try StoreQueries.decodeNodes(docs)
    }

    /// The latest applied migration.
    public func schemaVersion() async throws(FabricError) -> Int {
        try await readers.run { (db: SQLiteConnection) throws(FabricError) in try StoreQueries.schemaVersion(db) }
    }

    /// Every applied migration version (for tests).
    func appliedMigrations() async throws(FabricError) -> [Int] {
        try await readers.run { (db: SQLiteConnection) throws(FabricError) in try StoreQueries.appliedMigrations(db) }
    }

    /// Finishes queued operations, closes every connection; later calls fail with `.unavailable`.
    public func close() async {
        await writer.shutdown()
        await readers.shutdown()
    }
}
