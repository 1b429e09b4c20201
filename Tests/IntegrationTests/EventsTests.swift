import FabricActors
import Foundation
import Synchronization
import Testing

/// A nats-server on a free loopback port in a temp folder, stopped by the test.
final class NATSProcess: @unchecked Sendable {
    let port = freePort()
    let dir = NSTemporaryDirectory() + "fabric-nats-\(UUID().uuidString.prefix(8))"
    private var process: Process?
    /// Extra nats-server flags (e.g. `--user`, `--pass`).
    let extraArgs: [String]
    var url: String { "nats://127.0.0.1:\(port)" }

    /// What the readiness probe connects with.
    let credentials: NATSOptions.Credentials

    init(args: [String] = [], credentials: NATSOptions.Credentials = .none) {
        extraArgs = args
        self.credentials = credentials
    }

    func start() async throws {
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let path = ["/usr/sbin/nats-server", "/usr/bin/nats-server"].first {
            FileManager.default.isExecutableFile(atPath: $0)
        }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: try #require(path, "nats-server missing: run scripts/bootstrap"))
        p.arguments =
            ["-a", "127.0.0.1", "-p", String(port), "-P", dir + "/nats.pid", "-l", dir + "/nats.log"] + extraArgs
        try p.run()
        process = p
        for _ in 0..<200 {
            let probe = NATSOptions(urls: [url], credentials: credentials, reconnect: .never)
            if (try? await NATSConnection.connect(probe)) != nil { return }
            try await Task.sleep(for: .milliseconds(25))
        }
        throw WeaverFailed(log: "nats-server did not start")
    }

    func stop() {
        guard let p = process, p.isRunning else { return }
        p.terminate()
        p.waitUntilExit()
        process = nil
    }

    deinit { stop() }
}

@Suite(.serialized) struct EventsTests {
    /// A plain NATS subscriber sees every transition of a workload, complete and in order.
    @Test func workloadTransitionsArePublishedInOrder() async throws {
        let nats = NATSProcess()
        try await nats.start()
        defer { nats.stop() }
        let raw = Mutex<[(subject: String, data: Data)]>([])
        let subscriber = try await NATSConnection.connect(NATSOptions(urls: [nats.url], name: "test-subscriber"))
        let sub = try subscriber.subscribe(subject: "fabric.events.workload.>") { msg in
            raw.withLock { $0.append((msg.subject, Data(msg.data))) }
        }
        defer { sub.cancel() }
        let nodeRaw = Mutex<[(subject: String, data: Data)]>([])
        let nodeSub = try subscriber.subscribe(subject: "fabric.events.node.>") { msg in
            nodeRaw.withLock { $0.append((msg.subject, Data(msg.data))) }
        }
        defer { nodeSub.cancel() }
        try await subscriber.flush(timeout: .seconds(5))

        let weaver = try WeaverProcess(args: ["--nats-url", nats.url, "--cluster-join-token", "events-test-token"])
        try await weaver.start()
        defer { weaver.stop() }
        let c = weaver.client
        var ids: [String] = []
        for i in 0..<3 {
            let r = try await c.post("/v1/workloads", #"{"name":"ev\#(i)","command":["sh","-c","echo \#(i)"]}"#)
            ids.append(try #require(r.json["id"] as? String))
        }
        for id in ids { _ = try await c.waitFor(id) { phase($0) == "succeeded" } }
        try await Task.sleep(for: .milliseconds(300))
        let received: [[String: Any]] = raw.withLock { $0 }.map { m in
            var event = (try? JSONSerialization.jsonObject(with: m.data)) as? [String: Any] ?? [:]
            event["subject"] = m.subject
            return event
        }
        for id in ids {
            let events = received.filter { $0["workloadID"] as? String == id }
            #expect(events.map { $0["seq"] as? Int ?? 0 } == [1, 2, 3, 4, 5])
            #expect(
                events.map { $0["to"] as? String ?? "" } == [
                    "pending", "scheduled", "starting", "running", "succeeded",
                ])
            #expect(events.allSatisfy { $0["subject"] as? String == "fabric.events.workload.\(id)" })
        }
        // The embedded node joined over NATS like any shuttle: its registration is a node event.
        let nodeEvents: [[String: Any]] = nodeRaw.withLock { $0 }.map { m in
            var event = (try? JSONSerialization.jsonObject(with: m.data)) as? [String: Any] ?? [:]
            event["subject"] = m.subject
            return event
        }
        #expect(nodeEvents.first?["subject"] as? String == "fabric.events.node.local")
        #expect(nodeEvents.first?["node"] as? String == "local")
        #expect(nodeEvents.first?["to"] as? String == "ready")
        #expect(nodeEvents.map { $0["seq"] as? Int ?? 0 } == Array(1...max(1, nodeEvents.count)))
        #expect(!weaver.log.contains("events-test-token"), "the join token is never logged")
    }

    @Test func natsWithoutAJoinTokenIsAClearStartError() async throws {
        let weaver = try WeaverProcess(args: ["--nats-url", "nats://127.0.0.1:\(freePort())"])
        await #expect(throws: WeaverFailed.self) { try await weaver.start() }
        #expect(weaver.log.contains("cluster.join_token must be set"))
    }

    @Test func aMalformedDatabaseURLIsAClearStartError() async throws {
        let weaver = try WeaverProcess(args: ["--database-url", "postgres://%zz@db/fabric"])
        await #expect(throws: WeaverFailed.self) { try await weaver.start() }
        #expect(weaver.log.contains("database.url: not a valid PostgreSQL URL or conninfo string"))
        #expect(weaver.log.contains("setting=database.url"))
    }

    @Test func anUnreachableNATSIsAClearStartError() async throws {
        let weaver = try WeaverProcess(
            args: ["--nats-url", "nats://127.0.0.1:\(freePort())", "--cluster-join-token", "t"])
        await #expect(throws: WeaverFailed.self) { try await weaver.start() }
        #expect(weaver.log.contains("cannot connect to nats.url"))
    }
}
