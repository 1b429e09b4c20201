import CSQLite
import CShims
import FabricCore
import Foundation

/// One SQLite connection with a cache of prepared statements. Used only on its pool's thread.
final class SQLiteConnection: SQLConnection {
    /// Whether a connection writes (one per store) or only reads (any number, thanks to WAL).
    enum Role: Sendable { case writer, reader }

    /// The WAL file is truncated back to this size after a checkpoint.
    static let journalSizeLimitBytes = 64 << 20

    static var dialect: SQLDialect { .sqlite }

    private let db: OpaquePointer
    private let path: String
    private var statements: [String: OpaquePointer] = [:]

    private init(db: OpaquePointer, path: String) {
        self.db = db
        self.path = path
    }

    /// Opens a read-only connection to a database the writer has already created.
    static func openReader(path: String) throws(FabricError) -> SQLiteConnection {
        do {
            return try openOnce(path: path, role: .reader, migrate: false)
        } catch {
            throw error.error
        }
    }

    /// Opens the writer, switches the file to WAL and applies pending migrations.
    ///
    /// Two openers racing on a brand-new file (two stores in one process, or two processes) can see
    /// `SQLITE_BUSY` while one switches the journal mode (SQLite does not call the busy handler there) or a
    /// transient I/O error while the other creates the WAL index; such an attempt is closed and retried with
    /// a growing pause, for at most the busy timeout. Any other error is returned at once.
    /// - Returns: the writer connection, migrated.
    static func openWriter(path: String) throws(FabricError) -> SQLiteConnection {
        let parent = (path as NSString).deletingLastPathComponent
        if !parent.isEmpty {
            do {
                try FileManager.default.createDirectory(atPath: parent, withIntermediateDirectories: true)
            } catch {
                throw FabricError(.unavailable, "sqlite: cannot create the folder \(parent): \(error)")
            }
        }
        let deadline = ContinuousClock.now + StoreLimits.sqliteBusyTimeout
        var pause = Duration.milliseconds(2)
        while true {
            do {
                return try openOnce(path: path, role: .writer, migrate: true)
            } catch {
                let primary = error.code & 0xff
                let contended = primary == SQLITE_BUSY || primary == SQLITE_LOCKED || primary == SQLITE_IOERR
                guard contended, ContinuousClock.now + pause < deadline else { throw error.error }
                Thread.sleep(forTimeInterval: Double(pause.components.attoseconds) / 1e18)
                pause = min(pause * 2, .milliseconds(100))
            }
        }
    }

    /// A failed open with SQLite's extended result code (0 when the failure did not come from SQLite).
    struct OpenFailure: Error {
        let error: FabricError
        let code: Int32
    }

    private static func openOnce(path: String, role: Role, migrate: Bool) throws(OpenFailure) -> SQLiteConnection {
        var handle: OpaquePointer?
        let flags = SQLITE_OPEN_READWRITE | (role == .writer ? SQLITE_OPEN_CREATE : 0) | SQLITE_OPEN_NOMUTEX
        let rc = sqlite3_open_v2(path, &handle, flags, nil)
        guard rc == SQLITE_OK, let handle else {
            let message = handle.map { String(cString: sqlite3_errmsg($0)) } ?? "out of memory"
            sqlite3_close_v2(handle)
            throw OpenFailure(
                error: FabricError(.unavailable, "sqlite: cannot open \(path): \(message) (code \(rc))"), code: rc)
        }
        let connection = SQLiteConnection(db: handle, path: path)
        do throws(FabricError) {
            sqlite3_extended_result_codes(handle, 1)
            let busyMs = StoreLimits.sqliteBusyTimeout.components.seconds * 1000
            sqlite3_busy_timeout(handle, Int32(busyMs))
            if role == .writer {
                let mode = try connection.queryOne("PRAGMA journal_mode = WAL", []) { $0.text(0) }
                guard mode?.lowercased() == "wal" else {
                    throw FabricError(
                        .failedPrecondition, "sqlite: \(path) cannot use WAL mode (journal_mode is \(mode ?? "?"))")
                }
                try connection.exec("PRAGMA journal_size_limit = \(journalSizeLimitBytes)")
            } else {
                try connection.exec("PRAGMA query_only = ON")
            }
            try connection.exec("PRAGMA synchronous = NORMAL")
            try connection.exec("PRAGMA foreign_keys = ON")
            try connection.exec("PRAGMA temp_store = MEMORY")
            if migrate { _ = try connection.migrate() }
        } catch {
            let code = sqlite3_extended_errcode(handle)
            connection.close()
            throw OpenFailure(error: error, code: code)
        }
        return connection
    }

    /// Applies the pending migrations in one IMMEDIATE transaction, which also keeps a second process that opens
    /// the same file from migrating at the same time.
    /// - Returns: the schema version afterwards.
    func migrate() throws(FabricError) -> Int {
        try exec(Migrations.bootstrapSQLite)
        return try transaction { () throws(FabricError) -> Int in
            let current = try currentSchemaVersion()
            for migration in try Migrations.pending(after: current) {
                for statement in migration.sqlite { try exec(statement) }
                try execute("INSERT INTO schema_migrations (version) VALUES ($1)", [.int(Int64(migration.version))])
            }
            return try currentSchemaVersion()
        }
    }

    /// The latest applied migration, 0 for an empty database.
    func currentSchemaVersion() throws(FabricError) -> Int {
        let version = try queryOne("SELECT COALESCE(MAX(version), 0) FROM schema_migrations", []) {
            (r: SQLiteRow) throws(FabricError) in try r.int64(0)
        }
        return Int(version ?? 0)
    }

    func query(_ sql: String, _ params: [SQLParam], row: (SQLiteRow) throws(FabricError) -> Void) throws(FabricError) {
        let (stmt, cached) = try prepare(sql)
        defer { release(stmt, cached: cached) }
        try bind(stmt, params)
        while true {
            let rc = sqlite3_step(stmt)
            if rc == SQLITE_DONE { return }
            guard rc == SQLITE_ROW else { throw error(rc, "query") }
            try row(SQLiteRow(stmt: stmt))
        }
    }

    @discardableResult
    func execute(_ sql: String, _ params: [SQLParam]) throws(FabricError) -> Int {
        let (stmt, cached) = try prepare(sql)
        defer { release(stmt, cached: cached) }
        try bind(stmt, params)
        var rc = sqlite3_step(stmt)
        while rc == SQLITE_ROW { rc = sqlite3_step(stmt) }
        guard rc == SQLITE_DONE else { throw error(rc, "statement") }
        return Int(sqlite3_changes(db))
    }

    func transaction<T>(_ body: () throws(FabricError) -> T) throws(FabricError) -> T {
        // IMMEDIATE takes the write lock up front, so a transaction never fails half-way on a lock upgrade.
        try execute("BEGIN IMMEDIATE", [])
        do {
            let result = try body()
            try execute("COMMIT", [])
            return result
        } catch {
            if sqlite3_get_autocommit(db) == 0 { _ = try? execute("ROLLBACK", []) }
            throw error
        }
    }

    /// Runs SQL without parameters and without caching (pragmas, DDL).
    func exec(_ sql: String) throws(FabricError) {
        var message: UnsafeMutablePointer<CChar>?
        let rc = sqlite3_exec(db, sql, nil, nil, &message)
        if rc != SQLITE_OK {
            let text = message.map { String(cString: $0) } ?? String(cString: sqlite3_errmsg(db))
            sqlite3_free(message)
            throw Self.mapError(rc, "exec", text, path: path)
        }
    }

    func close() {
        for stmt in statements.values { sqlite3_finalize(stmt) }
        statements = [:]
        sqlite3_close_v2(db)
    }

    // MARK: statements

    private func prepare(_ sql: String) throws(FabricError) -> (OpaquePointer, cached: Bool) {
        if let stmt = statements[sql] { return (stmt, true) }
        let cache = statements.count < StoreLimits.statementCacheMax
        var stmt: OpaquePointer?
        let flags = cache ? UInt32(SQLITE_PREPARE_PERSISTENT) : 0
        let rc = sqlite3_prepare_v3(db, Self.sqlitePlaceholders(sql), -1, flags, &stmt, nil)
        guard rc == SQLITE_OK, let stmt else { throw error(rc, "prepare") }
        if cache { statements[sql] = stmt }
        return (stmt, cache)
    }

    private func release(_ stmt: OpaquePointer, cached: Bool) {
        if cached {
            // Resetting ends the statement's read transaction, so the next statement sees fresh data.
            sqlite3_reset(stmt)
            sqlite3_clear_bindings(stmt)
        } else {
            sqlite3_finalize(stmt)
        }
    }

    private func bind(_ stmt: OpaquePointer, _ params: [SQLParam]) throws(FabricError) {
        for (i, param) in params.enumerated() {
            let index = Int32(i + 1)
            let rc: Int32
            switch param {
            case .int(let v):
                rc = sqlite3_bind_int64(stmt, index, v)
            case .text(let s):
                var s = s
                rc = s.withUTF8 { Self.bindText(stmt, index, UnsafeRawBufferPointer($0)) }
            case .json(let d):
                rc = d.withUnsafeBytes { Self.bindText(stmt, index, $0) }
            }
            guard rc == SQLITE_OK else { throw error(rc, "bind") }
        }
    }

    private static let emptyText: StaticString = ""

    private static func bindText(_ stmt: OpaquePointer, _ index: Int32, _ bytes: UnsafeRawBufferPointer) -> Int32 {
        // A nil pointer would bind NULL; an empty string must stay an empty string.
        let base = bytes.baseAddress ?? UnsafeRawPointer(emptyText.utf8Start)
        return fabric_sqlite_bind_text(stmt, index, base.assumingMemoryBound(to: CChar.self), Int32(bytes.count))
    }

    /// Rewrites `$1` placeholders to SQLite's `?1` (the shared SQL has no `$` inside string literals).
    static func sqlitePlaceholders(_ sql: String) -> String {
        guard sql.contains("$") else { return sql }
        return sql.replacingOccurrences(of: "$", with: "?")
    }

    // MARK: errors

    private func error(_ rc: Int32, _ what: String) -> FabricError {
        Self.mapError(rc, what, String(cString: sqlite3_errmsg(db)), path: path)
    }

    /// The one place SQLite result codes become `FabricError`s.
    // Extended result codes are C macro expressions, which Swift does not import.
    private static let constraintPrimaryKey: Int32 = SQLITE_CONSTRAINT | (6 << 8)
    private static let constraintUnique: Int32 = SQLITE_CONSTRAINT | (8 << 8)

    static func mapError(_ rc: Int32, _ what: String, _ message: String, path: String) -> FabricError {
        let text = "sqlite: \(what) failed on \(path): \(message) (code \(rc))"
        switch rc & 0xff {
        case SQLITE_CONSTRAINT:
            if rc == constraintUnique || rc == constraintPrimaryKey {
                return FabricError(.alreadyExists, text)
            }
            return FabricError(.invalidArgument, text)
        case SQLITE_BUSY, SQLITE_LOCKED:
            return FabricError(.unavailable, text + "; the database is locked by another connection")
        case SQLITE_FULL, SQLITE_IOERR, SQLITE_CANTOPEN, SQLITE_READONLY, SQLITE_CORRUPT, SQLITE_NOTADB,
            SQLITE_PERM, SQLITE_NOMEM:
            return FabricError(.unavailable, text)
        default:
            return FabricError(.internalError, text)
        }
    }
}

/// A row of a stepping SQLite statement.
struct SQLiteRow: SQLRow {
    let stmt: OpaquePointer

    func int64(_ column: Int32) throws(FabricError) -> Int64 { sqlite3_column_int64(stmt, column) }

    func text(_ column: Int32) -> String {
        guard let p = sqlite3_column_text(stmt, column) else { return "" }
        return String(
            decoding: UnsafeBufferPointer(start: p, count: Int(sqlite3_column_bytes(stmt, column))),
            as: UTF8.self)
    }

    func data(_ column: Int32) -> Data {
        guard let p = sqlite3_column_blob(stmt, column) else { return Data() }
        return Data(bytes: p, count: Int(sqlite3_column_bytes(stmt, column)))
    }

    func isNull(_ column: Int32) -> Bool { sqlite3_column_type(stmt, column) == SQLITE_NULL }
}
