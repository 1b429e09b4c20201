import FabricCore
import Foundation

/// The store operations as SQL, written once for both dialects. Each function runs on a connection's own thread;
/// documents are encoded before and decoded after, on the caller's task.
enum StoreQueries {
    static func createWorkload<C: SQLConnection>(_ db: C, _ row: WorkloadRow, event: Data, at: Int64)
        throws(FabricError)
    {
        let exists = FabricError(.alreadyExists, "workload \(row.id) already exists", field: "id")
        if C.dialect == .postgres {
            // One statement, so one round trip and atomic without BEGIN/COMMIT: the label and event rows are
            // inserted only when the workload row was (ON CONFLICT DO NOTHING makes `w` empty for a duplicate, and a
            // concurrent duplicate waits for the first to commit). Foreign keys are checked at the statement's end.
            let created = try db.queryOne(
                """
                WITH w AS (
                    INSERT INTO workloads (id, name, phase, version, doc, created_at, updated_at)
                    VALUES ($1, $2, $3, $4, $5, $6, $7)
                    ON CONFLICT (id) DO NOTHING
                    RETURNING id
                ), l AS (
                    INSERT INTO workload_labels (workload_id, key, value)
                    SELECT w.id, j.key, j.value FROM w, json_each_text($8::json) AS j
                ), e AS (
                    INSERT INTO workload_events (workload_id, seq, at, doc)
                    SELECT w.id, 1, $9::bigint, $10::json FROM w
                )
                SELECT COUNT(*) FROM w
                """,
                [
                    .text(row.id), .text(row.name), .text(row.phase), .int(row.version), .json(row.doc),
                    .int(row.createdAtMs), .int(row.updatedAtMs), .json(row.labelsDoc), .int(at), .json(event),
                ]
            ) { (r: C.Row) throws(FabricError) in try r.int64(0) }
            guard created == 1 else { throw exists }
            return
        }
        try db.transaction { () throws(FabricError) in
            // ON CONFLICT DO NOTHING instead of catching the unique violation: no error path and no log line.
            let inserted = try db.execute(
                """
                INSERT INTO workloads (id, name, phase, version, doc, created_at, updated_at)
                VALUES ($1, $2, $3, $4, $5, $6, $7)
                ON CONFLICT (id) DO NOTHING
                """,
                [
                    .text(row.id), .text(row.name), .text(row.phase), .int(row.version), .json(row.doc),
                    .int(row.createdAtMs), .int(row.updatedAtMs),
                ])
            guard inserted == 1 else { throw exists }
            try insertLabels(db, row)
            try insertEvent(db, workloadID: row.id, seq: 1, at: at, doc: event)
        }
    }

    /// Replaces the workload if its stored version is `row.version - 1`; appends the event with the next seq.
    /// - Returns: the stored event, or nil when none was given.
    static func updateWorkload<C: SQLConnection>(_ db: C, _ row: WorkloadRow, event: EventRow?) throws(FabricError)
        -> WorkloadEvent?
    {
        try db.transaction { () throws(FabricError) -> WorkloadEvent? in
            let changed = try db.execute(
                """
                UPDATE workloads SET name = $2, phase = $3, version = $4, doc = $5, updated_at = $6
                WHERE id = $1 AND version = $7
                """,
                [
                    .text(row.id), .text(row.name), .text(row.phase), .int(row.version), .json(row.doc),
                    .int(row.updatedAtMs), .int(row.version - 1),
                ])
            if changed == 0 {
                let stored = try db.queryOne("SELECT version FROM workloads WHERE id = $1", [.text(row.id)]) {
                    (r: C.Row) throws(FabricError) in try r.int64(0)
                }
                guard let stored else { throw FabricError(.notFound, "workload \(row.id) not found", field: "id") }
                throw FabricError(
                    .conflict,
                    "workload \(row.id) is at version \(stored); the update expected version \(row.version - 1)",
                    field: "version")
            }
            // Most updates are status changes: leave the label rows alone unless the labels changed.
            var labels: [String: String] = [:]
            try db.query("SELECT key, value FROM workload_labels WHERE workload_id = $1", [.text(row.id)]) {
                labels[$0.text(0)] = $0.text(1)
            }
            if labels != row.labelMap {
                try db.execute("DELETE FROM workload_labels WHERE workload_id = $1", [.text(row.id)])
                try insertLabels(db, row)
            }
            guard let event else { return nil }
            // max + 1 cannot race: the UPDATE above holds the workload's row lock (PostgreSQL) or the one writer
            // holds the database (SQLite) until this transaction ends.
            let seq =
                try db.queryOne(
                    "SELECT COALESCE(MAX(seq), 0) + 1 FROM workload_events WHERE workload_id = $1", [.text(row.id)]
                ) { (r: C.Row) throws(FabricError) in try r.int64(0) } ?? 1
            let (stored, doc) = try event.stored(seq: seq)
            try insertEvent(db, workloadID: row.id, seq: seq, at: stored.at.millisecondsSinceEpoch, doc: doc)
            return stored
        }
    }

    static func workloadDocument<C: SQLConnection>(_ db: C, id: String) throws(FabricError) -> Data? {
        try db.queryOne("SELECT doc FROM workloads WHERE id = $1", [.text(id)]) { $0.data(0) }
    }

    /// Up to `limit + 1` rows of the page, so the caller knows whether another page follows.
    ///
    /// Pages are keyed by creation seq. Under SQLite seqs are assigned in commit order (one writer). Under
    /// PostgreSQL two concurrent creates can commit in the opposite order of their seqs, so a walk that is under
    /// way while rows are being created can miss a row created at that moment; it never repeats one.
    static func listWorkloads<C: SQLConnection>(_ db: C, _ q: ListQuery) throws(FabricError)
        -> [(seq: Int64, doc: Data)]
    {
        var sql = "SELECT seq, doc FROM workloads w WHERE seq > $1"
        var params: [SQLParam] = [.int(q.afterSeq)]
        if let phase = q.phase {
            params.append(.text(phase.rawValue))
            sql += " AND phase = $\(params.count)"
        }
        for label in q.labels {
            params.append(.text(label.key))
            params.append(.text(label.value))
            sql += " AND EXISTS (SELECT 1 FROM workload_labels l WHERE l.workload_id = w.id"
            sql += " AND l.key = $\(params.count - 1) AND l.value = $\(params.count))"
        }
        params.append(.int(Int64(q.limit + 1)))
        sql += " ORDER BY seq LIMIT $\(params.count)"
        var rows: [(seq: Int64, doc: Data)] = []
        try db.query(sql, params) { (r: C.Row) throws(FabricError) in
            rows.append((seq: try r.int64(0), doc: r.data(1)))
        }
        return rows
    }

    static func eventDocuments<C: SQLConnection>(_ db: C, workloadID: String, afterSeq: Int64, limit: Int)
        throws(FabricError) -> [Data]
    {
        var docs: [Data] = []
        try db.query(
            "SELECT doc FROM workload_events WHERE workload_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
            [.text(workloadID), .int(afterSeq), .int(Int64(limit))]
        ) { docs.append($0.data(0)) }
        return docs
    }

    static func activeWorkloadDocuments<C: SQLConnection>(_ db: C) throws(FabricError) -> [Data] {
        let finals = StoreValidation.finalPhases
        let placeholders = (1...finals.count).map { "$\($0)" }.joined(separator: ", ")
        var docs: [Data] = []
        try db.query(
            "SELECT doc FROM workloads WHERE phase NOT IN (\(placeholders)) ORDER BY seq", finals.map { .text($0) }
        ) { docs.append($0.data(0)) }
        return docs
    }

    static func upsertNode<C: SQLConnection>(_ db: C, id: String, doc: Data, updatedAt: Int64) throws(FabricError) {
        try db.execute(
            """
            INSERT INTO nodes (id, doc, updated_at) VALUES ($1, $2, $3)
            ON CONFLICT (id) DO UPDATE SET doc = excluded.doc, updated_at = excluded.updated_at
            """, [.text(id), .json(doc), .int(updatedAt)])
    }

    static func nodeDocuments<C: SQLConnection>(_ db: C) throws(FabricError) -> [Data] {
        var docs: [Data] = []
        try db.query("SELECT doc FROM nodes ORDER BY id", []) { docs.append($0.data(0)) }
        return docs
    }

    static func schemaVersion<C: SQLConnection>(_ db: C) throws(FabricError) -> Int {
        let version = try db.queryOne("SELECT COALESCE(MAX(version), 0) FROM schema_migrations", []) {
            (r: C.Row) throws(FabricError) in try r.int64(0)
        }
        return Int(version ?? 0)
    }

    /// Every applied migration version, ascending (tests check that reopening applies nothing twice).
    static func appliedMigrations<C: SQLConnection>(_ db: C) throws(FabricError) -> [Int] {
        var versions: [Int] = []
        try db.query("SELECT version FROM schema_migrations ORDER BY version", []) {
            (r: C.Row) throws(FabricError) in versions.append(Int(try r.int64(0)))
        }
        return versions
    }

    private static func insertLabels<C: SQLConnection>(_ db: C, _ row: WorkloadRow) throws(FabricError) {
        guard !row.labels.isEmpty else { return }
        if C.dialect == .postgres {
            // One round trip for all labels.
            try db.execute(
                """
                INSERT INTO workload_labels (workload_id, key, value)
                SELECT $1, j.key, j.value FROM json_each_text($2::json) AS j
                """, [.text(row.id), .json(row.labelsDoc)])
            return
        }
        for label in row.labels {
            try db.execute(
                "INSERT INTO workload_labels (workload_id, key, value) VALUES ($1, $2, $3)",
                [.text(row.id), .text(label.key), .text(label.value)])
        }
    }

    private static func insertEvent<C: SQLConnection>(_ db: C, workloadID: String, seq: Int64, at: Int64, doc: Data)
        throws(FabricError)
    {
        try db.execute(
            "INSERT INTO workload_events (workload_id, seq, at, doc) VALUES ($1, $2, $3, $4)",
            [.text(workloadID), .int(seq), .int(at), .json(doc)])
    }

    /// Decodes node documents on the caller's task .
    static func decodeNodes(_ docs: [Data]) throws(FabricError) -> [NodeInfo] {
        var out: [NodeInfo] = []
        out.reserveCapacity(docs.count)
        for doc in docs { out.append(try FabricJSON.decode(NodeInfo.self, from: doc)) }
        return out
    }

    /// Decodes documents on the caller's task.
    static func decodeAll<T: Decodable>(_ type: T.Type, _ docs: [Data]) throws(FabricError) -> [T] {
        var out: [T] = []
        out.reserveCapacity(docs.count)
        for doc in docs { out.append(try FabricJSON.decode(type, from: doc)) }
        return out
    }
}
