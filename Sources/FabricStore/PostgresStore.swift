import CPostgres
import FabricCore
import Foundation

/// The shared store: PostgreSQL through libpq, with a small pool of connections, each on its own thread.
///
/// Every multi-statement operation runs in one transaction. A connection found broken is reset once before use;
/// if the server is still unreachable the call fails with `.unavailable`. Reads that hit a connection breaking
/// mid-query are retried once on the reset connection; writes are not (their outcome is unknown).
public final class PostgresStore: StateStore {
    /// `host:port/database` as a human-readable target, without credentials.
    public let target: String
    /// The schema all tables live in, or nil for the connection's default search_path.
    public let schema: String?
    private let pool: ConnectionPool<PostgresConnection>

    /// Connects to a `postgresql://` URL (or a libpq `key=value` conninfo string) and applies pending migrations.
    /// - Parameters:
    ///   - url: where the database is; its password is never logged or put in error messages.
    ///   - schema: keep the tables in this schema (created if missing): lower-case letters, digits, `_`.
    ///   - poolSize: connections, 1...StoreLimits.postgresPoolSizeMax.
    public convenience init(url: String, schema: String? = nil, poolSize: Int = StoreLimits.postgresPoolSizeDefault)
        async throws(FabricError)
    {
        try await self.init(conninfo: url, field: "url", schema: schema, poolSize: poolSize)
    }

    /// Connects with separate parameters, quoted into a conninfo string, and applies pending migrations.
    public convenience init(
        host: String, port: Int = 5432, user: String, password: String? = nil, database: String,
        schema: String? = nil, poolSize: Int = StoreLimits.postgresPoolSizeDefault
    ) async throws(FabricError) {
        guard (1...65535).contains(port) else { throw .invalid("port", "port must be in 1...65535, got \(port)") }
        let conninfo = Self.conninfo([
            ("host", host), ("port", String(port)), ("user", user), ("password", password), ("dbname", database),
        ])
        try await self.init(conninfo: conninfo, field: "database", schema: schema, poolSize: poolSize)
    }

    private init(conninfo: String, field: String, schema: String?, poolSize: Int) async throws(FabricError) {
        guard (1...StoreLimits.postgresPoolSizeMax).contains(poolSize) else {
            throw .invalid("poolSize", "poolSize must be in 1...\(StoreLimits.postgresPoolSizeMax), got \(poolSize)")
        }
        if let schema { try Self.checkSchemaName(schema) }
        let target = try Self.describe(conninfo, field: field)
        var parameters: [(String, String)] = [
            ("dbname", conninfo),
            ("application_name", "fabric"),
            ("connect_timeout", String(StoreLimits.postgresConnectTimeout.components.seconds)),
        ]
        // Set at connection start, so a reset connection gets it back without a statement.
        if let schema { parameters.append(("options", "-c search_path=\(schema)")) }
        let connectParameters = parameters
        let pool = try await ConnectionPool(name: "postgres", size: poolSize) { () throws(FabricError) in
            try PostgresConnection.connect(parameters: connectParameters, target: target)
        }
        do {
            let lockKey = Self.migrationLockKey(schema: schema)
            _ = try await pool.run { (db: PostgresConnection) throws(FabricError) in
                try db.ensureConnected()
                return try db.migrate(schema: schema, lockKey: lockKey)
            }
        } catch {
            await pool.shutdown()
            throw error
        }
        self.target = target
        self.schema = schema
        self.pool = pool
    }

    deinit {
        // A store dropped without close() must not leave its threads and connections open.
        pool.requestShutdown()
    }

    /// Stores a new workload (version 1) and its first event (seq 1).
    @discardableResult
    public func createWorkload(_ workload: Workload, event: WorkloadEvent, document: Data?) async throws(FabricError)
        -> WorkloadEvent
    {
        try StoreValidation.checkCreate(workload)
        let row = try WorkloadRow(workload, document: document)
        let (stored, doc) = try EventRow(event, workloadID: workload.id).stored(seq: 1)
        try await write { (db: PostgresConnection) throws(FabricError) in
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
        return try await write { (db: PostgresConnection) throws(FabricError) in
            try StoreQueries.updateWorkload(db, row, event: eventRow)
        }
    }

    /// One workload by ID, or nil.
    public func workload(id: String) async throws(FabricError) -> Workload? {
        let doc = try await read { (db: PostgresConnection) throws(FabricError) in
            try StoreQueries.workloadDocument(db, id: id)
        }
        return try doc.map { (d) throws(FabricError) in try FabricJSON.decode(Workload.self, from: d) }
    }

    /// A page of workloads matching `filter`, oldest first.
    public func listWorkloads(_ filter: WorkloadFilter) async throws(FabricError) -> WorkloadPage {
        let query = try ListQuery(filter)
        let rows = try await read { (db: PostgresConnection) throws(FabricError) in
            try StoreQueries.listWorkloads(db, query)
        }
        return try query.page(from: rows)
    }

    /// A workload's events after `afterSeq`, in order, at most `limit` (clamped to 1...eventsPageSizeMax).
    public func events(workloadID: String, afterSeq: Int64, limit: Int) async throws(FabricError) -> [WorkloadEvent] {
        let limit = StoreValidation.clampEventLimit(limit)
        let docs = try await read { (db: PostgresConnection) throws(FabricError) in
            try StoreQueries.eventDocuments(db, workloadID: workloadID, afterSeq: afterSeq, limit: limit)
        }
        return try StoreQueries.decodeAll(WorkloadEvent.self, docs)
    }

    /// Every workload not in a final phase, oldest first.
    public func activeWorkloads() async throws(FabricError) -> [Workload] {
        let docs = try await read { (db: PostgresConnection) throws(FabricError) in
            try StoreQueries.activeWorkloadDocuments(db)
        }
        return try StoreQueries.decodeAll(Workload.self, docs)
    }

    /// Stores or replaces a node record.
    public func upsertNode(_ node: NodeInfo) async throws(FabricError) {
        let doc = try FabricJSON.encode(node)
        let updatedAt = (node.lastHeartbeat ?? node.registeredAt).millisecondsSinceEpoch
        // An upsert is idempotent, so it may be retried like a read.
        try await read { (db: PostgresConnection) throws(FabricError) in
            try StoreQueries.upsertNode(db, id: node.id, doc: doc, updatedAt: updatedAt)
        }
    }

    /// Every stored node, by ID.
    public func nodes() async throws(FabricError) -> [NodeInfo] {
        let docs = try await read { (db: PostgresConnection) throws(FabricError) in try StoreQueries.nodeDocuments(db) }
        return try StoreQueries.decodeNodes(docs)
    }

    /// The latest applied migration.
    public func schemaVersion() async throws(FabricError) -> Int {
        try await read { (db: PostgresConnection) throws(FabricError) in try StoreQueries.schemaVersion(db) }
    }

    /// Every applied migration version (for tests).
    func appliedMigrations() async throws(FabricError) -> [Int] {
        try await read { (db: PostgresConnection) throws(FabricError) in try StoreQueries.appliedMigrations(db) }
    }

    /// Finishes queued operations and closes every connection; later calls fail with `.unavailable`.
    public func close() async {
        await pool.shutdown()
    }

    // MARK: connections

    /// Runs a write on a connection that is reset first if it broke.
    private func write<T: Sendable>(_ body: @escaping @Sendable (PostgresConnection) throws(FabricError) -> T)
        async throws(FabricError) -> T
    {
        try await pool.run { (db: PostgresConnection) throws(FabricError) -> T in
            try db.ensureConnected()
            return try body(db)
        }
    }

    /// Runs an idempotent operation; when the connection breaks under it, resets once and runs it again.
    private func read<T: Sendable>(_ body: @escaping @Sendable (PostgresConnection) throws(FabricError) -> T)
        async throws(FabricError) -> T
    {
        try await pool.run { (db: PostgresConnection) throws(FabricError) -> T in
            try db.ensureConnected()
            do throws(FabricError) {
                return try body(db)
            } catch  where db.isBroken {
                try db.ensureConnected()
                return try body(db)
            }
        }
    }

    /// Runs raw SQL on one pooled connection (tests use it to break connections and drop schemas).
    func executeForTesting(_ sql: String) async throws(FabricError) {
        try await write { (db: PostgresConnection) throws(FabricError) in try db.exec(sql) }
    }

    // MARK: connection strings

    /// A libpq conninfo string; every value is single-quoted with `\` and `'` escaped. Nil values are left out.
    static func conninfo(_ pairs: [(String, String?)]) -> String {
        pairs.compactMap { key, value in value.map { "\(key)=\(quoteConninfoValue($0))" } }.joined(separator: " ")
    }

    static func quoteConninfoValue(_ value: String) -> String {
        "'" + value.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "'", with: "\\'") + "'"
    }

    /// Checks that libpq can parse a URL or conninfo string, without connecting.
    /// - Throws: `.invalidArgument` naming `field`.
    public static func checkConninfo(_ conninfo: String, field: String) throws(FabricError) {
        _ = try describe(conninfo, field: field)
    }

    /// `user@host:port/database` from a URL or conninfo string, without the password.
    /// - Throws: `.invalidArgument` when libpq cannot parse it (its message is not repeated: it may quote secrets).
    static func describe(_ conninfo: String, field: String) throws(FabricError) -> String {
        var error: UnsafeMutablePointer<CChar>?
        guard let options = PQconninfoParse(conninfo, &error) else {
            PQfreemem(error)
            throw .invalid(field, "not a valid PostgreSQL URL or conninfo string")
        }
        defer { PQconninfoFree(options) }
        var values: [String: String] = [:]
        var option = options
        while let keyword = option.pointee.keyword {
            if let v = option.pointee.val { values[String(cString: keyword)] = String(cString: v) }
            option += 1
        }
        let host = values["host"] ?? values["hostaddr"] ?? "localhost"
        let port = values["port"] ?? "5432"
        let database = values["dbname"] ?? values["user"] ?? "postgres"
        let user = values["user"].map { "\($0)@" } ?? ""
        return "\(user)\(host):\(port)/\(database)"
    }

    /// Schema names are plain identifiers, so they need no quoting in `search_path` or DDL.
    static func checkSchemaName(_ schema: String) throws(FabricError) {
        let bytes = Array(schema.utf8)
        let ok =
            !bytes.isEmpty && bytes.count <= 63 && !(bytes[0] >= UInt8(ascii: "0") && bytes[0] <= UInt8(ascii: "9"))
            && bytes.allSatisfy {
                ($0 >= UInt8(ascii: "a") && $0 <= UInt8(ascii: "z"))
                    || ($0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9"))
                    || $0 == UInt8(ascii: "_")
            }
        guard ok else {
            throw .invalid(
                "schema", "a schema name is 1-63 lower-case letters, digits and _, not starting with a digit")
        }
    }

    /// The advisory lock that serializes migrations of one schema (FNV-1a of its name).
    static func migrationLockKey(schema: String?) -> Int64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in "fabric-migrations:\(schema ?? "")".utf8 {
            hash ^= UInt64(byte)
            hash = hash &* 0x0000_0100_0000_01b3
        }
        return Int64(bitPattern: hash)
    }
}
