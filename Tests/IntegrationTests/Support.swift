import Foundation
import Testing

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// The directory holding the built executables (the test bundle lives beside them).
let buildDirectory: String = {
    let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    return (exe as NSString).deletingLastPathComponent
}()

/// A free loopback TCP port (bound once and released).
func freePort() -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    addr.sin_port = 0
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) }
    }
    _ = withUnsafeMutablePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
    }
    return Int(UInt16(bigEndian: addr.sin_port))
}

/// A minimal JSON-over-HTTP client for the tests.
struct Client: Sendable {
    let base: String

    struct Reply: Sendable {
        let status: Int
        let body: Data
        var json: [String: Any] { (try? JSONSerialization.jsonObject(with: body)) as? [String: Any] ?? [:] }
        var text: String { String(decoding: body, as: UTF8.self) }
    }

    func send(_ method: String, _ path: String, _ body: String? = nil) async throws -> Reply {
        var req = URLRequest(url: URL(string: base + path)!)
        req.httpMethod = method
        req.timeoutInterval = 30
        if let body {
            req.httpBody = Data(body.utf8)
            req.setValue("application/json", forHTTPHeaderField: "Content-Type")
        }
        let (data, resp) = try await URLSession.shared.data(for: req)
        return Reply(status: (resp as! HTTPURLResponse).statusCode, body: data)
    }

    func get(_ path: String) async throws -> Reply { try await send("GET", path) }
    func post(_ path: String, _ body: String) async throws -> Reply { try await send("POST", path, body) }
    func delete(_ path: String) async throws -> Reply { try await send("DELETE", path) }

    /// Polls a workload until `done` holds for its JSON (or the deadline passes) and returns the last JSON.
    func waitFor(_ id: String, seconds: Double = 30, _ done: ([String: Any]) -> Bool) async throws -> [String: Any] {
        let deadline = Date().addingTimeInterval(seconds)
        var last: [String: Any] = [:]
        while Date() < deadline {
            last = try await get("/v1/workloads/\(id)").json
            if done(last) { return last }
            try await Task.sleep(for: .milliseconds(100))
        }
        return last
    }
}

func phase(_ w: [String: Any]) -> String? { (w["status"] as? [String: Any])?["phase"] as? String }
func status(_ w: [String: Any]) -> [String: Any] { w["status"] as? [String: Any] ?? [:] }

/// A weaver process started from the built binary, on a free port, with its own data directory.
final class WeaverProcess: @unchecked Sendable {
    let port: Int
    let dataDir: String
    let extraArgs: [String]
    private(set) var process: Process?
    let logPath: String

    /// Extra environment variables for the process (on top of this one's).
    let extraEnvironment: [String: String]

    init(dataDir: String? = nil, args: [String] = [], environment: [String: String] = [:]) throws {
        port = freePort()
        self.dataDir = dataDir ?? NSTemporaryDirectory() + "fabric-e2e-\(UUID().uuidString.prefix(8))"
        extraArgs = args
        extraEnvironment = environment
        logPath = self.dataDir + ".weaver.log"
        try FileManager.default.createDirectory(atPath: self.dataDir, withIntermediateDirectories: true)
    }

    var client: Client { Client(base: "http://127.0.0.1:\(port)") }

    /// Starts weaver and waits until /health answers.
    func start() async throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: buildDirectory + "/weaver")
        p.arguments = ["--server-address", "127.0.0.1:\(port)", "--data-dir", dataDir] + extraArgs
        if !extraEnvironment.isEmpty {
            p.environment = ProcessInfo.processInfo.environment.merging(extraEnvironment) { _, new in new }
        }
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        let log = FileHandle(forWritingAtPath: logPath)!
        log.seekToEndOfFile()
        p.standardOutput = log
        p.standardError = log
        try p.run()
        process = p
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline {
            if let r = try? await client.get("/health"), r.status == 200 { return }
            guard p.isRunning else { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw WeaverFailed(log: (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "")
    }

    /// Stops weaver with a signal and waits for it to exit.
    func stop(signal: Int32 = SIGTERM) {
        guard let p = process, p.isRunning else { return }
        kill(p.processIdentifier, signal)
        p.waitUntilExit()
        process = nil
    }

    var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    deinit { stop(signal: SIGKILL) }
}

struct WeaverFailed: Error, CustomStringConvertible {
    let log: String
    var description: String { "weaver did not become healthy; its log:\n\(log)" }
}
