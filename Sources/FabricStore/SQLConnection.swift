import FabricCore
import Foundation

/// A value bound to a `$n` placeholder.
enum SQLParam: Sendable {
    case int(Int64)
    case text(String)
    /// A JSON document (UTF-8 bytes).
    case json(Data)
}

/// One result row, valid only inside the row callback.
protocol SQLRow {
    func int64(_ column: Int32) throws(FabricError) -> Int64
    func text(_ column: Int32) -> String
    func data(_ column: Int32) -> Data
    func isNull(_ column: Int32) -> Bool
}

/// The SQL dialects the shared store logic knows.
enum SQLDialect: Sendable {
    case sqlite, postgres
}

/// What the shared store logic needs from a connection. SQL is written once with PostgreSQL-style `$1`
/// placeholders; the SQLite connection rewrites them to `?1` when it prepares a statement.
protocol SQLConnection: PooledConnection {
    associatedtype Row: SQLRow

    /// Which SQL variant to send where the dialects differ.
    static var dialect: SQLDialect { get }

    /// Runs a statement and calls `row` for each result row.
    func query(_ sql: String, _ params: [SQLParam], row: (Row) throws(FabricError) -> Void) throws(FabricError)

    /// Runs a statement that returns no rows.
    /// - Returns: the number of rows it changed.
    @discardableResult
    func execute(_ sql: String, _ params: [SQLParam]) throws(FabricError) -> Int

    /// Runs `body` in one write transaction: committed when it returns, rolled back when it throws.
    func transaction<T>(_ body: () throws(FabricError) -> T) throws(FabricError) -> T
}

extension SQLConnection {
    /// The first row mapped by `map`, or nil when there is none.
    func queryOne<T>(_ sql: String, _ params: [SQLParam], _ map: (Row) throws(FabricError) -> T) throws(FabricError)
        -> T?
    {
        var result: T?
        try query(sql, params) { (r: Row) throws(FabricError) in
            if result == nil { result = try map(r) }
        }
        return result
    }
}
