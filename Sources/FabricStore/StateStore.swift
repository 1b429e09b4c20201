import FabricCore
import Foundation

/// Which workloads a list returns, and from where.
public struct WorkloadFilter: Sendable, Hashable {
    /// Only workloads in this phase.
    public var phase: Phase?
    /// Only workloads carrying all of these labels with these values.
    public var labels: [String: String]
    /// Page size, 1...Limits.listPageSizeMax.
    public var limit: Int
    /// Opaque cursor from a previous page's `nextCursor`.
    public var cursor: String?

    public init(
        phase: Phase? = nil, labels: [String: String] = [:], limit: Int = Limits.listPageSizeDefault,
        cursor: String? = nil
    ) {
        self.phase = phase
        self.labels = labels
        self.limit = limit
        self.cursor = cursor
    }
}

/// One page of workloads, oldest first, and the cursor of the next page (nil on the last page).
public struct WorkloadPage: Sendable, Hashable {
    public var items: [Workload]
    public var nextCursor: String?

    public init(items: [Workload], nextCursor: String?) {
        self.items = items
        self.nextCursor = nextCursor
    }
}

/// Where Fabric keeps its state. SQLiteStore (embedded default) and PostgresStore pass one contract suite.
///
/// Every method is atomic: a workload change and its event are stored together or not at all.
/// Errors are `FabricError`s: `.alreadyExists`, `.notFound`, `.conflict` (stale version), `.unavailable`
/// (database down), `.internalError`.
public protocol StateStore: Sendable {
    /// Stores a new workload (its `version` must be 1) and its first event. `.alreadyExists` on a duplicate ID.
    /// - Returns: the event as stored, with its per-workload sequence number assigned.
    /// `document`, when given, is `FabricJSON.encode(workload)` already made by the caller; the store writes it as is
    /// instead of encoding the workload again.
    /// - Returns: the event as stored, with its per-workload sequence number assigned.
    @discardableResult
    func createWorkload(_ workload: Workload, event: WorkloadEvent, document: Data?) async throws -> WorkloadEvent

    /// Replaces a workload whose stored version is `workload.version - 1` (optimistic concurrency), and appends
    /// `event` if given. `.conflict` when the stored version differs, `.notFound` when absent.
    /// - Returns: the event as stored (sequence assigned), or nil when none was given.
    /// `document` as for `createWorkload`.
    @discardableResult
    func updateWorkload(_ workload: Workload, event: WorkloadEvent?, document: Data?) async throws -> WorkloadEvent?

    /// One workload by ID, or nil.
    func workload(id: String) async throws -> Workload?

    /// A page of workloads matching `filter`, in creation order.
    func listWorkloads(_ filter: WorkloadFilter) async throws -> WorkloadPage

    /// A workload's events with `seq > afterSeq`, in order, at most `limit`.
    func events(workloadID: String, afterSeq: Int64, limit: Int) async throws -> [WorkloadEvent]

    /// Every workload not in a final phase (used to recover after a restart).
    func activeWorkloads() async throws -> [Workload]

    /// Stores or replaces a node record.
    func upsertNode(_ node: NodeInfo) async throws

    /// Every stored node.
    func nodes() async throws -> [NodeInfo]

    /// The schema version after migrations.
    func schemaVersion() async throws -> Int

    /// Closes connections; later calls fail with `.unavailable`.
    func close() async
}

extension StateStore {
    /// Stores a new workload, encoding its document.
    @discardableResult
    public func createWorkload(_ workload: Workload, event: WorkloadEvent) async throws -> WorkloadEvent {
        try await createWorkload(workload, event: event, document: nil)
    }

    /// Replaces a workload, encoding its document.
    @discardableResult
    public func updateWorkload(_ workload: Workload, event: WorkloadEvent?) async throws -> WorkloadEvent? {
        try await updateWorkload(workload, event: event, document: nil)
    }
}
