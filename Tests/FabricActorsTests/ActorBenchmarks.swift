import Distributed
import FabricActors
import FabricCore
import Foundation
import Testing

/// Round trips per second over a real nats-server: a trivial distributed call against a raw request/reply of an
/// envelope-sized payload, at 1 and 64 concurrent callers. Opt-in (`FABRIC_BENCH_ACTORS=1`); prints, asserts no timings.
@Suite(
    "Actor round-trip throughput", .serialized,
    .enabled(if: ProcessInfo.processInfo.environment["FABRIC_BENCH_ACTORS"] != nil))
struct ActorBenchmarks {
    static let seconds = Double(ProcessInfo.processInfo.environment["FABRIC_BENCH_SECONDS"] ?? "") ?? 2
    static let concurrency = [1, 64]

    /// Runs `call` from `callers` concurrent tasks for `seconds` and returns calls per second.
    static func measure(callers: Int, _ call: @escaping @Sendable () async throws -> Void) async throws -> Double {
        let clock = ContinuousClock()
        let end = clock.now.advanced(by: .milliseconds(Int(seconds * 1000)))
        let start = clock.now
        let total = try await withThrowingTaskGroup(of: Int.self) { group in
            for _ in 0..<callers {
                group.addTask {
                    var n = 0
                    while clock.now < end {
                        try await call()
                        n += 1
                    }
                    return n
                }
            }
            return try await group.reduce(0, +)
        }
        let elapsed = start.duration(to: clock.now)
        let (s, atto) = elapsed.components
        return Double(total) / (Double(s) + Double(atto) / 1e18)
    }

    @Test("distributed call on the loopback system")
    func loopback() async throws {
        let system = try LocalActorSystem(node: "bench", logger: quietLogger())
        let local = Counter(actorSystem: system)
        defer { withExtendedLifetime(local) {} }
        let remote = try Counter.resolve(id: local.id, using: system)
        var lines: [String] = []
        for n in Self.concurrency {
            let rate = try await Self.measure(callers: n) { _ = try await remote.get() }
            lines.append("loopback callers=\(n) actor_calls_per_s=\(Int(rate))")
        }
        print(lines.map { "bench-actors: " + $0 }.joined(separator: "\n"))
        await system.shutdown()
    }

    @Test("distributed call vs raw NATS request/reply", arguments: [true, false])
    func roundTrips(sendAsap: Bool) async throws {
        try await withNATSServer { server in
            var options = testOptions(server, name: "serving")
            options.sendAsap = sendAsap
            let serving = try await NATSActorSystem.connect(node: "bench-1", options: options, logger: quietLogger())
            options.name = "calling"
            let calling = try await NATSActorSystem.connect(node: "bench-2", options: options, logger: quietLogger())
            let local = Counter(actorSystem: serving)
            defer { withExtendedLifetime(local) {} }
            try await serving.flush()
            let remote = try Counter.resolve(id: local.id, using: calling)
            #expect(try await remote.get() == 0)

            // The raw path: the same NATS connections, a responder echoing an envelope-sized payload.
            let responder = serving.connection!
            let requester = calling.connection!
            let payload = WireCodec.encode(
                .call(
                    CallEnvelope(
                        callID: 1, recipient: local.id, target: String(repeating: "t", count: 40),
                        genericSubstitutions: ["16FabricActors15NATSActorSystemC"], arguments: [],
                        timeoutMilliseconds: 5000)))
            let sub = try responder.subscribe(subject: "fabric.bench.raw") { msg in
                if let reply = msg.replyTo { try? responder.publish(subject: reply, data: msg.data) }
            }
            defer { sub.cancel() }
            try await responder.flush(timeout: .seconds(1))

            var lines = ["sendAsap=\(sendAsap) payload \(payload.count) bytes, \(Self.seconds) s per row"]
            for n in Self.concurrency {
                let actor = try await Self.measure(callers: n) { _ = try await remote.get() }
                let raw = try await Self.measure(callers: n) {
                    _ = try await requester.request(subject: "fabric.bench.raw", data: payload, timeout: .seconds(5))
                }
                lines.append(
                    "callers=\(n) actor_calls_per_s=\(Int(actor)) raw_requests_per_s=\(Int(raw)) "
                        + "actor/raw=\(String(format: "%.2f", actor / raw))")
                #expect(actor > 0)
                #expect(raw > 0)
            }
            // cnats' own blocking request from one thread, for reference.
            let blocking = try await Task.detached {
                let clock = ContinuousClock()
                let start = clock.now
                var n = 0
                while start.duration(to: clock.now) < .milliseconds(Int(Self.seconds * 1000)) {
                    _ = try requester.requestBlocking(subject: "fabric.bench.raw", data: payload, timeout: .seconds(5))
                    n += 1
                }
                let (s, atto) = start.duration(to: clock.now).components
                return Double(n) / (Double(s) + Double(atto) / 1e18)
            }.value
            lines.append("callers=1 cnats_blocking_requests_per_s=\(Int(blocking))")
            print(lines.map { "bench-actors: " + $0 }.joined(separator: "\n"))
            await serving.shutdown()
            await calling.shutdown()
        }
    }
}
