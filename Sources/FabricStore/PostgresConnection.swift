import CPostgres
import FabricCore
import Foundation

/// One libpq connection with its prepared statements. Used only on its pool's thread.
///
/// All parameters travel in text format; SQL texts are prepared once per connection (up to
/// `StoreLimits.statementCacheMax`) and the cache is dropped when the connection is reset.
final class PostgresConnection: SQLConnection {
    static var dialect: SQLDialect { .postgres }

    private let conn: OpaquePointer
    /// `host:port/database` for messages; never the password.
    private let target: String
    private var prepared: [String: String] = [:]
    private var nextStatementID = 0

    private static let diagSQLState = Int32(UInt8(ascii: "C"))
    private static let diagMessagePrimary = Int32(UInt8(ascii: "M"))

    private init(conn: OpaquePointer, target: String) {
        self.conn = conn
        self.target = target
    }

    /// Connects with libpq keyword/value parameters (`dbname` may hold a URL or conninfo string, which libpq
    /// expands; later keywords override what it sets).
    static func connect(parameters: [(String, String)], target: String) throws(FabricError) -> PostgresConnection {
        let keywords = parameters.map { strdup($0.0) } + [nil]
        let values = parameters.map { strdup($0.1) } + [nil]
        defer {
            keywords.forEach { free($0) }
            values.forEach { free($0) }
        }
        let handle = keywords.map { UnsafePointer($0) }.withUnsafeBufferPointer { k in
            values.map { UnsafePointer($0) }.withUnsafeBufferPointer { v in
                PQconnectdbParams(k.baseAddress, v.baseAddress, 1)
            }
        }
        guard let handle else { throw FabricError(.unavailable, "postgres: out of memory connecting to \(target)") }
        guard PQstatus(handle) == CONNECTION_OK else {
            let message = Self.clean(String(cString: PQerrorMessage(handle)))
            PQfinish(handle)
            throw FabricError(.unavailable, "postgres: cannot connect to \(target): \(message)")
        }
        // Server notices ("relation already exists, skipping") would go to stderr; the store has nothing to say
        // about them.
        PQsetNoticeProcessor(handle, { _, _ in }, nil)
        return PostgresConnection(conn: handle, target: target)
    }

    /// How many times `ensureConnected` resets a broken connection before it gives up.
    static let resetAttempts = 3

    /// Whether the connection is unusable (the server went away or the socket broke).
    var isBroken: Bool { PQstatus(conn) != CONNECTION_OK }

    /// Resets a broken connection, up to `resetAttempts` times 50 ms apart (a reset can fail on its own, for
    /// example while the server still tears down the old backend).
    /// - Throws: `.unavailable` when the server still cannot be reached.
    func ensureConnected() throws(FabricError) {
        guard isBroken else { return }
        prepared = [:]
        for attempt in 1...Self.resetAttempts {
            PQreset(conn)
            if !isBroken || attempt == Self.resetAttempts { break }
            usleep(50_000)
        }
        guard !isBroken else {
            let message = Self.clean(String(cString: PQerrorMessage(conn)))
            throw FabricError(
                .unavailable, "postgres: the connection to \(target) broke and reconnecting failed: \(message)")
        }
        PQsetNoticeProcessor(conn, { _, _ in }, nil)
    }

    /// Applies pending migrations while holding an advisory lock, so two weavers starting together do not race.
    /// - Parameters:
    ///   - schema: created first when given (the connection's search_path already points at it).
    ///   - lockKey: the advisory lock, derived from the schema.
    /// - Returns: the schema version afterwards.
    func migrate(schema: String?, lockKey: Int64) throws(FabricError) -> Int {
        try execute("SELECT pg_advisory_lock($1)", [.int(lockKey)])
        defer { _ = try? execute("SELECT pg_advisory_unlock($1)", [.int(lockKey)]) }
        if let schema { try exec("CREATE SCHEMA IF NOT EXISTS \"\(schema)\"") }
        try exec(Migrations.bootstrapPostgres)
        for migration in try Migrations.pending(after: try StoreQueries.schemaVersion(self)) {
            try transaction { () throws(FabricError) in
                for statement in migration.postgres { try exec(statement) }
                try execute("INSERT INTO schema_migrations (version) VALUES ($1)", [.int(Int64(migration.version))])
            }
        }
        return try StoreQueries.schemaVersion(self)
    }

    func query(_ sql: String, _ params: [SQLParam], row: (PostgresRow) throws(FabricError) -> Void)
        throws(FabricError)
    {
        let res = try run(sql, params)
        defer { PQclear(res) }
        for i in 0..<PQntuples(res) { try row(PostgresRow(res: res, row: i)) }
    }

    @discardableResult
    func execute(_ sql: String, _ params: [SQLParam]) throws(FabricError) -> Int {
        let res = try run(sql, params)
        defer { PQclear(res) }
        return Int(String(cString: PQcmdTuples(res))) ?? 0
    }

    func transaction<T>(_ body: () throws(FabricError) -> T) throws(FabricError) -> T {
        try execute("BEGIN", [])
        do {
            let result = try body()
            try execute("COMMIT", [])
            return result
        } catch {
            if !isBroken && PQtransactionStatus(conn) != PQTRANS_IDLE { _ = try? execute("ROLLBACK", []) }
            throw error
        }
    }

    /// Runs SQL without parameters through the simple protocol (DDL).
    func exec(_ sql: String) throws(FabricError) {
        guard let res = PQexec(conn, sql) else { throw failure(nil, "exec") }
        defer { PQclear(res) }
        let status = PQresultStatus(res)
        guard status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK else { throw failure(res, "exec") }
    }

    func close() {
        PQfinish(conn)
    }

    // MARK: statements

    private func run(_ sql: String, _ params: [SQLParam]) throws(FabricError) -> OpaquePointer {
        let name = try statementName(sql)
        let res: OpaquePointer? = try withParameters(params) { values in
            if let name {
                PQexecPrepared(conn, name, Int32(params.count), values, nil, nil, 0)
            } else {
                PQexecParams(conn, sql, Int32(params.count), nil, values, nil, nil, 0)
            }
        }
        guard let res else { throw failure(nil, "query") }
        let status = PQresultStatus(res)
        guard status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK else {
            let error = failure(res, "query")
            PQclear(res)
            throw error
        }
        return res
    }

    /// The prepared statement for `sql`, preparing it on first use; nil once the cache is full.
    private func statementName(_ sql: String) throws(FabricError) -> String? {
        if let name = prepared[sql] { return name }
        guard prepared.count < StoreLimits.statementCacheMax else { return nil }
        nextStatementID += 1
        let name = "fabric_\(nextStatementID)"
        guard let res = PQprepare(conn, name, sql, 0, nil) else { throw failure(nil, "prepare") }
        defer { PQclear(res) }
        guard PQresultStatus(res) == PGRES_COMMAND_OK else { throw failure(res, "prepare") }
        prepared[sql] = name
        return name
    }

    /// Calls `body` with NUL-terminated text values for the parameters.
    private func withParameters<R>(
        _ params: [SQLParam], _ body: (UnsafePointer<UnsafePointer<CChar>?>?) -> R
    ) throws(FabricError) -> R {
        if params.isEmpty { return body(nil) }
        var buffer: [CChar] = []
        var offsets: [Int] = []
        offsets.reserveCapacity(params.count)
        for param in params {
            offsets.append(buffer.count)
            switch param {
            case .int(let v):
                buffer.append(contentsOf: String(v).utf8.map { CChar(bitPattern: $0) })
            case .text(let s):
                guard !s.utf8.contains(0) else {
                    throw FabricError(.invalidArgument, "postgres: text values cannot contain NUL bytes")
                }
                buffer.append(contentsOf: s.utf8.map { CChar(bitPattern: $0) })
            case .json(let d):
                buffer.append(contentsOf: d.map { CChar(bitPattern: $0) })
            }
            buffer.append(0)
        }
        return buffer.withUnsafeBufferPointer { chars in
            let pointers: [UnsafePointer<CChar>?] = offsets.map { chars.baseAddress! + $0 }
            return pointers.withUnsafeBufferPointer { body($0.baseAddress) }
        }
    }

    // MARK: errors

    /// The one place libpq failures become `FabricError`s: SQLSTATE classes map to codes; a broken connection is
    /// `.unavailable`.
    private func failure(_ res: OpaquePointer?, _ what: String) -> FabricError {
        let sqlstate = res.flatMap { PQresultErrorField($0, Self.diagSQLState) }.map { String(cString: $0) } ?? ""
        let primary = res.flatMap { PQresultErrorField($0, Self.diagMessagePrimary) }.map { String(cString: $0) }
        let message = primary ?? Self.clean(String(cString: PQerrorMessage(conn)))
        let text =
            "postgres: \(what) failed on \(target): \(message)" + (sqlstate.isEmpty ? "" : " (SQLSTATE \(sqlstate))")
        if isBroken { return FabricError(.unavailable, text + "; the connection is lost and will be reset") }
        switch sqlstate {
        case "23505": return FabricError(.alreadyExists, text)
        case "40001", "40P01": return FabricError(.unavailable, text + "; try again")
        case "57014": return FabricError(.unavailable, text)  // query_canceled (statement_timeout)
        default: break
        }
        switch sqlstate.prefix(2) {
        case "08", "53", "57", "58": return FabricError(.unavailable, text)
        case "22", "23": return FabricError(.invalidArgument, text)
        default: return FabricError(.internalError, text)
        }
    }

    /// libpq messages end with a newline and may span lines; keep one line.
    static func clean(_ message: String) -> String {
        message.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }
            .joined(separator: " ")
    }
}

/// A row of a libpq result (text format).
struct PostgresRow: SQLRow {
    let res: OpaquePointer
    let row: Int32

    func int64(_ column: Int32) throws(FabricError) -> Int64 {
        guard let v = Int64(String(cString: PQgetvalue(res, row, column))) else {
            throw FabricError(.internalError, "postgres: column \(column) is not an integer")
        }
        return v
    }

    func text(_ column: Int32) -> String { String(cString: PQgetvalue(res, row, column)) }

    func data(_ column: Int32) -> Data {
        Data(bytes: PQgetvalue(res, row, column), count: Int(PQgetlength(res, row, column)))
    }

    func isNull(_ column: Int32) -> Bool { PQgetisnull(res, row, column) == 1 }
}
