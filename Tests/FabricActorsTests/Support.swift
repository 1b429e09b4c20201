import Distributed
import FabricActors
import FabricCore
import FabricLog
import Foundation
import Testing

// MARK: sample actors

/// A value with nested collections and optionals, to check argument round trips.
struct Shape: Codable, Equatable, Sendable {
    var name: String
    var corners: [Point]
    var tags: [String: Int]
    var note: String?
}

struct Point: Codable, Equatable, Sendable {
    var x: Int
    var y: Double
}

/// A value whose Codable form leaves out `scratch`: a round trip through the codec resets it to 0.
struct Scratchpad: Codable, Equatable, Sendable {
    var kept: Int
    var scratch = 0

    enum CodingKeys: String, CodingKey { case kept }

    init(kept: Int, scratch: Int) {
        self.kept = kept
        self.scratch = scratch
    }
}

/// An error that is neither a FabricError nor an ActorCallError.
struct Oops: Error, CustomStringConvertible {
    let why: String
    var description: String { "oops: \(why)" }
}

/// The test actor: one method per kind of argument and result.
distributed actor Counter {
    typealias ActorSystem = FabricActorSystem

    var value = 0

    distributed func add(_ n: Int) -> Int {
        value += n
        return value
    }
    distributed func get() -> Int { value }
    distributed func reset() { value = 0 }
    distributed func echo(_ s: String) -> String { s }
    distributed func reversed(_ xs: [Int]) -> [Int] { xs.reversed() }
    distributed func translate(_ shape: Shape, dx: Int, dy: Double) -> Shape {
        var s = shape
        s.corners = s.corners.map { Point(x: $0.x + dx, y: $0.y + dy) }
        return s
    }
    distributed func describe(_ n: Int?) -> String? { n.map { "n=\($0)" } }
    distributed func mix(_ a: Int8, _ b: UInt64, _ c: Bool, _ d: Double, _ e: [String: [Int]]) -> String {
        "\(a) \(b) \(c) \(d) \(e.keys.sorted().map { "\($0):\(e[$0]!)" }.joined(separator: ","))"
    }
    distributed func pad(_ p: Scratchpad) -> Scratchpad { p }
    distributed func fail(field: String) throws -> Int {
        throw FabricError.invalid(field, "\(field) is not acceptable")
    }
    distributed func failPlain() throws { throw Oops(why: "plain") }
    distributed func sleep(milliseconds: Int) async throws -> Int {
        try await Task.sleep(for: .milliseconds(milliseconds))
        return milliseconds
    }
}

/// An actor that calls another actor (nested calls across nodes).
distributed actor Relay {
    typealias ActorSystem = FabricActorSystem

    distributed func addTwice(on counter: ActorID, _ n: Int) async throws -> Int {
        let c = try Counter.resolve(id: counter, using: actorSystem)
        _ = try await c.add(n)
        return try await c.add(n)
    }
}

// MARK: helpers

/// A logger that keeps its lines in memory (tests stay quiet).
func quietLogger() -> Logger { Logger(component: "actors-test", level: .warn, sink: MemorySink()) }

/// Runs `body` and returns its error (failing the test when it does not throw) and how long it took.
func failure<T>(_ body: () async throws -> T) async -> (error: (any Error)?, elapsed: Duration) {
    let clock = ContinuousClock()
    let start = clock.now
    do {
        let v = try await body()
        Issue.record("expected an error, got \(v)")
        return (nil, start.duration(to: clock.now))
    } catch {
        return (error, start.duration(to: clock.now))
    }
}

/// The code of an `ActorCallError`, or nil for any other error.
func callCode(_ error: (any Error)?) -> ActorCallError.Code? { (error as? ActorCallError)?.code }

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

/// Whether something accepts TCP connections on 127.0.0.1:`port`.
func portOpen(_ port: Int) -> Bool {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    addr.sin_port = UInt16(port).bigEndian
    let r = withUnsafeMutablePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
        }
    }
    return r == 0
}

/// A nats-server of the test's own, on a free loopback port, in a temporary folder with a pidfile.
final class NATSServer: @unchecked Sendable {
    static let path: String? = {
        let candidates =
            ["/usr/sbin/nats-server", "/usr/bin/nats-server", "/usr/local/bin/nats-server"]
            + (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":").map { "\($0)/nats-server" }
        return candidates.first { FileManager.default.isExecutableFile(atPath: $0) }
    }()
    static var available: Bool { path != nil }
    static let readyTimeout: Duration = .seconds(10)

    let port: Int
    let dir: URL
    /// Extra command-line arguments (TLS, authentication).
    let extraArguments: [String]
    private var process: Process?

    var url: String { "nats://127.0.0.1:\(port)" }
    var pidFile: String { dir.appendingPathComponent("nats.pid").path }

    init(extraArguments: [String] = []) throws {
        self.extraArguments = extraArguments
        port = freePort()
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("fabric-nats-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    }

    /// Starts the server and waits until it accepts connections.
    func start() async throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: Self.path!)
        p.arguments =
            [
                "-a", "127.0.0.1", "-p", String(port), "-P", pidFile, "-l", dir.appendingPathComponent("nats.log").path,
            ] + extraArguments
        p.currentDirectoryURL = dir
        try p.run()
        process = p
        let clock = ContinuousClock()
        let deadline = clock.now.advanced(by: Self.readyTimeout)
        while clock.now < deadline {
            if portOpen(port) { return }
            try await Task.sleep(for: .milliseconds(20))
        }
        stop()
        throw FabricError(.unavailable, "nats-server did not start on port \(port)")
    }

    /// Stops the server with SIGTERM and waits for it to exit.
    func stop() {
        guard let p = process else { return }
        process = nil
        if p.isRunning { p.terminate() }
        p.waitUntilExit()
    }

    /// Stops the server and removes its folder.
    func destroy() {
        stop()
        try? FileManager.default.removeItem(at: dir)
    }
}

/// Runs `body` with a started nats-server and always stops it.
func withNATSServer<T>(extraArguments: [String] = [], _ body: (NATSServer) async throws -> T) async throws -> T {
    guard NATSServer.available else {
        throw FabricError(.failedPrecondition, "nats-server is not installed (scripts/bootstrap installs it)")
    }
    let server = try NATSServer(extraArguments: extraArguments)
    defer { server.destroy() }
    try await server.start()
    return try await body(server)
}

/// NATS options for tests: quick reconnects, short connect timeout.
func testOptions(_ server: NATSServer, name: String) -> NATSOptions {
    NATSOptions(
        urls: [server.url], name: name, connectTimeout: .seconds(2), reconnect: .unlimited(wait: .milliseconds(100)),
        reconnectJitter: .milliseconds(20))
}

/// Two actor systems of one kind: `serving` hosts the actors, `calling` calls them (different nodes).
enum SystemKind: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case local, nats
    var testDescription: String { rawValue }
}

/// Runs `body` with a serving and a calling system of `kind`, then shuts both down (and the server, for NATS).
func withSystems(
    _ kind: SystemKind, settings: ActorSystemSettings = .default,
    _ body: (FabricActorSystem, FabricActorSystem) async throws -> Void
) async throws {
    switch kind {
    case .local:
        let network = LoopbackNetwork()
        let serving = try LocalActorSystem(node: "n1", network: network, settings: settings, logger: quietLogger())
        let calling = try LocalActorSystem(node: "n2", network: network, settings: settings, logger: quietLogger())
        do {
            try await body(serving, calling)
        } catch {
            await serving.shutdown()
            await calling.shutdown()
            throw error
        }
        await serving.shutdown()
        await calling.shutdown()
    case .nats:
        try await withNATSServer { server in
            let serving = try await NATSActorSystem.connect(
                node: "n1", options: testOptions(server, name: "serving"), settings: settings, logger: quietLogger())
            let calling = try await NATSActorSystem.connect(
                node: "n2", options: testOptions(server, name: "calling"), settings: settings, logger: quietLogger())
            do {
                try await body(serving, calling)
            } catch {
                await serving.shutdown()
                await calling.shutdown()
                throw error
            }
            await serving.shutdown()
            await calling.shutdown()
        }
    }
}

/// Creates a Counter on `serving` and returns it with a proxy for it on `calling` (so calls cross the transport).
func counter(
    on serving: FabricActorSystem, from calling: FabricActorSystem, named name: String? = nil
) async throws -> (Counter, Counter) {
    let local =
        try name.map { n in try serving.makeActor(named: n) { Counter(actorSystem: serving) } }
        ?? Counter(actorSystem: serving)
    try await serving.flush()
    return (local, try Counter.resolve(id: local.id, using: calling))
}
