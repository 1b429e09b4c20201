import FabricCore
import Foundation
import Testing

@testable import FabricStore

/// The StateStore contract: every test runs against SQLite and, when FABRIC_TEST_DATABASE_URL is set, PostgreSQL.
@Suite("StateStore contract")
struct StoreContractTests {
    @Test("create then get returns the same workload and event seq 1", arguments: StoreKind.available)
    func createGetRoundTrip(kind: StoreKind) async throws {
        try await withStore(kind) { store, _ in
            let w = makeWorkload("w-1").rich()
            let stored = try await store.createWorkload(w, event: makeEvent(w, from: nil, to: .pending))
            #expect(stored.seq == 1)
            #expect(stored.workloadID == "w-1")
            #expect(stored.to == .pending)
            #expect(stored.from == nil)
            let got = try await store.workload(id: "w-1")
            #expect(got == w)
            #expect(got?.status.message == "placed on the cheapest offer\u{0}with a NUL")
            #expect(try await store.workload(id: "missing") == nil)
            let events = try await store.events(workloadID: "w-1", afterSeq: 0, limit: 10)
            #expect(events == [stored])
            #expect(try await store.schemaVersion() == Migrations.latest)
        }
    }

    @Test("a duplicate ID is alreadyExists and changes nothing", arguments: StoreKind.available)
    func duplicateID(kind: StoreKind) async throws {
        try await withStore(kind) { store, _ in
            let w = makeWorkload("dup", labels: ["a": "1"])
            try await store.createWorkload(w, event: makeEvent(w, from: nil, to: .pending))
            var other = makeWorkload("dup", phase: .running, labels: ["b": "2"])
            other.spec.name = "other"
            await expectFabricError(.alreadyExists, field: "id") {
                try await store.createWorkload(other, event: makeEvent(other, from: nil, to: .running))
            }
            #expect(try await store.workload(id: "dup") == w)
            #expect(try await store.events(workloadID: "dup", afterSeq: 0, limit: 10).count == 1)
            #expect(try await store.listWorkloads(WorkloadFilter(labels: ["b": "2"])).items.isEmpty)
            #expect(try await store.listWorkloads(WorkloadFilter(labels: ["a": "1"])).items.map(\.id) == ["dup"])
        }
    }

    @Test("create needs version 1 and an event of the same workload", arguments: StoreKind.available)
    func createValidation(kind: StoreKind) async throws {
        try await withStore(kind) { (store, _) async throws in
            let w = makeWorkload("v2", version: 2)
            await expectFabricError(.invalidArgument, field: "version") {
                try await store.createWorkload(w, event: makeEvent(w, from: nil, to: .pending))
            }
            let ok = makeWorkload("v1")
            let foreign = WorkloadEvent(
                workloadID: "someone-else", seq: 0, at: ok.createdAt, from: nil, to: .pending, reason: "Test")
            await expectFabricError(.invalidArgument, field: "event.workloadID") {
                try await store.createWorkload(ok, event: foreign)
            }
            #expect(try await store.workload(id: "v2") == nil)
            #expect(try await store.workload(id: "v1") == nil)
        }
    }

    @Test("updates need the stored version to be one less", arguments: StoreKind.available)
    func optimisticConflict(kind: StoreKind) async throws {
        try await withStore(kind) { store, _ in
            let w1 = makeWorkload("occ")
            try await store.createWorkload(w1, event: makeEvent(w1, from: nil, to: .pending))
            let w2 = w1.advanced(to: .scheduled)
            let e2 = try await store.updateWorkload(w2, event: makeEvent(w2, from: .pending, to: .scheduled))
            #expect(e2?.seq == 2)
            #expect(try await store.workload(id: "occ") == w2)

            // Someone else also read version 1 and now writes version 2: stale.
            let stale = w1.advanced(to: .failed)
            await expectFabricError(.conflict) { try await store.updateWorkload(stale, event: nil) }
            // Skipping a version is a conflict too, and so is re-sending version 1.
            var skip = w2.advanced(to: .running)
            skip.version = 5
            await expectFabricError(.conflict) { try await store.updateWorkload(skip, event: nil) }
            await expectFabricError(.conflict) { try await store.updateWorkload(w1, event: nil) }
            await expectFabricError(.notFound) {
                try await store.updateWorkload(makeWorkload("ghost", version: 2), event: nil)
            }
            #expect(try await store.workload(id: "occ") == w2)
            #expect(try await store.events(workloadID: "occ", afterSeq: 0, limit: 10).map(\.seq) == [1, 2])

            // An update without an event changes the document but appends nothing.
            let w3 = w2.advanced(to: .starting)
            #expect(try await store.updateWorkload(w3, event: nil) == nil)
            #expect(try await store.workload(id: "occ")?.phase == .starting)
            #expect(try await store.workload(id: "occ")?.version == 3)
            #expect(try await store.events(workloadID: "occ", afterSeq: 0, limit: 10).count == 2)
        }
    }

    @Test("of many racing updates to one version exactly one wins", arguments: StoreKind.available)
    func racingUpdates(kind: StoreKind) async throws {
        try await withStore(kind) { store, _ in
            let w1 = makeWorkload("race")
            try await store.createWorkload(w1, event: makeEvent(w1, from: nil, to: .pending))
            let outcomes = await withTaskGroup(of: Bool.self) { group in
                for i in 0..<16 {
                    group.addTask {
                        let w2 = w1.advanced(to: .scheduled, reason: "racer-\(i)")
                        do {
                            try await store.updateWorkload(
                                w2, event: makeEvent(w2, from: .pending, to: .scheduled, reason: "racer-\(i)"))
                            return true
                        } catch let e as FabricError {
                            return e.code == .conflict ? false : true
                        } catch { return true }
                    }
                }
                return await group.reduce(into: [Bool]()) { $0.append($1) }
            }
            #expect(outcomes.filter { $0 }.count == 1)
            let stored = try #require(try await store.workload(id: "race"))
            #expect(stored.version == 2)
            let events = try await store.events(workloadID: "race", afterSeq: 0, limit: 10)
            #expect(events.map(\.seq) == [1, 2])
            #expect(events.last?.reason == stored.status.reason)
        }
    }

    @Test("event seqs are assigned per workload, in order, and paged by afterSeq", arguments: StoreKind.available)
    func eventSequences(kind: StoreKind) async throws {
        try await withStore(kind) { store, _ in
            var a = makeWorkload("ev-a")
            let b = makeWorkload("ev-b")
            try await store.createWorkload(a, event: makeEvent(a, from: nil, to: .pending))
            try await store.createWorkload(b, event: makeEvent(b, from: nil, to: .pending))
            let path: [Phase] = [.scheduled, .provisioning, .starting, .running, .succeeded]
            var previous = Phase.pending
            var returned: [WorkloadEvent] = []
            for (i, phase) in path.enumerated() {
                a = a.advanced(to: phase, reason: "step-\(i)")
                let e = try await store.updateWorkload(
                    a, event: makeEvent(a, from: previous, to: phase, reason: "step-\(i)"))
                returned.append(try #require(e))
                previous = phase
            }
            #expect(returned.map(\.seq) == [2, 3, 4, 5, 6])
            let all = try await store.events(workloadID: "ev-a", afterSeq: 0, limit: 100)
            #expect(all.map(\.seq) == [1, 2, 3, 4, 5, 6])
            #expect(all.map(\.to) == [.pending] + path)
            #expect(Array(all.dropFirst()) == returned)
            #expect(try await store.events(workloadID: "ev-a", afterSeq: 3, limit: 2).map(\.seq) == [4, 5])
            #expect(try await store.events(workloadID: "ev-a", afterSeq: 6, limit: 10).isEmpty)
            #expect(try await store.events(workloadID: "ev-a", afterSeq: 0, limit: 0).map(\.seq) == [1])
            #expect(try await store.events(workloadID: "ev-b", afterSeq: 0, limit: 10).map(\.seq) == [1])
            #expect(try await store.events(workloadID: "nobody", afterSeq: 0, limit: 10).isEmpty)
        }
    }

    @Test("list filters by phase, by all given labels, and by both", arguments: StoreKind.available)
    func listFilters(kind: StoreKind) async throws {
        try await withStore(kind) { store, _ in
            let rows: [(String, Phase, [String: String])] = [
                ("l1", .pending, ["team": "ml", "tier": "gold"]),
                ("l2", .running, ["team": "ml", "tier": "silver"]),
                ("l3", .running, ["team": "web", "tier": "gold"]),
                ("l4", .pending, ["team": "ml"]),
                ("l5", .running, ["team": "ml", "tier": "gold"]),
                ("l6", .failed, [:]),
            ]
            for (i, (id, phase, labels)) in rows.enumerated() {
                let w = makeWorkload(id, phase: phase, labels: labels, minute: Int64(i))
                try await store.createWorkload(w, event: makeEvent(w, from: nil, to: phase))
            }
            func ids(_ f: WorkloadFilter) async throws -> [String] { try await store.listWorkloads(f).items.map(\.id) }
            #expect(try await ids(WorkloadFilter()) == ["l1", "l2", "l3", "l4", "l5", "l6"])
            #expect(try await ids(WorkloadFilter(phase: .running)) == ["l2", "l3", "l5"])
            #expect(try await ids(WorkloadFilter(phase: .succeeded)) == [])
            #expect(try await ids(WorkloadFilter(labels: ["team": "ml"])) == ["l1", "l2", "l4", "l5"])
            #expect(try await ids(WorkloadFilter(labels: ["team": "ml", "tier": "gold"])) == ["l1", "l5"])
            #expect(try await ids(WorkloadFilter(labels: ["tier": "bronze"])) == [])
            #expect(try await ids(WorkloadFilter(labels: ["nokey": "x"])) == [])
            #expect(try await ids(WorkloadFilter(phase: .running, labels: ["tier": "gold"])) == ["l3", "l5"])
            #expect(try await ids(WorkloadFilter(phase: .pending, labels: ["team": "ml", "tier": "gold"])) == ["l1"])

            // Label changes on update move the workload in and out of filters; phase changes too.
            let l1 = try #require(try await store.workload(id: "l1"))
            let moved = l1.advanced(to: .scheduled, labels: ["team": "web"])
            try await store.updateWorkload(moved, event: nil)
            #expect(try await ids(WorkloadFilter(labels: ["team": "ml", "tier": "gold"])) == ["l5"])
            #expect(try await ids(WorkloadFilter(labels: ["team": "web"])) == ["l1", "l3"])
            #expect(try await ids(WorkloadFilter(phase: .pending)) == ["l4"])
            #expect(try await ids(WorkloadFilter(phase: .scheduled)) == ["l1"])
        }
    }

    @Test("walking every page returns every row once, in creation order", arguments: StoreKind.available)
    func paginationWalk(kind: StoreKind) async throws {
        try await withStore(kind) { store, _ in
            var expected: [String] = []
            var expectedRunning: [String] = []
            for i in 0..<137 {
                let id = String(format: "p-%03d", 136 - i)  // IDs sort opposite to creation order
                let phase: Phase = i % 3 == 0 ? .running : .pending
                let w = makeWorkload(id, phase: phase, labels: ["parity": i % 2 == 0 ? "even" : "odd"])
                try await store.createWorkload(w, event: makeEvent(w, from: nil, to: phase))
                expected.append(id)
                if phase == .running { expectedRunning.append(id) }
            }
            for limit in [1, 7, 10, 137, 500] {
                let walk = try await walkAllPages(store, WorkloadFilter(limit: limit))
                #expect(walk.ids == expected, "limit \(limit)")
                #expect(walk.pages == (137 + limit - 1) / limit, "limit \(limit)")
            }
            let running = try await walkAllPages(store, WorkloadFilter(phase: .running, limit: 6))
            #expect(running.ids == expectedRunning)
            let even = try await walkAllPages(store, WorkloadFilter(labels: ["parity": "even"], limit: 9))
            #expect(even.ids == expected.enumerated().filter { $0.offset % 2 == 0 }.map(\.element))

            // An exact multiple of the page size ends without a cursor to an empty page.
            let first = try await store.listWorkloads(WorkloadFilter(phase: .running, limit: 23))
            #expect(expectedRunning.count == 46)
            #expect(first.items.count == 23)
            let cursor = try #require(first.nextCursor)
            let second = try await store.listWorkloads(WorkloadFilter(phase: .running, limit: 23, cursor: cursor))
            #expect(second.items.count == 23)
            #expect(second.nextCursor == nil)
        }
    }

    @Test("a cursor the store did not make is invalidArgument on field cursor", arguments: StoreKind.available)
    func badCursor(kind: StoreKind) async throws {
        try await withStore(kind) { store, _ in
            let w = makeWorkload("c")
            try await store.createWorkload(w, event: makeEvent(w, from: nil, to: .pending))
            let garbage = [
                "", "!!!", "not a cursor", "MTIz", "YzEu", "YzEuLTE", "YzEueHl6", String(repeating: "A", count: 500),
                "YzEuMTIzNDU2Nzg5MDEyMzQ1Njc4OTAxMjM0NQ", "Yz%Eu",
            ]
            for cursor in garbage {
                await expectFabricError(.invalidArgument, field: "cursor") {
                    _ = try await store.listWorkloads(WorkloadFilter(cursor: cursor))
                }
            }
            // A well-formed cursor past the end is simply an empty last page.
            let past = try await store.listWorkloads(WorkloadFilter(cursor: PageCursor.encode(afterSeq: 1_000_000)))
            #expect(past.items.isEmpty)
            #expect(past.nextCursor == nil)
        }
    }

    @Test("limit is clamped to 1...listPageSizeMax", arguments: StoreKind.available)
    func limitClamping(kind: StoreKind) async throws {
        try await withStore(kind) { store, _ in
            let count = Limits.listPageSizeMax + 3
            try await createMany(store, count: count, prefix: "clamp")
            for tooSmall in [0, -5, Int.min] {
                let page = try await store.listWorkloads(WorkloadFilter(limit: tooSmall))
                #expect(page.items.map(\.id) == ["clamp-00000"])
                #expect(page.nextCursor != nil)
            }
            let big = try await store.listWorkloads(WorkloadFilter(limit: Int.max))
            #expect(big.items.count == Limits.listPageSizeMax)
            let rest = try await store.listWorkloads(WorkloadFilter(limit: Int.max, cursor: big.nextCursor))
            #expect(rest.items.count == 3)
            #expect(rest.nextCursor == nil)
            #expect(try await store.listWorkloads(WorkloadFilter()).items.count == Limits.listPageSizeDefault)
        }
    }

    @Test("activeWorkloads returns exactly the non-final ones, oldest first", arguments: StoreKind.available)
    func activeWorkloads(kind: StoreKind) async throws {
        try await withStore(kind) { store, _ in
            for (i, phase) in Phase.allCases.enumerated() {
                let w = makeWorkload("a-\(phase.rawValue)", phase: phase, minute: Int64(i))
                try await store.createWorkload(w, event: makeEvent(w, from: nil, to: phase))
            }
            let active = try await store.activeWorkloads()
            #expect(active.map(\.phase) == Phase.allCases.filter { !$0.isFinal })
            #expect(active.allSatisfy { $0.id == "a-\($0.phase.rawValue)" })

            let running = try #require(try await store.workload(id: "a-running"))
            try await store.updateWorkload(running.advanced(to: .succeeded), event: nil)
            #expect(try await store.activeWorkloads().contains { $0.id == "a-running" } == false)
            #expect(try await store.activeWorkloads().count == Phase.allCases.filter { !$0.isFinal }.count - 1)
        }
    }

    @Test("nodes are inserted, replaced on upsert and listed by ID", arguments: StoreKind.available)
    func nodesUpsert(kind: StoreKind) async throws {
        try await withStore(kind) { store, _ in
            #expect(try await store.nodes().isEmpty)
            let b = makeNode("node-b")
            let a = makeNode("node-a", heartbeatSecond: 3)
            try await store.upsertNode(b)
            try await store.upsertNode(a)
            #expect(try await store.nodes() == [a, b])
            var b2 = b
            b2.state = .draining
            b2.allocated = Resources(cpuMillis: 1500, memoryBytes: 2 << 30)
            b2.lastHeartbeat = baseTime.adding(.seconds(30))
            try await store.upsertNode(b2)
            #expect(try await store.nodes() == [a, b2])
        }
    }

    @Test("reopening keeps workloads, events, nodes and creation order", arguments: StoreKind.available)
    func restartKeepsEverything(kind: StoreKind) async throws {
        let location = StoreLocation.fresh(kind)
        let first = try await location.open()
        var w = makeWorkload("keep").rich()
        w.spec.labels["k"] = "v"
        try await first.createWorkload(w, event: makeEvent(w, from: nil, to: .pending))
        let w2 = w.advanced(to: .scheduled)
        try await first.updateWorkload(w2, event: makeEvent(w2, from: .pending, to: .scheduled))
        try await createMany(first, count: 5, prefix: "before")
        try await first.upsertNode(makeNode("n1"))
        await first.close()

        let second = try await location.open()
        #expect(try await second.workload(id: "keep") == w2)
        #expect(
            try await second.events(workloadID: "keep", afterSeq: 0, limit: 10).map(\.to) == [.pending, .scheduled])
        #expect(try await second.nodes() == [makeNode("n1")])
        #expect(try await second.schemaVersion() == Migrations.latest)
        // New rows continue after the old ones, and event seqs continue too.
        try await createMany(second, count: 2, prefix: "after")
        let w3 = w2.advanced(to: .starting)
        #expect(try await second.updateWorkload(w3, event: makeEvent(w3, from: .scheduled, to: .starting))?.seq == 3)
        let ids = try await walkAllPages(second, WorkloadFilter(limit: 3)).ids
        #expect(
            ids == ["keep"] + (0..<5).map { "before-\(String(format: "%05d", $0))" } + ["after-00000", "after-00001"])
        #expect(try await second.listWorkloads(WorkloadFilter(labels: ["k": "v"])).items.map(\.id) == ["keep"])
        await second.close()
        await location.destroy()
    }

    @Test(
        "migrations are idempotent: opening twice, even at once, applies each version once",
        arguments: StoreKind.databases)
    func migrationsIdempotent(kind: StoreKind) async throws {
        let location = StoreLocation.fresh(kind)
        async let a = location.open()
        async let b = location.open()
        let stores = try await [a, b]
        let third = try await location.open()
        for store in stores + [third] {
            #expect(try await store.schemaVersion() == Migrations.latest)
            #expect(try await appliedMigrations(store) == Migrations.all.map(\.version))
        }
        let w = makeWorkload("mig")
        try await stores[0].createWorkload(w, event: makeEvent(w, from: nil, to: .pending))
        #expect(try await stores[1].workload(id: "mig") == w)
        #expect(try await third.workload(id: "mig") == w)
        for store in stores + [third] { await store.close() }
        await location.destroy()
    }

    @Test("concurrent creates from many tasks all land", arguments: StoreKind.available)
    func concurrentCreates(kind: StoreKind) async throws {
        try await withStore(kind) { store, _ in
            let tasks = 64
            let perTask = 8
            try await withThrowingTaskGroup(of: Void.self) { group in
                for t in 0..<tasks {
                    group.addTask {
                        for i in 0..<perTask {
                            let w = makeWorkload("cc-\(t)-\(i)", labels: ["task": "\(t)"])
                            let e = try await store.createWorkload(w, event: makeEvent(w, from: nil, to: .pending))
                            #expect(e.seq == 1)
                        }
                    }
                }
                try await group.waitForAll()
            }
            let walk = try await walkAllPages(store, WorkloadFilter(limit: Limits.listPageSizeMax))
            #expect(walk.ids.count == tasks * perTask)
            #expect(Set(walk.ids).count == tasks * perTask)
            #expect(try await store.activeWorkloads().count == tasks * perTask)
            #expect(try await store.listWorkloads(WorkloadFilter(labels: ["task": "7"])).items.count == perTask)
            // Each task's own creates keep their order in the global creation order.
            let positions = Dictionary(uniqueKeysWithValues: walk.ids.enumerated().map { ($0.element, $0.offset) })
            for t in 0..<tasks {
                let mine = (0..<perTask).map { positions["cc-\(t)-\($0)"]! }
                #expect(mine == mine.sorted())
            }
        }
    }

    @Test("after close every call is unavailable", arguments: StoreKind.available)
    func closeThenUnavailable(kind: StoreKind) async throws {
        let location = StoreLocation.fresh(kind)
        let store = try await location.open()
        let w = makeWorkload("closed")
        try await store.createWorkload(w, event: makeEvent(w, from: nil, to: .pending))
        await store.close()
        await store.close()  // twice is fine
        let x = makeWorkload("x")
        await expectFabricError(.unavailable) {
            try await store.createWorkload(x, event: makeEvent(x, from: nil, to: .pending))
        }
        await expectFabricError(.unavailable) { try await store.updateWorkload(w.advanced(to: .running), event: nil) }
        await expectFabricError(.unavailable) { _ = try await store.workload(id: "closed") }
        await expectFabricError(.unavailable) { _ = try await store.listWorkloads(WorkloadFilter()) }
        await expectFabricError(.unavailable) {
            _ = try await store.events(workloadID: "closed", afterSeq: 0, limit: 5)
        }
        await expectFabricError(.unavailable) { _ = try await store.activeWorkloads() }
        await expectFabricError(.unavailable) { try await store.upsertNode(makeNode("n")) }
        await expectFabricError(.unavailable) { _ = try await store.nodes() }
        await expectFabricError(.unavailable) { _ = try await store.schemaVersion() }
        // The data is still there for the next open.
        let reopened = try await location.open()
        #expect(try await reopened.workload(id: "closed") == w)
        await reopened.close()
        await location.destroy()
    }
}

/// Creates `count` pending workloads `prefix-00000`, ... in order.
func createMany(_ store: any StateStore, count: Int, prefix: String) async throws {
    for i in 0..<count {
        let w = makeWorkload("\(prefix)-\(String(format: "%05d", i))")
        try await store.createWorkload(w, event: makeEvent(w, from: nil, to: .pending))
    }
}

func appliedMigrations(_ store: any StateStore) async throws -> [Int] {
    switch store {
    case let s as SQLiteStore: return try await s.appliedMigrations()
    case let s as PostgresStore: return try await s.appliedMigrations()
    default: return []
    }
}
