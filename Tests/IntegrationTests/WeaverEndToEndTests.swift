import Foundation
import Testing

/// Starts the real weaver binary and drives it through its REST API: workloads really run as processes.
@Suite(.serialized) struct WeaverEndToEndTests {
    @Test func helloRunsToSuccessWithLogsAndEvents() async throws {
        let weaver = try WeaverProcess()
        try await weaver.start()
        defer { weaver.stop() }
        let c = weaver.client

        let created = try await c.post(
            "/v1/workloads",
            #"{"name":"hello","command":["sh","-c","echo hello; echo oops >&2; sleep 1"],"resources":{"cpu":"500m","memory":"64Mi"}}"#
        )
        #expect(created.status == 202)
        #expect(phase(created.json) == "pending")
        let id = try #require(created.json["id"] as? String)
        #expect(id.hasPrefix("wl-"))

        let done = try await c.waitFor(id) { phase($0) == "succeeded" || phase($0) == "failed" }
        #expect(phase(done) == "succeeded")
        #expect(status(done)["exitCode"] as? Int == 0)
        #expect(status(done)["node"] as? String == "local")

        let logs = try await c.get("/v1/workloads/\(id)/logs")
        #expect(logs.status == 200)
        #expect(logs.text.contains("hello\n"))
        #expect(logs.text.contains("oops\n"))

        let events = try await c.get("/v1/workloads/\(id)/events").json["events"] as? [[String: Any]] ?? []
        #expect(
            events.map { $0["to"] as? String ?? "" } == ["pending", "scheduled", "starting", "running", "succeeded"])
        #expect(events.map { $0["seq"] as? Int ?? 0 } == [1, 2, 3, 4, 5])
    }

    @Test func exitCodesStartFailuresAndDeletion() async throws {
        let weaver = try WeaverProcess(args: ["--runtime-stop-grace", "2s"])
        try await weaver.start()
        defer { weaver.stop() }
        let c = weaver.client

        let bad = try await c.post("/v1/workloads", #"{"name":"three","command":["sh","-c","exit 3"]}"#)
        let missing = try await c.post("/v1/workloads", #"{"name":"missing","command":["/no/such/program"]}"#)
        let sleeper = try await c.post("/v1/workloads", #"{"name":"sleeper","command":["sleep","60"]}"#)
        let badID = try #require(bad.json["id"] as? String)
        let missingID = try #require(missing.json["id"] as? String)
        let sleeperID = try #require(sleeper.json["id"] as? String)

        let three = try await c.waitFor(badID) { phase($0) == "failed" }
        #expect(status(three)["exitCode"] as? Int == 3)
        #expect(status(three)["message"] as? String == "exited with code 3")

        let notFound = try await c.waitFor(missingID) { phase($0) == "failed" }
        #expect(status(notFound)["reason"] as? String == "StartFailed")
        #expect((status(notFound)["message"] as? String ?? "").contains("/no/such/program"))

        _ = try await c.waitFor(sleeperID) { phase($0) == "running" }
        let del = try await c.delete("/v1/workloads/\(sleeperID)")
        #expect(del.status == 202)
        let gone = try await c.waitFor(sleeperID) { phase($0) == "deleted" }
        #expect(phase(gone) == "deleted")
        #expect(status(gone)["signal"] as? Int == 15)

        // Capacity is free again.
        let nodes = try await c.get("/v1/nodes").json["nodes"] as? [[String: Any]] ?? []
        let allocated = nodes.first?["allocated"] as? [String: Any]
        #expect(allocated?["cpu"] as? String == "0")
    }

    @Test func apiErrorsAreClear() async throws {
        let weaver = try WeaverProcess()
        try await weaver.start()
        defer { weaver.stop() }
        let c = weaver.client

        let cases: [(String, String, String?, Int, String?)] = [
            ("POST", "/v1/workloads", #"{"name":"Bad_Name","command":["true"]}"#, 400, "name"),
            ("POST", "/v1/workloads", #"{"name":"a","command":["true"],"colour":"red"}"#, 400, "colour"),
            (
                "POST", "/v1/workloads", #"{"name":"a","command":["true"],"resources":{"cpu":"-1"}}"#, 400,
                "resources.cpu"
            ),
            (
                "POST", "/v1/workloads", #"{"name":"a","command":["true"],"resources":{"gpu":{"count":17}}}"#, 400,
                "resources.gpu.count"
            ),
            ("POST", "/v1/workloads", #"{"name":"a","#, 400, nil),
            ("GET", "/v1/workloads/wl-nope", nil, 404, "id"),
            ("GET", "/v1/providers/azure/regions", nil, 404, "name"),
            ("PUT", "/v1/workloads", "{}", 405, nil),
            ("GET", "/v1/workloads?limit=0", nil, 400, "limit"),
            ("GET", "/v1/workloads?status=sleeping", nil, 400, "status"),
            ("GET", "/v1/workloads?status=running&status=bogus", nil, 400, "status"),
            ("GET", "/v1/workloads?status=running&status=pending", nil, 400, "status"),
            ("GET", "/v1/workloads?label=team=", nil, 400, "label"),
            ("GET", "/v1/workloads?label=team=a,", nil, 400, "label"),
            ("GET", "/v1/workloads?labelSelector=team", nil, 400, "label"),
            ("GET", "/v1/workloads/wl-nope%00x", nil, 404, "id"),
            ("GET", "/v1/workloads?cursor=%%%", nil, 400, "cursor"),
        ]
        for (method, path, body, code, field) in cases {
            let r = try await c.send(method, path, body)
            #expect(r.status == code, "\(method) \(path)")
            let err = r.json["error"] as? [String: Any]
            #expect(err?["code"] is String, "\(method) \(path): \(r.text)")
            #expect(err?["message"] is String)
            #expect(err?["field"] as? String == field, "\(method) \(path): \(r.text)")
        }
        let big = String(repeating: "x", count: 2 << 20)
        let tooLarge = try await c.post("/v1/workloads", #"{"name":"a","command":["\#(big)"]}"#)
        #expect(tooLarge.status == 413)
        // Nothing was stored by any of it.
        let list = try await c.get("/v1/workloads").json["items"] as? [Any]
        #expect(list?.count == 0)
    }

    @Test func dryRunPlansCheapestOfferAndStoresNothing() async throws {
        let weaver = try WeaverProcess()
        try await weaver.start()
        defer { weaver.stop() }
        let c = weaver.client
        let r = try await c.post(
            "/v1/workloads?dryRun=true",
            #"{"name":"train","image":"ghcr.io/acme/train:1","resources":{"cpu":"8","memory":"64Gi","gpu":{"count":1,"type":"H100"}}}"#
        )
        #expect(r.status == 200)
        let placement = try #require(r.json["placement"] as? [String: Any])
        let candidates = try #require(r.json["candidates"] as? [[String: Any]])
        let feasible = candidates.filter { $0["feasible"] as? Bool == true }
        let prices = feasible.compactMap { $0["pricePerHour"] as? Double }
        #expect(!prices.isEmpty)
        #expect(prices == prices.sorted())
        #expect(placement["pricePerHour"] as? Double == prices.first)
        // Feasible first, then the filtered ones, each with a reason.
        let firstFiltered = candidates.firstIndex { $0["feasible"] as? Bool == false } ?? candidates.count
        #expect(candidates[firstFiltered...].allSatisfy { $0["feasible"] as? Bool == false && $0["reason"] is String })
        // The local node has no container runtime and no H100.
        #expect(candidates.contains { $0["node"] as? String == "local" && $0["feasible"] as? Bool == false })

        let none = try await c.post(
            "/v1/workloads?dryRun=true",
            #"{"name":"huge","command":["true"],"resources":{"gpu":{"count":16,"type":"B200"}}}"#)
        #expect(none.status == 200)
        #expect(none.json["placement"] is NSNull)
        #expect((none.json["candidates"] as? [[String: Any]])?.allSatisfy { $0["reason"] is String } == true)

        // A misspelt dryRun is refused, not taken for a real submission.
        let misspelt = try await c.post("/v1/workloads?dryrun=true", #"{"name":"oops","command":["true"]}"#)
        #expect(misspelt.status == 400)
        let error = try #require(misspelt.json["error"] as? [String: Any])
        #expect(error["code"] as? String == "invalid_argument")
        #expect(error["field"] as? String == "dryrun")
        #expect(try await c.get("/v1/workloads?Status=running").status == 400)

        let list = try await c.get("/v1/workloads").json["items"] as? [Any]
        #expect(list?.count == 0)
    }

    @Test func restartAdoptsRunningWorkloadsAndNeverRunsThemTwice() async throws {
        let dir = NSTemporaryDirectory() + "fabric-restart-\(UUID().uuidString.prefix(8))"
        let marker = dir + "-marker"
        var weaver = try WeaverProcess(dataDir: dir)
        try await weaver.start()
        let c = weaver.client
        let r = try await c.post(
            "/v1/workloads", #"{"name":"survivor","command":["sh","-c","echo run >> \#(marker); sleep 3; exit 7"]}"#)
        let id = try #require(r.json["id"] as? String)
        _ = try await c.waitFor(id) { phase($0) == "running" }
        weaver.stop(signal: SIGKILL)

        weaver = try WeaverProcess(dataDir: dir)
        try await weaver.start()
        defer { weaver.stop() }
        let adopted = try await weaver.client.get("/v1/workloads/\(id)").json
        #expect(phase(adopted) == "running")
        let done = try await weaver.client.waitFor(id) { phase($0) == "failed" || phase($0) == "succeeded" }
        #expect(phase(done) == "failed")
        #expect(status(done)["exitCode"] as? Int == 7)
        let runs = (try? String(contentsOfFile: marker, encoding: .utf8)) ?? ""
        #expect(runs == "run\n")
    }

    @Test func capacityIsCountedOnceAfterRestart() async throws {
        let dir = NSTemporaryDirectory() + "fabric-recount-\(UUID().uuidString.prefix(8))"
        var weaver = try WeaverProcess(dataDir: dir, args: ["--node-cpu", "500m"])
        try await weaver.start()
        let long = try await weaver.client.post(
            "/v1/workloads", #"{"name":"long","command":["sleep","30"],"resources":{"cpu":"250m"}}"#)
        let short = try await weaver.client.post(
            "/v1/workloads", #"{"name":"short","command":["sleep","1"],"resources":{"cpu":"250m"}}"#)
        let longID = try #require(long.json["id"] as? String)
        let shortID = try #require(short.json["id"] as? String)
        _ = try await weaver.client.waitFor(shortID) { phase($0) == "running" }
        _ = try await weaver.client.waitFor(longID) { phase($0) == "running" }
        weaver.stop(signal: SIGKILL)
        try await Task.sleep(for: .seconds(2))  // `short` ends while weaver is down

        weaver = try WeaverProcess(dataDir: dir, args: ["--node-cpu", "500m"])
        try await weaver.start()
        defer { weaver.stop() }
        let c = weaver.client
        #expect(phase(try await c.get("/v1/workloads/\(shortID)").json) == "succeeded")
        let node = (try await c.get("/v1/nodes").json["nodes"] as? [[String: Any]])?.first
        #expect((node?["allocated"] as? [String: Any])?["cpu"] as? String == "250m")
        #expect(try await c.delete("/v1/workloads/\(longID)").status == 202)
        _ = try await c.waitFor(longID) { phase($0) == "deleted" }
    }

    @Test func aSecondWeaverOnTheSameDataDirIsRefused() async throws {
        let first = try WeaverProcess()
        try await first.start()
        defer { first.stop() }
        let second = try WeaverProcess(dataDir: first.dataDir)
        await #expect(throws: WeaverFailed.self) { try await second.start() }
        #expect(second.log.contains("another weaver is using data.dir"))
        #expect(try await first.client.get("/health").status == 200)
    }

    @Test func deleteDuringStartStopsTheProcess() async throws {
        let weaver = try WeaverProcess(args: ["--runtime-stop-grace", "1s"])
        try await weaver.start()
        defer { weaver.stop() }
        let c = weaver.client
        let marker = weaver.dataDir + "-started"
        var ids: [String] = []
        for i in 0..<10 {
            let r = try await c.post(
                "/v1/workloads",
                #"{"name":"race\#(i)","command":["sh","-c","echo x >> \#(marker); exec sleep 300"],"resources":{"cpu":"10m"}}"#
            )
            let id = try #require(r.json["id"] as? String)
            ids.append(id)
            _ = try await c.delete("/v1/workloads/\(id)")
        }
        for id in ids { _ = try await c.waitFor(id) { phase($0) == "deleted" } }
        try await Task.sleep(for: .milliseconds(500))
        // Whatever started was stopped: no `sleep 300` of these workloads survives.
        let ps = Process()
        ps.executableURL = URL(fileURLWithPath: "/usr/bin/pgrep")
        ps.arguments = ["-f", "fabric-monitor --dir \(weaver.dataDir)"]
        let out = Pipe()
        ps.standardOutput = out
        try ps.run()
        ps.waitUntilExit()
        let survivors = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(survivors.isEmpty, "monitors still running: \(survivors)")
        let node = (try await c.get("/v1/nodes").json["nodes"] as? [[String: Any]])?.first
        #expect((node?["allocated"] as? [String: Any])?["cpu"] as? String == "0")
    }

    @Test func concurrentSubmissionsNeverOverCommit() async throws {
        let weaver = try WeaverProcess(args: ["--node-cpu", "2", "--node-memory", "1Gi"])
        try await weaver.start()
        defer { weaver.stop() }
        let c = weaver.client
        let ids = try await withThrowingTaskGroup(of: String.self) { group in
            for i in 0..<40 {
                group.addTask {
                    let r = try await c.post(
                        "/v1/workloads",
                        #"{"name":"c\#(i)","command":["sleep","0.3"],"resources":{"cpu":"500m","memory":"64Mi"}}"#)
                    return r.json["id"] as? String ?? ""
                }
            }
            return try await group.reduce(into: [String]()) { $0.append($1) }
        }
        #expect(ids.allSatisfy { $0.hasPrefix("wl-") })
        var maxAllocated = 0.0
        let deadline = Date().addingTimeInterval(60)
        var finished = 0
        while Date() < deadline {
            let node = (try await c.get("/v1/nodes").json["nodes"] as? [[String: Any]])?.first
            let cpu = (node?["allocated"] as? [String: Any])?["cpu"] as? String ?? "0"
            maxAllocated = max(maxAllocated, cpu.hasSuffix("m") ? Double(cpu.dropLast())! / 1000 : Double(cpu)!)
            let page = try await c.get("/v1/workloads?status=succeeded&limit=1000").json["items"] as? [Any]
            finished = page?.count ?? 0
            if finished == 40 { break }
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(finished == 40)
        #expect(maxAllocated <= 2.0)
        #expect(maxAllocated > 0)
    }

    @Test func unplaceableWorkloadsWaitWithReasonsAndRunWhenCapacityFrees() async throws {
        let weaver = try WeaverProcess(args: [
            "--node-cpu", "1", "--node-memory", "1Gi", "--scheduler-retry-interval", "100ms",
        ])
        try await weaver.start()
        defer { weaver.stop() }
        let c = weaver.client
        let image = try await c.post("/v1/workloads", #"{"name":"img","image":"busybox:1"}"#)
        let big = try await c.post("/v1/workloads", #"{"name":"big","command":["true"],"resources":{"cpu":"2"}}"#)
        let hog = try await c.post("/v1/workloads", #"{"name":"hog","command":["sleep","1"],"resources":{"cpu":"1"}}"#)
        let next = try await c.post("/v1/workloads", #"{"name":"next","command":["true"],"resources":{"cpu":"1"}}"#)
        let imageID = try #require(image.json["id"] as? String)
        let bigID = try #require(big.json["id"] as? String)
        let hogID = try #require(hog.json["id"] as? String)
        let nextID = try #require(next.json["id"] as? String)

        let waitingImage = try await c.waitFor(imageID) { status($0)["pendingReasons"] != nil }
        #expect(phase(waitingImage) == "pending")
        #expect(status(waitingImage)["pendingReasons"] as? [String: Int] == ["runtime-unavailable": 1])
        #expect((status(waitingImage)["message"] as? String ?? "").contains("containerd"))
        let waitingBig = try await c.waitFor(bigID) { status($0)["pendingReasons"] != nil }
        #expect(status(waitingBig)["pendingReasons"] as? [String: Int] == ["insufficient-cpu": 1])

        // `next` waits for `hog`'s CPU, then runs.
        _ = try await c.waitFor(hogID) { phase($0) == "running" }
        #expect(phase(try await c.get("/v1/workloads/\(nextID)").json) == "pending")
        let ran = try await c.waitFor(nextID) { phase($0) == "succeeded" }
        #expect(phase(ran) == "succeeded")

        let sched = try await c.get("/v1/scheduler/status").json
        #expect(sched["pending"] as? Int == 2)
        let oldest = (sched["oldestPending"] as? [[String: Any]] ?? []).compactMap { $0["id"] as? String }
        #expect(oldest == [imageID, bigID])
        for id in [imageID, bigID] { #expect(try await c.delete("/v1/workloads/\(id)").status == 200) }
        #expect(try await c.get("/v1/scheduler/status").json["pending"] as? Int == 0)
    }

    @Test(.enabled(if: ProcessInfo.processInfo.environment["FABRIC_TEST_DATABASE_URL"] != nil))
    func runsOnPostgreSQL() async throws {
        let url = ProcessInfo.processInfo.environment["FABRIC_TEST_DATABASE_URL"]!
        let weaver = try WeaverProcess(args: ["--database-url", url])
        try await weaver.start()
        defer { weaver.stop() }
        let c = weaver.client
        let r = try await c.post("/v1/workloads", #"{"name":"pg","command":["sh","-c","echo on-postgres"]}"#)
        let id = try #require(r.json["id"] as? String)
        let done = try await c.waitFor(id) { phase($0) == "succeeded" }
        #expect(phase(done) == "succeeded")
        #expect(try await c.get("/v1/workloads/\(id)/logs").text == "on-postgres\n")
        let health = try await c.get("/health").json
        #expect(health["store"] as? String == "postgres")
    }
}
