import FabricCore

/// One versioned schema change, written once per SQL dialect. Both dialects describe the same logical schema.
struct Migration: Sendable {
    let version: Int
    let summary: String
    let sqlite: [String]
    let postgres: [String]
}

/// The schema of both stores, in order. Never edit a released migration; append a new one.
///
/// Times are stored as milliseconds since the Unix epoch (`*_at` columns); documents (`doc`) hold the value encoded
/// with `FabricJSON.encode`, which is the source of truth; the other columns exist to filter and order.
enum Migrations {
    /// Creates the bookkeeping table itself; runs before any migration.
    static let bootstrapSQLite = """
        CREATE TABLE IF NOT EXISTS schema_migrations (
            version INTEGER PRIMARY KEY,
            applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
        )
        """
    static let bootstrapPostgres = """
        CREATE TABLE IF NOT EXISTS schema_migrations (
            version INTEGER PRIMARY KEY,
            applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
        )
        """

    static let all: [Migration] = [
        Migration(
            version: 1, summary: "workloads, labels, events, nodes",
            // SQLite: AUTOINCREMENT exists only on the INTEGER PRIMARY KEY (the rowid alias, which VACUUM never
            // renumbers), so `seq` is the primary key and `id` is UNIQUE NOT NULL. The storage is what
            // `id TEXT PRIMARY KEY` would give (a rowid table plus a unique index on id), but creation order is a
            // stable, never-reused key.
            sqlite: [
                """
                CREATE TABLE workloads (
                    seq INTEGER PRIMARY KEY AUTOINCREMENT,
                    id TEXT NOT NULL UNIQUE,
                    name TEXT NOT NULL,
                    phase TEXT NOT NULL,
                    version INTEGER NOT NULL,
                    doc TEXT NOT NULL,
                    created_at INTEGER NOT NULL,
                    updated_at INTEGER NOT NULL
                )
                """,
                "CREATE INDEX workloads_phase ON workloads (phase, seq)",
                """
                CREATE TABLE workload_labels (
                    workload_id TEXT NOT NULL REFERENCES workloads (id) ON DELETE CASCADE,
                    key TEXT NOT NULL,
                    value TEXT NOT NULL,
                    PRIMARY KEY (workload_id, key)
                ) WITHOUT ROWID
                """,
                "CREATE INDEX workload_labels_key_value ON workload_labels (key, value)",
                """
                CREATE TABLE workload_events (
                    workload_id TEXT NOT NULL REFERENCES workloads (id) ON DELETE CASCADE,
                    seq INTEGER NOT NULL,
                    at INTEGER NOT NULL,
                    doc TEXT NOT NULL,
                    PRIMARY KEY (workload_id, seq)
                ) WITHOUT ROWID
                """,
                """
                CREATE TABLE nodes (
                    id TEXT PRIMARY KEY,
                    doc TEXT NOT NULL,
                    updated_at INTEGER NOT NULL
                ) WITHOUT ROWID
                """,
            ],
            // PostgreSQL: documents are `json` (kept verbatim, queryable with ->>), not `jsonb`, which rejects the
            // \u0000 escape a status message may legitimately carry.
            postgres: [
                """
                CREATE TABLE workloads (
                    id TEXT PRIMARY KEY,
                    seq BIGSERIAL NOT NULL UNIQUE,
                    name TEXT NOT NULL,
                    phase TEXT NOT NULL,
                    version BIGINT NOT NULL,
                    doc JSON NOT NULL,
                    created_at BIGINT NOT NULL,
                    updated_at BIGINT NOT NULL
                )
                """,
                "CREATE INDEX workloads_phase ON workloads (phase, seq)",
                """
                CREATE TABLE workload_labels (
                    workload_id TEXT NOT NULL REFERENCES workloads (id) ON DELETE CASCADE,
                    key TEXT NOT NULL,
                    value TEXT NOT NULL,
                    PRIMARY KEY (workload_id, key)
                )
                """,
                "CREATE INDEX workload_labels_key_value ON workload_labels (key, value)",
                """
                CREATE TABLE workload_events (
                    workload_id TEXT NOT NULL REFERENCES workloads (id) ON DELETE CASCADE,
                    seq BIGINT NOT NULL,
                    at BIGINT NOT NULL,
                    doc JSON NOT NULL,
                    PRIMARY KEY (workload_id, seq)
                )
                """,
                """
                CREATE TABLE nodes (
                    id TEXT PRIMARY KEY,
                    doc JSON NOT NULL,
                    updated_at BIGINT NOT NULL
                )
                """,
            ])
    ]

    /// The version a fully migrated database reports.
    static var latest: Int { all.last?.version ?? 0 }

    /// The migrations a database at `current` still needs.
    /// - Throws: `.failedPrecondition` when the database is newer than this binary (a downgrade).
    static func pending(after current: Int) throws(FabricError) -> [Migration] {
        guard current <= latest else {
            throw FabricError(
                .failedPrecondition,
                "the database schema is at version \(current) but this build knows only up to \(latest); "
                    + "run a newer Fabric")
        }
        return all.filter { $0.version > current }
    }
}
