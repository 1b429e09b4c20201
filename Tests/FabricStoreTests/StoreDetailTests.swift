import FabricCore
import Foundation
import Testing

@testable import FabricStore

/// Pure pieces of the stores: cursors, conninfo quoting, schema names, migrations bookkeeping.
@Suite("Store helpers")
struct StoreHelperTests {
    @Test("cursors round-trip and look opaque", arguments: [Int64(0), 1, 42, 1_000_000, Int64.max])
    func cursorRoundTrip(seq: Int64) throws {
        let cursor = PageCursor.encode(afterSeq: seq)
        #expect(try PageCursor.decode(cursor) == seq)
        #expect(!cursor.contains(String(seq)) || seq < 10)
        #expect(cursor.allSatisfy { $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" })
        #expect(try PageCursor.decode(nil) == 0)
    }

    @Test("conninfo values are quoted, the password never reaches the description")
    func conninfoQuoting() throws {
        let info = PostgresStore.conninfo([
            ("host", "db.example"), ("port", "5433"), ("user", "o'neil"), ("password", #"p\'w d"#),
            ("dbname", "fabric"), ("sslmode", nil),
        ])
        #expect(info == #"host='db.example' port='5433' user='o\'neil' password='p\\\'w d' dbname='fabric'"#)
        let target = try PostgresStore.describe(info, field: "database")
        #expect(target == "o'neil@db.example:5433/fabric")
        #expect(!target.contains("p\\"))
        let fromURL = try PostgresStore.describe("postgresql://u:secret@10.0.0.1:6000/db", field: "url")
        #expect(fromURL == "u@10.0.0.1:6000/db")
        do throws(FabricError) {
            _ = try PostgresStore.describe("postgresql://u:secret@host/db?bogus_secret_option=1", field: "url")
            Issue.record("a broken URL was accepted")
        } catch {
            #expect(error.code == .invalidArgument)
            #expect(error.field == "url")
            #expect(!error.message.contains("secret"))
        }
    }

    @Test("schema names are plain identifiers")
    func schemaNames() {
        for good in ["fabric", "t_1", "_x"] { #expect((try? PostgresStore.checkSchemaName(good)) != nil) }
        for bad in ["", "1abc", "Upper", "a-b", "a;drop", "x\"y", String(repeating: "a", count: 64)] {
            #expect((try? PostgresStore.checkSchemaName(bad)) == nil, "\(bad)")
        }
        #expect(PostgresStore.migrationLockKey(schema: "a") != PostgresStore.migrationLockKey(schema: "b"))
        #expect(PostgresStore.migrationLockKey(schema: "a") == PostgresStore.migrationLockKey(schema: "a"))
    }

    @Test("node documents round-trip, zero allocation included")
    func nodeDocumentRoundTrip() throws {
        var node = makeNode("n-zero", heartbeatSecond: 9)
        node.capacity.gpu = GPUSpec(count: 8, model: "H100")
        node.allocated = Resources(cpuMillis: 0, memoryBytes: 0, gpu: GPUSpec(count: 0, model: "H100"))
        let doc = try FabricJSON.encode(node)
        var expected = node
        expected.allocated.gpu = nil  // Resources does not encode a zero GPU count
        #expect(try FabricJSON.decode(NodeInfo.self, from: doc) == expected)
        #expect(
            try FabricJSON.decode(NodeInfo.self, from: try FabricJSON.encode(makeNode("plain"))) == makeNode("plain"))
    }

    @Test("migrations are ordered and a newer database is refused")
    func migrationOrder() throws {
        let versions = Migrations.all.map(\.version)
        #expect(versions == Array(1...versions.count))
        #expect(try Migrations.pending(after: 0).count == Migrations.all.count)
        #expect(try Migrations.pending(after: Migrations.latest).isEmpty)
        #expect(throws: FabricError.self) { try Migrations.pending(after: Migrations.latest + 1) }
    }
}

/// SQLite-only behaviour.
@Suite("SQLiteStore")
struct SQLiteStoreTests {
    @Test("opening creates parent folders and uses WAL")
    func createsFoldersAndWAL() async throws {
        let location = StoreLocation.fresh(.sqlite)
        let store = try await SQLiteStore(path: location.name, readers: 1)
        #expect(FileManager.default.fileExists(atPath: location.name))
        let w = makeWorkload("wal")
        try await store.createWorkload(w, event: makeEvent(w, from: nil, to: .pending))
        #expect(FileManager.default.fileExists(atPath: location.name + "-wal"))
        await store.close()
        await location.destroy()
    }

    @Test("bad paths and reader counts are refused; a file that is not a database is unavailable")
    func badOpen() async throws {
        await expectFabricError(.invalidArgument, field: "path") { _ = try await SQLiteStore(path: ":memory:") }
        await expectFabricError(.invalidArgument, field: "readers") {
            _ = try await SQLiteStore(path: "/tmp/x.db", readers: 0)
        }
        let location = StoreLocation.fresh(.sqlite)
        let folder = (location.name as NSString).deletingLastPathComponent
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        try Data(repeating: 0x41, count: 8192).write(to: URL(fileURLWithPath: location.name))
        await expectFabricError(.unavailable) { _ = try await SQLiteStore(path: location.name) }
        await location.destroy()
    }
}

/// PostgreSQL-only behaviour (needs FABRIC_TEST_DATABASE_URL).
@Suite("PostgresStore", .enabled(if: StoreKind.databaseURL != nil, "FABRIC_TEST_DATABASE_URL is not set"))
struct PostgresStoreTests {
    @Test("a connection killed by the server is reset and the next call succeeds")
    func reconnectsAfterBackendDies() async throws {
        let location = StoreLocation.fresh(.postgres)
        let store = try #require(try await location.open(poolSize: 1) as? PostgresStore)
        let w = makeWorkload("survivor")
        try await store.createWorkload(w, event: makeEvent(w, from: nil, to: .pending))
        // The only pooled connection terminates itself.
        await expectFabricError(.unavailable) {
            try await store.executeForTesting("SELECT pg_terminate_backend(pg_backend_pid())")
        }
        #expect(try await store.workload(id: "survivor") == w)
        let w2 = w.advanced(to: .scheduled)
        #expect(try await store.updateWorkload(w2, event: makeEvent(w2, from: .pending, to: .scheduled))?.seq == 2)
        // And again, this time followed by a write: writes reset a broken connection before they start.
        await expectFabricError(.unavailable) {
            try await store.executeForTesting("SELECT pg_terminate_backend(pg_backend_pid())")
        }
        let w3 = w2.advanced(to: .starting)
        #expect(try await store.updateWorkload(w3, event: nil) == nil)
        #expect(try await store.workload(id: "survivor") == w3)
        await store.close()
        await location.destroy()
    }

    @Test("an unreachable server is unavailable, with a message that names it but not the password")
    func unreachableServer() async throws {
        do throws(FabricError) {
            _ = try await PostgresStore(
                host: "127.0.0.1", port: 1, user: "fabric", password: "hunter2-secret", database: "nowhere")
            Issue.record("connected to port 1")
        } catch {
            #expect(error.code == .unavailable)
            #expect(error.message.contains("127.0.0.1:1/nowhere"))
            #expect(!error.message.contains("hunter2"))
        }
        await expectFabricError(.invalidArgument, field: "poolSize") {
            _ = try await PostgresStore(url: StoreKind.databaseURL!, poolSize: 0)
        }
        await expectFabricError(.invalidArgument, field: "schema") {
            _ = try await PostgresStore(url: StoreKind.databaseURL!, schema: "Bad-Name")
        }
    }

    @Test("separate parameters connect like the URL does")
    func keywordInit() async throws {
        let url = try #require(URLComponents(string: StoreKind.databaseURL!))
        let location = StoreLocation.fresh(.postgres)
        let store = try await PostgresStore(
            host: url.host ?? "127.0.0.1", port: url.port ?? 5432, user: url.user ?? "postgres",
            password: "unused with trust auth", database: String(url.path.dropFirst()), schema: location.name,
            poolSize: 1)
        #expect(try await store.schemaVersion() == Migrations.latest)
        #expect(store.target.hasSuffix("/\(url.path.dropFirst())"))
        await store.close()
        await location.destroy()
    }
}

/// Throughput numbers, printed, never asserted. Run with FABRIC_STORE_BENCH=1 (FABRIC_STORE_BENCH_N rows).
///
/// Inputs are built before the clock starts. Besides the wall-clock rate it prints the process CPU time per
/// operation (store plus JSON coding, both sides), which shared build machines distort less than wall time.
@Suite("Store throughput", .enabled(if: ProcessInfo.processInfo.environment["FABRIC_STORE_BENCH"] != nil))
struct StoreThroughputTests {
    @Test(arguments: StoreKind.available)
    func throughput(kind: StoreKind) async throws {
        let location = StoreLocation.fresh(kind)
        let store = try await location.open(poolSize: 4)
        let total = Int(ProcessInfo.processInfo.environment["FABRIC_STORE_BENCH_N"] ?? "") ?? 5000
        let concurrency = 16
        let created = (0..<total).map { makeWorkload("b-\($0)", labels: ["team": "t\($0 % 10)"]) }
        let updated = created.map { $0.advanced(to: .scheduled) }

        func measure(_ name: String, _ op: @escaping @Sendable (Int) async throws -> Void) async throws -> String {
            let cpu0 = processCPUSeconds()
            let start = ContinuousClock.now
            try await withThrowingTaskGroup(of: Void.self) { group in
                for t in 0..<concurrency {
                    group.addTask { for i in stride(from: t, to: total, by: concurrency) { try await op(i) } }
                }
                try await group.waitForAll()
            }
            let wall = ContinuousClock.now - start
            let seconds = Double(wall.components.seconds) + Double(wall.components.attoseconds) / 1e18
            let cpuMicros = (processCPUSeconds() - cpu0) / Double(total) * 1e6
            return "\(name)/s=\(Int(Double(total) / seconds)) \(name)-cpu-us=\(Int(cpuMicros))"
        }
        let creates = try await measure("create") { i in
            try await store.createWorkload(created[i], event: makeEvent(created[i], from: nil, to: .pending))
        }
        let reads = try await measure("read") { i in _ = try await store.workload(id: created[i].id) }
        let updates = try await measure("update") { i in
            try await store.updateWorkload(updated[i], event: makeEvent(updated[i], from: .pending, to: .scheduled))
        }
        let walkStart = ContinuousClock.now
        let walked = try await walkAllPages(store, WorkloadFilter(limit: 100)).ids.count
        print(
            "bench store=\(kind) n=\(total) concurrency=\(concurrency) \(creates) \(reads) \(updates)"
                + " list-walk-100=\(ContinuousClock.now - walkStart) rows=\(walked)")
        await store.close()
        await location.destroy()
    }
}

/// CPU time this process has used, in seconds.
func processCPUSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}
