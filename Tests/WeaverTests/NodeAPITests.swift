// Draining and deregistering nodes: on the workload service (tier c, nodes on in-process actor systems), and through
// weaver's router and a real socket (the app built as `main` builds it, with its embedded node).
import FabricActors
import FabricCore
import FabricHTTP
import FabricLog
import FabricRuntime
import Foundation
import Shuttle
import Testing

@testable import Weaver

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

@Suite(.serialized) struct NodeServiceTests {
    @Test func aDrainedNodeGetsNoNewPlacementsAndKeepsWhatRuns() async throws {
        let h = try await ServiceHarness()
        let n2 = try await h.join("n2", price: 5, root: h.dir + "/n2", session: "n2-a")
        let before = try await h.service.submit(h.spec("before", ["sleep", "60"]))
        #expect(try await h.wait(before.id) { $0.phase == .running }.status.node == "local", "the free node is cheaper")

        let drained = try await h.service.drain("local")
        #expect(drained.state == .draining)
        #expect(await h.service.node(id: "local")?.state == .draining)
        // Draining again answers the same node and publishes nothing new.
        #expect(try await h.service.drain("local").state == .draining)
        #expect(h.published.nodeEvents("local").filter { $0.to == .draining }.map(\.reason) == ["Drained"])

        // New work goes to the dearer node; what ran on the drained one keeps running there.
        let after = try await h.service.submit(h.spec("after", ["sleep", "60"]))
        let placed = try await h.wait(after.id) { $0.phase == .running }
        #expect(placed.status.node == "n2")
        #expect(try await h.service.get(before.id).phase == .running)
        #expect(try await h.service.get(before.id).status.node == "local")
        #expect(await h.service.node(id: "local")?.allocated.cpuMillis == 500)
        #expect(await h.service.node(id: "n2")?.allocated.cpuMillis == 500)

        // Once n2 is full, new work waits rather than landing on the drained node.
        let big = try await h.service.submit(h.spec("big", ["sleep", "60"], cpu: 1800))
        await h.service.schedulePass()
        let waiting = try await h.service.get(big.id)
        #expect(waiting.phase == .pending)
        #expect(waiting.status.node == nil)
        #expect(waiting.status.pendingReasons?["node-not-ready"] == 1)
        // Heartbeats keep it draining.
        try await Task.sleep(for: .milliseconds(200))
        #expect(await h.service.node(id: "local")?.state == .draining)

        for w in [before, after, big] { _ = try await h.service.delete(w.id) }
        _ = try await h.wait(before.id) { $0.phase == .deleted }
        _ = try await h.wait(after.id) { $0.phase == .deleted }
        await n2.stop()
    }

    @Test func drainingAnUnknownNodeIsNotFound() async throws {
        let h = try await ServiceHarness()
        await #expect(throws: FabricError(.notFound, "node nope not found", field: "id")) {
            try await h.service.drain("nope")
        }
    }

    @Test func deregisterIsRefusedWhileTheNodeRunsWorkloadsThenForgetsIt() async throws {
        let h = try await ServiceHarness()
        let n2 = try await h.join("n2", price: 5, root: h.dir + "/n2", session: "n2-a")
        _ = try await h.service.drain("local")
        let a = try await h.service.submit(h.spec("a", ["sleep", "60"]))
        let b = try await h.service.submit(h.spec("b", ["sleep", "60"]))
        for w in [a, b] { #expect(try await h.wait(w.id) { $0.phase == .running }.status.node == "n2") }

        await #expect(
            throws: FabricError(
                .failedPrecondition,
                "node n2 runs 2 workloads: drain it and wait for them to end (or delete them) before deregistering it"
            )
        ) { try await h.service.deregister("n2") }
        _ = try await h.service.delete(a.id)
        _ = try await h.wait(a.id) { $0.phase == .deleted }
        await #expect(throws: FabricError.self) { try await h.service.deregister("n2") }
        do {
            _ = try await h.service.deregister("n2")
        } catch let e as FabricError {
            #expect(e.code == .failedPrecondition)
            #expect(e.message.hasPrefix("node n2 runs 1 workload:"))
        }
        #expect(await h.service.node(id: "n2")?.state == .ready, "a refused deregister changes nothing")

        _ = try await h.service.delete(b.id)
        _ = try await h.wait(b.id) { $0.phase == .deleted }
        // Its shuttle stops first (one still heartbeating would join again at once).
        await n2.stop()
        await n2.system.shutdown()
        let seqBefore = h.published.nodeEvents("n2").last?.seq ?? 0
        let gone = try await h.service.deregister("n2")
        #expect(gone.id == "n2")
        #expect(gone.state == .deregistered)
        #expect(gone.allocated == .zero)
        #expect(await h.service.node(id: "n2") == nil)
        #expect(await h.service.listNodes().map(\.id) == ["local"])
        let event = try #require(h.published.nodeEvents("n2").last)
        #expect(event.to == .deregistered)
        #expect(event.from == .ready)
        #expect(event.reason == "Deregistered")
        #expect(event.seq == seqBefore + 1)
        #expect(gone.eventSeq == event.seq)
        try await Task.sleep(for: .milliseconds(100))  // let the queued write land
        let stored = try await h.store.nodes().first { $0.id == "n2" }
        #expect(stored?.state == .deregistered)

        // Gone: a second deregister and a drain are 404.
        await #expect(throws: FabricError(.notFound, "node n2 not found", field: "id")) {
            try await h.service.deregister("n2")
        }
        await #expect(throws: FabricError(.notFound, "node n2 not found", field: "id")) {
            try await h.service.drain("n2")
        }
        // Nothing is placed on it; a workload that fits only there waits.
        let c = try await h.service.submit(h.spec("c", ["sleep", "60"]))
        await h.service.schedulePass()
        #expect(try await h.service.get(c.id).phase == .pending)

        // The same name joining again is a new node whose events continue the subject's sequence.
        let again = try await h.join("n2", price: 5, root: h.dir + "/n2", session: "n2-b")
        #expect(await h.service.node(id: "n2")?.state == .ready)
        let rejoined = try #require(h.published.nodeEvents("n2").last)
        #expect(rejoined.seq == event.seq + 1)
        #expect(rejoined.reason == "Registered")
        let placed = try await h.wait(c.id) { $0.phase == .running }
        #expect(placed.phase == .running && placed.status.node == "n2", "\(placed.status)")
        _ = try await h.service.delete(c.id)
        _ = try await h.wait(c.id) { $0.phase == .deleted }
        await again.stop()
    }

    @Test func aLostNodeCanBeDeregistered() async throws {
        let h = try await ServiceHarness()
        let n2 = try await h.join("n2", price: 5, root: h.dir + "/n2", session: "n2-a")
        let w = try await h.service.submit(h.spec("w", ["sleep", "60"], restart: .always))
        #expect(try await h.wait(w.id) { $0.phase == .running }.status.node == "local")
        // `local` goes silent past lostAfter (10 s) while n2 heartbeats.
        await h.host.stop()
        await h.host.system.shutdown()
        for _ in 0..<44 {
            h.clock.advance(by: .milliseconds(250))
            try await Task.sleep(for: .milliseconds(60))
            await h.service.nodeTick()
        }
        #expect(await h.service.node(id: "local")?.state == .lost)
        let gone = try await h.service.deregister("local")
        #expect(gone.state == .deregistered)
        #expect(await h.service.listNodes().map(\.id) == ["n2"])
        #expect(h.published.nodeEvents("local").suffix(2).map(\.to) == [.lost, .deregistered])
        let moved = try await h.wait(w.id) { $0.phase == .running && $0.status.node == "n2" }
        #expect(moved.status.attempts == 2)
        _ = try await h.service.delete(w.id)
        _ = try await h.wait(w.id) { $0.phase == .deleted }
        // The stale first attempt still runs under `local`'s root (this runtime has no lease): stop it.
        #expect(await ProcessRuntimeCleanup.stopAll(root: h.dir + "/workloads") == 1)
        await n2.stop()
    }
}

/// Stops whatever attempts a process runtime root still runs (the tests' orphans).
enum ProcessRuntimeCleanup {
    static func stopAll(root: String) async -> Int {
        let runtime = ProcessRuntime(root: root, logBytesMax: 1 << 20)
        var stopped = 0
        for attempt in await runtime.inventory() {
            guard case .running = attempt.state else { continue }
            await runtime.stop(workloadID: attempt.workloadID, grace: .seconds(1))
            stopped += 1
        }
        return stopped
    }
}

@Suite(.serialized) struct NodeHTTPTests {
    /// Weaver built as `main` builds it, with its embedded node `local` (2 CPUs) and the API on a free port.
    struct App {
        let app: WeaverApp
        let dir: String
        var base: String { "http://127.0.0.1:\(app.server.port)" }

        init() async throws {
            dir =
                FileManager.default.temporaryDirectory.appendingPathComponent("fabric-nodes-\(UUID().uuidString)")
                .path
            var settings = Settings()
            settings.data.dir = dir
            settings.server.address = Settings.HostPort(host: "127.0.0.1", port: 0)
            settings.node.cpuMillis = 2000
            settings.node.memoryBytes = 4 << 30
            settings.node.gpuCount = 0
            settings.runtime.stopGrace = .seconds(2)
            app = try await WeaverApp.build(
                settings: settings, logger: Logger(component: "test", level: .error, sink: MemorySink()))
            try app.server.start()
        }

        func close() async {
            await app.server.shutdown()
            await app.cluster.embedded?.stop()
            await app.service.shutdown()
            await app.cluster.embedded?.system.shutdown()
            await app.cluster.system.shutdown()
            await app.store.close()
            try? FileManager.default.removeItem(atPath: dir)
        }

        /// One request through the socket; the status and the JSON object of the body.
        func send(_ method: String, _ path: String, _ body: String? = nil) async throws -> (Int, [String: Any]) {
            var req = URLRequest(url: URL(string: base + path)!)
            req.httpMethod = method
            req.timeoutInterval = 30
            if let body { req.httpBody = Data(body.utf8) }
            let (data, resp) = try await URLSession.shared.data(for: req)
            let json = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] ?? [:]
            return ((resp as! HTTPURLResponse).statusCode, json)
        }

        /// Polls a workload through the socket until `done` holds for its JSON (bounded).
        func wait(_ id: String, _ done: ([String: Any]) -> Bool) async throws -> [String: Any] {
            let deadline = Date().addingTimeInterval(20)
            var last: [String: Any] = [:]
            while Date() < deadline {
                last = try await send("GET", "/v1/workloads/\(id)").1
                if done(last) { return last }
                try await Task.sleep(for: .milliseconds(50))
            }
            return last
        }
    }

    static func status(_ w: [String: Any]) -> [String: Any] { w["status"] as? [String: Any] ?? [:] }
    static func phase(_ w: [String: Any]) -> String? { status(w)["phase"] as? String }
    static func error(_ body: [String: Any]) -> [String: String] { body["error"] as? [String: String] ?? [:] }

    static let sleeper = #"{"name":"busy","command":["sleep","60"],"resources":{"cpu":"500m","memory":"64Mi"}}"#

    @Test func unknownNodesAre404ThroughTheRouter() async throws {
        let a = try await App()
        for (method, path) in [
            (HTTPMethod.post, "/v1/nodes/nope/drain"), (.delete, "/v1/nodes/nope"), (.get, "/v1/nodes/nope"),
        ] {
            let r = try await a.app.router.respond(to: Request(method: method, path: path))
            #expect(r.status == 404, "\(method) \(path)")
            let body = try JSONSerialization.jsonObject(with: r.body) as? [String: Any] ?? [:]
            #expect(Self.error(body) == ["code": "not_found", "message": "node nope not found", "field": "id"])
        }
        let allowed = a.app.router.allowedMethods(for: "/v1/nodes/local")?.map(\.rawValue).sorted()
        #expect(allowed == ["DELETE", "GET", "HEAD"])
        await a.close()
    }

    @Test func drainAndDeregisterThroughTheSocket() async throws {
        let a = try await App()
        // A workload runs on the only node.
        let (created, busy) = try await a.send("POST", "/v1/workloads", Self.sleeper)
        #expect(created == 202)
        let busyID = try #require(busy["id"] as? String)
        let running = try await a.wait(busyID) { Self.phase($0) == "running" }
        #expect(Self.status(running)["node"] as? String == "local")

        // Deregistering a node that runs work is refused, naming the count.
        let (refused, refusal) = try await a.send("DELETE", "/v1/nodes/local")
        #expect(refused == 409)
        #expect(Self.error(refusal)["code"] == "failed_precondition")
        #expect(Self.error(refusal)["message"]?.hasPrefix("node local runs 1 workload:") == true)

        // Drain: 200 and the node, then GET shows it draining.
        let (drainedStatus, drained) = try await a.send("POST", "/v1/nodes/local/drain")
        #expect(drainedStatus == 200)
        #expect(drained["state"] as? String == "draining")
        let (got, node) = try await a.send("GET", "/v1/nodes/local")
        #expect(got == 200)
        #expect(node["state"] as? String == "draining")
        #expect((node["allocated"] as? [String: Any])?["cpu"] as? String == "500m")
        let (listed, list) = try await a.send("GET", "/v1/nodes")
        #expect(listed == 200)
        #expect((list["nodes"] as? [[String: Any]])?.map { $0["state"] as? String } == ["draining"])

        // New work is not placed on it; what ran keeps running.
        let (accepted, second) = try await a.send(
            "POST", "/v1/workloads", #"{"name":"later","command":["true"],"resources":{"cpu":"100m","memory":"16Mi"}}"#)
        #expect(accepted == 202)
        let secondID = try #require(second["id"] as? String)
        let waiting = try await a.wait(secondID) { Self.status($0)["pendingReasons"] != nil }
        #expect(Self.phase(waiting) == "pending")
        #expect(Self.status(waiting)["node"] == nil)
        #expect((Self.status(waiting)["pendingReasons"] as? [String: Any])?["node-not-ready"] as? Int == 1)
        #expect(Self.phase(try await a.send("GET", "/v1/workloads/\(busyID)").1) == "running")

        // Unknown nodes are 404 through the socket too.
        let (missing, notFound) = try await a.send("POST", "/v1/nodes/nope/drain")
        #expect(missing == 404)
        #expect(Self.error(notFound)["code"] == "not_found")
        #expect(try await a.send("DELETE", "/v1/nodes/nope").0 == 404)

        // Once its work is gone and its node runner stopped, the node can leave.
        #expect(try await a.send("DELETE", "/v1/workloads/\(busyID)").0 == 202)
        #expect(Self.phase(try await a.wait(busyID) { Self.phase($0) == "deleted" }) == "deleted")
        await a.app.cluster.embedded?.stop()
        let (leftStatus, left) = try await a.send("DELETE", "/v1/nodes/local")
        #expect(leftStatus == 200)
        #expect(left["id"] as? String == "local")
        #expect(left["state"] as? String == "deregistered")
        #expect(try await a.send("GET", "/v1/nodes/local").0 == 404)
        #expect((try await a.send("GET", "/v1/nodes").1["nodes"] as? [Any])?.count == 0)
        #expect(try await a.send("DELETE", "/v1/nodes/local").0 == 404)
        #expect(try await a.send("POST", "/v1/nodes/local/drain").0 == 404)
        // With no node left, the pending workload says so.
        #expect(Self.phase(try await a.send("GET", "/v1/workloads/\(secondID)").1) == "pending")
        await a.close()
    }
}
