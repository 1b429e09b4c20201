import FabricCore
import Foundation
import Testing

@testable import FabricStore

/// The stores the contract suite runs against: SQLite and the in-memory store always, PostgreSQL when
/// FABRIC_TEST_DATABASE_URL is set (scripts/test starts one with scripts/postgres).
enum StoreKind: String, Sendable, CaseIterable, CustomTestStringConvertible {
    case sqlite, postgres, memory

    static let databaseURL: String? = ProcessInfo.processInfo.environment["FABRIC_TEST_DATABASE_URL"].flatMap {
        $0.isEmpty ? nil : $0
    }

    static var available: [StoreKind] { databaseURL == nil ? [.sqlite, .memory] : [.sqlite, .postgres, .memory] }

    /// The ones with a schema and migrations.
    static var databases: [StoreKind] { available.filter { $0 != .memory } }

    var testDescription: String { rawValue }
}

/// Where one test's store lives: a SQLite file in its own temporary folder, a PostgreSQL schema of its own, or a
/// `MemoryDatabase`. A location can be opened several times (restart, concurrent opens).
struct StoreLocation: Sendable {
    let kind: StoreKind
    /// The SQLite file (in folders that do not exist yet) or the PostgreSQL schema name.
    let name: String
    private let folder: String?
    private var memory: MemoryDatabase? = nil

    static func fresh(_ kind: StoreKind) -> StoreLocation {
        let unique = UUID().uuidString.lowercased().replacingOccurrences(of: "-", with: "")
        switch kind {
        case .sqlite:
            let folder = NSTemporaryDirectory() + "fabric-store-\(unique)"
            return StoreLocation(kind: kind, name: folder + "/nested/state/fabric.db", folder: folder)
        case .postgres:
            return StoreLocation(kind: kind, name: "fabric_t_\(unique.prefix(24))", folder: nil)
        case .memory:
            return StoreLocation(kind: kind, name: "memory-\(unique)", folder: nil, memory: MemoryDatabase())
        }
    }

    func open(poolSize: Int = 2) async throws -> any StateStore {
        switch kind {
        case .sqlite:
            return try await SQLiteStore(path: name)
        case .postgres:
            return try await PostgresStore(url: StoreKind.databaseURL!, schema: name, poolSize: poolSize)
        case .memory:
            return MemoryStore(database: memory!)
        }
    }

    /// Removes the folder or drops the schema.
    func destroy() async {
        switch kind {
        case .sqlite:
            if let folder { try? FileManager.default.removeItem(atPath: folder) }
        case .postgres:
            guard let store = try? await PostgresStore(url: StoreKind.databaseURL!, schema: name, poolSize: 1) else {
                return
            }
            try? await store.executeForTesting("DROP SCHEMA \(name) CASCADE")
            await store.close()
        case .memory:
            break
        }
    }
}

/// Opens a fresh store of `kind`, runs `body`, then closes and removes it.
func withStore(
    _ kind: StoreKind, _ body: (any StateStore, StoreLocation) async throws -> Void
) async throws {
    let location = StoreLocation.fresh(kind)
    let store = try await location.open()
    do {
        try await body(store, location)
    } catch {
        await store.close()
        await location.destroy()
        throw error
    }
    await store.close()
    await location.destroy()
}

/// Expects `body` to throw a `FabricError` with `code` (and `field`, when given).
func expectFabricError(
    _ code: FabricError.Code, field: String? = nil, sourceLocation: SourceLocation = #_sourceLocation,
    _ body: () async throws -> Void
) async {
    do {
        try await body()
        Issue.record("expected a \(code) error, but the call succeeded", sourceLocation: sourceLocation)
    } catch let error as FabricError {
        #expect(error.code == code, "\(error)", sourceLocation: sourceLocation)
        if let field { #expect(error.field == field, "\(error)", sourceLocation: sourceLocation) }
    } catch {
        Issue.record("expected a FabricError, got \(error)", sourceLocation: sourceLocation)
    }
}

// MARK: builders

let baseTime = Timestamp(millisecondsSinceEpoch: 1_800_000_000_000)

/// A small workload; `.rich()` fills every optional field so round trips cover the whole document.
func makeWorkload(
    _ id: String, phase: Phase = .pending, labels: [String: String] = [:], version: Int = 1, minute: Int64 = 0
) -> Workload {
    let spec = WorkloadSpec(name: "job-\(id)", command: ["/bin/true"], labels: labels)
    var w = Workload(
        id: id, spec: spec, status: WorkloadStatus(phase: phase, reason: "Created"),
        createdAt: baseTime.adding(.seconds(minute * 60)), version: version)
    w.updatedAt = w.createdAt
    return w
}

extension Workload {
    /// This workload with every optional field set.
    func rich() -> Workload {
        var w = self
        w.spec.image = "registry.example/team/train:1.4"
        w.spec.command = ["python", "train.py", "--epochs", "3", "--note", "quote\" back\\slash ünï ☃"]
        w.spec.env = ["A": "1", "EMPTY": "", "PATHS": "/a:/b"]
        w.spec.workingDir = "/work"
        w.spec.resources = Resources(cpuMillis: 8000, memoryBytes: 64 << 30, gpu: GPUSpec(count: 2, model: "H100"))
        w.spec.placement = PlacementConstraints(
            providers: ["aws", "runpod"], regions: ["us-east-1"], spot: .required, maxPricePerHour: 12.5)
        w.spec.restartPolicy = .onFailure
        w.spec.labels = ["team": "ml", "tier": "gold", "empty": ""]
        w.status.message = "placed on the cheapest offer\u{0}with a NUL"
        w.status.node = "node-7"
        w.status.placement = Placement(
            provider: "aws", region: "us-east-1", machineType: "p5.48xlarge", spot: true, pricePerHour: 2.99,
            node: "node-7")
        w.status.exitCode = 137
        w.status.signal = 9
        w.status.attempts = 3
        w.status.pendingReasons = ["gpu-type-mismatch": 4, "insufficient-memory": 1]
        w.status.startedAt = baseTime.adding(.seconds(5))
        w.status.finishedAt = baseTime.adding(.milliseconds(65_123))
        return w
    }

    /// The next version of this workload in `phase`.
    func advanced(to phase: Phase, reason: String = "Test", labels: [String: String]? = nil) -> Workload {
        var w = self
        w.status.phase = phase
        w.status.reason = reason
        w.version += 1
        w.updatedAt = w.updatedAt.adding(.seconds(1))
        if let labels { w.spec.labels = labels }
        return w
    }
}

func makeEvent(_ w: Workload, from: Phase?, to: Phase, reason: String = "Test", message: String? = nil)
    -> WorkloadEvent
{
    WorkloadEvent(workloadID: w.id, seq: 0, at: w.updatedAt, from: from, to: to, reason: reason, message: message)
}

func makeNode(_ id: String, cpuMillis: Int64 = 4000, state: NodeState = .ready, heartbeatSecond: Int64? = nil)
    -> NodeInfo
{
    NodeInfo(
        id: id, name: "name-\(id)", provider: "aws", region: "us-east-1", machineType: "m7i.xlarge",
        capacity: Resources(cpuMillis: cpuMillis, memoryBytes: 16 << 30), labels: ["zone": "a"],
        runtimes: [.process, .container], pricePerHour: 0.2016, spot: false, state: state, registeredAt: baseTime,
        lastHeartbeat: heartbeatSecond.map { baseTime.adding(.seconds($0)) })
}

/// Walks every page of `filter` and returns the IDs in order, checking that no page is empty but the only one.
func walkAllPages(_ store: any StateStore, _ filter: WorkloadFilter) async throws -> (ids: [String], pages: Int) {
    var filter = filter
    var ids: [String] = []
    var pages = 0
    while true {
        let page = try await store.listWorkloads(filter)
        pages += 1
        #expect(page.items.count <= max(1, min(filter.limit, Limits.listPageSizeMax)))
        if pages > 1 { #expect(!page.items.isEmpty, "a cursor led to an empty page") }
        ids += page.items.map(\.id)
        guard let next = page.nextCursor else { break }
        filter.cursor = next
        if pages > 10_000 {
            Issue.record("pagination does not terminate")
            break
        }
    }
    return (ids, pages)
}
