import FabricCore
import Foundation

/// Limits the stores enforce on their inputs and resources, beyond the API's `Limits`.
public enum StoreLimits {
    /// Label pairs a list filter may carry (the same as a workload may carry).
    public static let filterLabelsMax = Limits.labelsMax
    /// Events one `events` call returns at most.
    public static let eventsPageSizeMax = Limits.listPageSizeMax
    /// How long SQLite waits for a lock held by another connection or process.
    public static let sqliteBusyTimeout: Duration = .seconds(5)
    /// Prepared statements one connection keeps; beyond it, new SQL texts run unprepared (PostgreSQL) or are
    /// finalized after use (SQLite).
    public static let statementCacheMax = 256
    /// Default PostgreSQL pool size.
    public static let postgresPoolSizeDefault = 4
    /// Upper bound on the PostgreSQL pool size.
    public static let postgresPoolSizeMax = 64
    /// Default number of SQLite read-only connections next to the one writer.
    public static let sqliteReadersDefault = 2
    /// Upper bound on SQLite read-only connections.
    public static let sqliteReadersMax = 16
    /// How long a PostgreSQL connection attempt may take.
    public static let postgresConnectTimeout: Duration = .seconds(10)
}

/// The opaque list cursor: base64url (no padding) of `c1.<seq>`, where seq is the creation sequence of the last
/// workload on the previous page.
enum PageCursor {
    private static let prefix = "c1."
    /// Longest cursor text accepted before decoding (a 19-digit seq plus prefix, base64url-encoded, is 30).
    private static let encodedLengthMax = 64

    /// The cursor that continues after the workload with creation sequence `seq`.
    static func encode(afterSeq seq: Int64) -> String {
        Data((prefix + String(seq)).utf8).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-")
            .replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    /// The sequence a cursor continues after; nil cursor means from the start (0).
    /// - Throws: `.invalidArgument` (field `cursor`) for anything `encode` did not produce.
    static func decode(_ cursor: String?) throws(FabricError) -> Int64 {
        guard let cursor else { return 0 }
        let invalid = FabricError.invalid("cursor", "the cursor is not one this server returned")
        guard !cursor.isEmpty, cursor.utf8.count <= encodedLengthMax,
            cursor.utf8.allSatisfy({ isBase64URL($0) })
        else { throw invalid }
        var base64 = cursor.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        if base64.utf8.count % 4 == 1 { throw invalid }
        while base64.utf8.count % 4 != 0 { base64 += "=" }
        guard let data = Data(base64Encoded: base64), let text = String(data: data, encoding: .utf8),
            text.hasPrefix(prefix)
        else { throw invalid }
        let digits = text.dropFirst(prefix.count)
        guard !digits.isEmpty, digits.utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }),
            let seq = Int64(digits), seq >= 0
        else { throw invalid }
        return seq
    }

    private static func isBase64URL(_ c: UInt8) -> Bool {
        (c >= UInt8(ascii: "A") && c <= UInt8(ascii: "Z")) || (c >= UInt8(ascii: "a") && c <= UInt8(ascii: "z"))
            || (c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9")) || c == UInt8(ascii: "-") || c == UInt8(ascii: "_")
    }
}

/// A list request after validation: what both stores turn into SQL.
struct ListQuery: Sendable {
    var phase: Phase?
    /// Sorted by key, so equal filters produce equal SQL texts (and share a prepared statement).
    var labels: [(key: String, value: String)]
    var afterSeq: Int64
    /// The page size; stores fetch one more row to learn whether a next page exists.
    var limit: Int

    init(_ filter: WorkloadFilter) throws(FabricError) {
        guard filter.labels.count <= StoreLimits.filterLabelsMax else {
            throw .invalid(
                "labels", "a filter may name at most \(StoreLimits.filterLabelsMax) labels, got \(filter.labels.count)")
        }
        phase = filter.phase
        labels = filter.labels.sorted { $0.key < $1.key }.map { (key: $0.key, value: $0.value) }
        afterSeq = try PageCursor.decode(filter.cursor)
        limit = min(max(filter.limit, 1), Limits.listPageSizeMax)
    }

    /// Turns up to `limit + 1` fetched rows (seq, document) into a page.
    func page(from rows: [(seq: Int64, doc: Data)]) throws(FabricError) -> WorkloadPage {
        let hasMore = rows.count > limit
        let kept = hasMore ? rows.prefix(limit) : rows[...]
        var items: [Workload] = []
        items.reserveCapacity(kept.count)
        for row in kept { items.append(try FabricJSON.decode(Workload.self, from: row.doc)) }
        let next = hasMore ? kept.last.map { PageCursor.encode(afterSeq: $0.seq) } : nil
        return WorkloadPage(items: items, nextCursor: next)
    }
}

/// A workload write after validation and encoding, ready for SQL (encoding happens on the caller's task, not on a
/// database thread).
struct WorkloadRow: Sendable {
    var id: String
    var name: String
    var phase: String
    var version: Int64
    var doc: Data
    var createdAtMs: Int64
    var updatedAtMs: Int64
    var labels: [(key: String, value: String)]
    var labelMap: [String: String]
    /// The labels as one JSON object, for PostgreSQL's `json_each_text`.
    var labelsDoc: Data

    /// - Parameter document: `FabricJSON.encode(w)` when the caller has it already.
    init(_ w: Workload, document: Data? = nil) throws(FabricError) {
        id = w.id
        name = w.name
        phase = w.phase.rawValue
        version = Int64(w.version)
        if let document { doc = document } else { doc = try FabricJSON.encode(w) }
        createdAtMs = w.createdAt.millisecondsSinceEpoch
        updatedAtMs = w.updatedAt.millisecondsSinceEpoch
        labels = w.spec.labels.sorted { $0.key < $1.key }.map { (key: $0.key, value: $0.value) }
        labelMap = w.spec.labels
        labelsDoc = w.spec.labels.isEmpty ? Data("{}".utf8) : try FabricJSON.encode(w.spec.labels)
    }
}

/// An event to append; the store assigns `seq` inside the write transaction.
struct EventRow: Sendable {
    var event: WorkloadEvent

    init(_ event: WorkloadEvent, workloadID: String) throws(FabricError) {
        guard event.workloadID == workloadID else {
            throw .invalid(
                "event.workloadID", "the event belongs to \(event.workloadID), not to workload \(workloadID)")
        }
        self.event = event
    }

    /// The event with its assigned sequence number, and its stored document.
    func stored(seq: Int64) throws(FabricError) -> (event: WorkloadEvent, doc: Data) {
        var e = event
        e.seq = seq
        return (e, try FabricJSON.encode(e))
    }
}

/// Checks shared by both stores before a create.
enum StoreValidation {
    static func checkCreate(_ w: Workload) throws(FabricError) {
        guard !w.id.isEmpty else { throw .invalid("id", "a workload needs an id") }
        guard w.version == 1 else {
            throw .invalid("version", "a new workload has version 1, got \(w.version)")
        }
    }

    /// The phases `activeWorkloads` skips.
    static let finalPhases: [String] = Phase.allCases.filter(\.isFinal).map(\.rawValue)

    /// `events` page size clamped to 1...StoreLimits.eventsPageSizeMax.
    static func clampEventLimit(_ limit: Int) -> Int { min(max(limit, 1), StoreLimits.eventsPageSizeMax) }
}
