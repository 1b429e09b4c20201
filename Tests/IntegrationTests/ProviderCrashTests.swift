import FabricCore
import FabricLog
import FabricProviders
import Foundation
import Testing

/// weaver provisions on a real EC2 API emulator (moto_server, from .venv) and is killed between the provider call
/// and storing its answer: after a restart there is exactly one instance, and the workload owns it.
@Suite(.serialized) struct ProviderCrashTests {
    static let repoRoot: String = {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { url.deleteLastPathComponent() }
        return url.path
    }()
    static let moto = repoRoot + "/.venv/bin/moto_server"
    static let image = "ami-12c6146b"

    /// Starts moto_server on a free port; stopped by the caller.
    func startMoto(logPath: String) async throws -> (Process, String) {
        let port = freePort()
        let p = Process()
        p.executableURL = URL(fileURLWithPath: Self.moto)
        p.arguments = ["-H", "127.0.0.1", "-p", String(port)]
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        let log = FileHandle(forWritingAtPath: logPath)!
        p.standardOutput = log
        p.standardError = log
        try p.run()
        let endpoint = "http://127.0.0.1:\(port)/"
        let client = Client(base: "http://127.0.0.1:\(port)")
        for _ in 0..<600 {
            if let r = try? await client.get("/moto-api/"), r.status > 0 { return (p, endpoint) }
            try await Task.sleep(for: .milliseconds(100))
        }
        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
        throw WeaverFailed(log: (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "moto did not start")
    }

    /// What Fabric owns in the emulator, read with the production driver.
    func owned(_ endpoint: String) async throws -> [Instance] {
        let driver = EC2Provider(
            settings: AWSSettings(
                credentials: AWSCredentials(accessKeyID: "AKIDTEST", secretAccessKey: "test"), regions: ["us-east-1"],
                endpoint: endpoint, imageID: Self.image),
            transport: CurlHTTPClient(), clock: SystemClockForTests())
        return try await driver.list().filter { $0.state != .terminated }
    }

    @Test func aWeaverKilledBetweenProvisionAndCommitLeavesOneInstance() async throws {
        try #require(
            FileManager.default.isExecutableFile(atPath: Self.moto),
            "moto_server is not in .venv: run scripts/bootstrap (make test does)")
        let dir = NSTemporaryDirectory() + "fabric-crash-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let (moto, endpoint) = try await startMoto(logPath: dir + "/moto.log")
        defer {
            // SIGKILL: the emulator may inherit a blocked SIGTERM from the test process's thread.
            kill(moto.processIdentifier, SIGKILL)
            moto.waitUntilExit()
        }
        let args = [
            "--node-enabled=false", "--providers-runpod-enabled=false", "--providers-coreweave-enabled=false",
            "--providers-gcp-enabled=false", "--providers-aws-access-key-id", "AKIDTEST",
            "--providers-aws-endpoint", endpoint, "--providers-aws-image-id", Self.image,
        ]
        let secret = ["FABRIC_PROVIDERS_AWS_SECRET_ACCESS_KEY": "test"]
        let first = try WeaverProcess(
            dataDir: dir + "/weaver", args: args,
            environment: secret.merging(["WEAVER_FAULT_CRASH_AFTER_PROVISION": "1"]) { a, _ in a })
        try await first.start()
        let created = try await first.client.post(
            "/v1/workloads", #"{"name":"job","image":"busybox:1","resources":{"cpu":"2","memory":"4Gi"}}"#)
        #expect(created.status == 202)
        let id = try #require(created.json["id"] as? String)
        // The fault: weaver exits right after EC2 made the instance, before the answer is stored.
        let process = try #require(first.process)
        for _ in 0..<300 where process.isRunning { try await Task.sleep(for: .milliseconds(100)) }
        #expect(!process.isRunning)
        #expect(process.terminationStatus == 137)
        #expect(first.log.contains("fault injection"))
        let made = try await owned(endpoint)
        #expect(made.count == 1)

        // Restarted without the fault: it asks again under the stored name and adopts the instance it made.
        let second = try WeaverProcess(dataDir: dir + "/weaver", args: args, environment: secret)
        try await second.start()
        defer { second.stop() }
        let adopted = try await second.client.waitFor(id) {
            (status($0)["instance"] as? [String: Any])?["id"] as? String != nil
        }
        let instance = try #require(status(adopted)["instance"] as? [String: Any])
        #expect(instance["id"] as? String == made.first?.id)
        #expect(instance["name"] as? String == made.first?.name)
        #expect(try await owned(endpoint).count == 1)

        // DELETE deletes it.
        _ = try await second.client.delete("/v1/workloads/\(id)")
        _ = try await second.client.waitFor(id) { phase($0) == "deleted" }
        #expect(try await owned(endpoint).isEmpty)
    }
}

/// The wall clock, for signing requests in the test.
struct SystemClockForTests: WallClock {
    func now() -> Timestamp { Timestamp(millisecondsSinceEpoch: Int64(Date().timeIntervalSince1970 * 1000)) }
}
