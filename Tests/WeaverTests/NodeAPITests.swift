// Draining nodes: on the workload service (tier c, nodes on in-process actor systems), and through
// weaver's router and a real socket (the app built as `main` builds it, with its embedded node).
import FabricActors
import FabricCore
import FabricHTTP
import FabricLog
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
            (HTTPMethod.post, "/v1/nodes/nope/drain"), (.get, "/v1/nodes/nope"),
        ] {
            let r = try await a.app.router.respond(to: Request(method: method, path: path))
            #expect(r.status == 404, "\(method) \(path)")
            let body = try JSONSerialization.jsonObject(with: r.body) as? [String: Any] ?? [:]
            #expect(Self.error(body) == ["code": "not_found", "message": "node nope not found", "field": "id"])
        }
        let allowed = a.app.router.allowedMethods(for: "/v1/nodes/local")?.map(\.rawValue).sorted()
        #expect(allowed == ["GET", "HEAD"])
        await a.close()
    }

    @Test func drainThroughTheSocket() async throws {
        let a = try await App()
        // A workload runs on the only node.
        let (created, busy) = try await a.send("POST", "/v1/workloads", Self.sleeper)
        #expect(created == 202)
        let busyID = try #require(busy["id"] as? String)
        let running = try await a.wait(busyID) { Self.phase($0) == "running" }
        #expect(Self.status(running)["node"] as? String == "local")

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

        #expect(try await a.send("DELETE", "/v1/workloads/\(busyID)").0 == 202)
        #expect(Self.phase(try await a.wait(busyID) { Self.phase($0) == "deleted" }) == "deleted")
        await a.close()
    }
}
