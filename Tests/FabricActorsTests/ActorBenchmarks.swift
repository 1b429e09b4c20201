import Distributed
import FabricActors
import FabricCore
import Foundation
import Synchronization
import Testing

/// Round trips over a real nats-server: a trivial distributed call beside a raw cnats request/reply carrying the
/// very bytes that call puts on the wire, at 1 and 64 concurrent callers, in the same run. Each row has calls/s, p50
/// and p99 of one call, and the actor rows their calls/s relative to raw. Opt-in (`FABRIC_BENCH_ACTORS=1`); prints,
/// asserts no timings.
@Suite(
    "Actor round-trip throughput", .serialized,
    .enabled(if: ProcessInfo.processInfo.environment["FABRIC_BENCH_ACTORS"] != nil))
struct ActorBenchmarks {
    static let seconds = Double(ProcessInfo.processInfo.environment["FABRIC_BENCH_SECONDS"] ?? "") ?? 2
    static let concurrency = [1, 64]
    /// Longest wait for the sniffer to see one call and its reply.
    static let sniffTimeout: Duration = .seconds(5)

    /// One measured row: how many calls finished and the latency of each.
    struct Measurement {
        var calls: Int
        var elapsed: Duration
        var latencies: LatencyHistogram

        var callsPerSecond: Double { Double(calls) / elapsed.seconds }
    }

    /// Runs `call` from `callers` concurrent tasks for `seconds`, timing every call (one histogram per caller, so
    /// memory stays bounded however many calls finish).
    static func measure(callers: Int, _ call: @escaping @Sendable () async throws -> Void) async throws -> Measurement {
        let clock = ContinuousClock()
        let start = clock.now
        let end = start.advanced(by: .milliseconds(Int(seconds * 1000)))
        let merged = try await withThrowingTaskGroup(of: LatencyHistogram.self) { group in
            for _ in 0..<callers {
                group.addTask {
                    var h = LatencyHistogram()
                    var t0 = clock.now
                    while t0 < end {
                        try await call()
                        let t1 = clock.now
                        h.record(t0.duration(to: t1))
                        t0 = t1
                    }
                    return h
                }
            }
            var all = LatencyHistogram()
            for try await h in group { all.merge(h) }
            return all
        }
        return Measurement(calls: merged.count, elapsed: start.duration(to: clock.now), latencies: merged)
    }

    /// The same on one dedicated thread, for cnats' blocking request (which must not run on the cooperative pool).
    static func measureBlocking(_ call: @escaping @Sendable () throws -> Void) async throws -> Measurement {
        try await withCheckedThrowingContinuation { (k: CheckedContinuation<Measurement, any Error>) in
            let thread = Thread {
                let clock = ContinuousClock()
                let start = clock.now
                let end = start.advanced(by: .milliseconds(Int(seconds * 1000)))
                var h = LatencyHistogram()
                var t0 = start
                do {
                    while t0 < end {
                        try call()
                        let t1 = clock.now
                        h.record(t0.duration(to: t1))
                        t0 = t1
                    }
                    k.resume(
                        returning: Measurement(calls: h.count, elapsed: start.duration(to: clock.now), latencies: h))
                } catch {
                    k.resume(throwing: error)
                }
            }
            thread.start()
        }
    }

    @Test("distributed call on the loopback system")
    func loopback() async throws {
        let system = try LocalActorSystem(node: "bench", logger: quietLogger())
        let local = Counter(actorSystem: system)
        defer { withExtendedLifetime(local) {} }
        let remote = try Counter.resolve(id: local.id, using: system)
        var table = BenchTable(
            title: "in one process (LocalActorSystem: encode, loopback, decode), \(Self.seconds) s per row")
        for n in Self.concurrency {
            let m = try await Self.measure(callers: n) { _ = try await remote.get() }
            #expect(m.calls > 0)
            table.add(path: "loopback actor", callers: n, m, raw: nil)
        }
        table.print()
        await system.shutdown()
    }

    @Test("distributed call vs raw NATS request/reply")
    func roundTrips() async throws {
        try await withNATSServer { server in
            var table: BenchTable?
            for sendAsap in [true, false] {
                var options = testOptions(server, name: "serving")
                options.sendAsap = sendAsap
                let serving = try await NATSActorSystem.connect(
                    node: "bench-1", options: options, logger: quietLogger())
                options.name = "calling"
                let calling = try await NATSActorSystem.connect(
                    node: "bench-2", options: options, logger: quietLogger())
                let local = Counter(actorSystem: serving)
                defer { withExtendedLifetime(local) {} }
                try await serving.flush()
                let remote = try Counter.resolve(id: local.id, using: calling)
                #expect(try await remote.get() == 0)

                // The raw path: the same two connections, the request and reply bytes of one real call.
                let (request, reply) = try await Self.sniff(server, subject: local.id.subject) {
                    let value = try await remote.get()
                    #expect(value == 0)
                }
                let responder = serving.connection!
                let requester = calling.connection!
                let sub = try responder.subscribe(subject: "fabric.bench.raw") { msg in
                    if let to = msg.replyTo { try? responder.publish(subject: to, data: reply) }
                }
                defer { sub.cancel() }
                try await responder.flush(timeout: .seconds(1))
                #expect(
                    try await requester.request(subject: "fabric.bench.raw", data: request, timeout: .seconds(5))
                        == reply)

                if table == nil {
                    table = BenchTable(
                        title: "over nats-server on loopback: request \(request.count) bytes, reply \(reply.count) "
                            + "bytes (the bytes of one Counter.get call), \(Self.seconds) s per row")
                }
                let mode = sendAsap ? "sendAsap" : "batched"
                for n in Self.concurrency {
                    let raw = try await Self.measure(callers: n) {
                        _ = try await requester.request(
                            subject: "fabric.bench.raw", data: request, timeout: .seconds(5))
                    }
                    let actor = try await Self.measure(callers: n) { _ = try await remote.get() }
                    #expect(raw.calls > 0)
                    #expect(actor.calls > 0)
                    table!.add(path: "raw cnats request (\(mode))", callers: n, raw, raw: nil)
                    table!.add(path: "distributed actor (\(mode))", callers: n, actor, raw: raw)
                }
                // cnats' own blocking request from one thread, for reference.
                let blocking = try await Self.measureBlocking {
                    _ = try requester.requestBlocking(subject: "fabric.bench.raw", data: request, timeout: .seconds(5))
                }
                table!.add(path: "cnats blocking request (\(mode))", callers: 1, blocking, raw: nil)
                await serving.shutdown()
                await calling.shutdown()
            }
            table?.print()
        }
    }

    /// Captures the request and reply bytes of the call `body` makes to `subject`, through a third connection
    /// subscribed to everything.
    static func sniff(
        _ server: NATSServer, subject: String, _ body: () async throws -> Void
    ) async throws -> (request: [UInt8], reply: [UInt8]) {
        let sniffer = try await NATSConnection.connect(testOptions(server, name: "sniffer"), logger: quietLogger())
        let seen = Mutex<(request: [UInt8]?, reply: [UInt8]?)>((nil, nil))
        let sub = try sniffer.subscribe(subject: ">") { msg in
            switch try? WireCodec.decode(msg.data) {
            case .call where msg.subject == subject: seen.withLock { $0.request = $0.request ?? msg.data }
            case .reply: seen.withLock { $0.reply = $0.reply ?? msg.data }
            default: break
            }
        }
        try await sniffer.flush(timeout: .seconds(1))
        try await body()
        let clock = ContinuousClock()
        let deadline = clock.now.advanced(by: sniffTimeout)
        var got = seen.withLock { $0 }
        while got.request == nil || got.reply == nil, clock.now < deadline {
            try await Task.sleep(for: .milliseconds(5))
            got = seen.withLock { $0 }
        }
        sub.cancel()
        await sniffer.close()
        guard let request = got.request, let reply = got.reply else {
            throw FabricError(.unavailable, "did not see the call and its reply on NATS")
        }
        return (request, reply)
    }
}

/// Latencies in a log-linear histogram: exact below 128 ns, then 64 buckets per power of two (at most 1/64 = 1.6 %
/// above the true value), a fixed 30 KB however many calls are recorded.
struct LatencyHistogram: Sendable {
    static let subBucketBits = 6
    static let subBuckets = 1 << subBucketBits
    /// Latencies longer than this (about 18 minutes) count as this.
    static let nanosecondsMax: UInt64 = 1 << 40
    static let bucketCount = index(of: nanosecondsMax) + 1

    private(set) var counts = [UInt64](repeating: 0, count: bucketCount)
    private(set) var count = 0

    /// The bucket of a latency in nanoseconds.
    static func index(of ns: UInt64) -> Int {
        let v = min(ns, nanosecondsMax)
        if v < UInt64(2 * subBuckets) { return Int(v) }
        let exponent = UInt64.bitWidth - 1 - v.leadingZeroBitCount
        let shift = exponent - subBucketBits
        let mantissa = Int(v >> UInt64(shift)) - subBuckets
        return 2 * subBuckets + (shift - 1) * subBuckets + mantissa
    }

    /// The highest latency in nanoseconds that falls in bucket `index`.
    static func upperBound(of index: Int) -> UInt64 {
        if index < 2 * subBuckets { return UInt64(index) }
        let shift = (index - 2 * subBuckets) / subBuckets + 1
        let mantissa = UInt64((index - 2 * subBuckets) % subBuckets + subBuckets)
        return ((mantissa + 1) << UInt64(shift)) - 1
    }

    mutating func record(_ d: Duration) {
        let (s, atto) = d.components
        let ns = s < 0 ? 0 : UInt64(s) &* 1_000_000_000 &+ UInt64(max(0, atto) / 1_000_000_000)
        counts[Self.index(of: ns)] += 1
        count += 1
    }

    mutating func merge(_ other: LatencyHistogram) {
        for i in counts.indices { counts[i] += other.counts[i] }
        count += other.count
    }

    /// The latency at or below which a fraction `p` of the calls finished, in nanoseconds (0 when empty).
    func percentile(_ p: Double) -> UInt64 {
        guard count > 0 else { return 0 }
        let rank = max(1, UInt64((p * Double(count)).rounded(.up)))
        var seen: UInt64 = 0
        for (i, c) in counts.enumerated() where c > 0 {
            seen += c
            if seen >= rank { return Self.upperBound(of: i) }
        }
        return Self.upperBound(of: counts.count - 1)
    }
}

/// The aligned table `make bench-actors` prints.
struct BenchTable {
    struct Row {
        var path: String
        var callers: Int
        var callsPerSecond: Double
        var p50: UInt64
        var p99: UInt64
        var vsRaw: Double?
    }

    var title: String
    var rows: [Row] = []

    mutating func add(path: String, callers: Int, _ m: ActorBenchmarks.Measurement, raw: ActorBenchmarks.Measurement?) {
        rows.append(
            Row(
                path: path, callers: callers, callsPerSecond: m.callsPerSecond, p50: m.latencies.percentile(0.5),
                p99: m.latencies.percentile(0.99), vsRaw: raw.map { m.callsPerSecond / $0.callsPerSecond }))
    }

    func print() {
        let width = max(4, rows.map(\.path.count).max() ?? 0)
        func pad(_ s: String, _ n: Int, left: Bool = false) -> String {
            let fill = String(repeating: " ", count: max(0, n - s.count))
            return left ? s + fill : fill + s
        }
        func us(_ ns: UInt64) -> String { String(format: "%.1f", Double(ns) / 1000) }
        var lines = [
            title,
            pad("path", width, left: true) + pad("callers", 9) + pad("calls/s", 11) + pad("p50 us", 10)
                + pad("p99 us", 10) + pad("calls/s vs raw", 16),
        ]
        for r in rows {
            lines.append(
                pad(r.path, width, left: true) + pad(String(r.callers), 9) + pad(String(Int(r.callsPerSecond)), 11)
                    + pad(us(r.p50), 10) + pad(us(r.p99), 10)
                    + pad(r.vsRaw.map { String(format: "%.2f", $0) } ?? "-", 16))
        }
        Swift.print(lines.map { "bench-actors: " + $0 }.joined(separator: "\n"))
    }
}

extension Duration {
    /// The duration in seconds, as a Double.
    fileprivate var seconds: Double {
        let (s, atto) = components
        return Double(s) + Double(atto) / 1e18
    }
}

@Suite("Latency histogram")
struct LatencyHistogramTests {
    @Test(
        "bucket bounds hold every value within 1/64 above it", arguments: [0, 1, 127, 128, 129, 1000, 65_535, 1 << 30])
    func bounds(ns: Int) {
        let v = UInt64(ns)
        let i = LatencyHistogram.index(of: v)
        let hi = LatencyHistogram.upperBound(of: i)
        #expect(hi >= v)
        #expect(Double(hi - v) <= Double(v) / 64 + 0.5)
        if i > 0 { #expect(LatencyHistogram.upperBound(of: i - 1) < v) }
    }

    @Test("percentiles of 1...1000 microseconds")
    func percentiles() {
        var h = LatencyHistogram()
        for us in 1...1000 { h.record(.microseconds(us)) }
        #expect(h.count == 1000)
        let p50 = Double(h.percentile(0.5))
        let p99 = Double(h.percentile(0.99))
        #expect(p50 >= 500_000 && p50 <= 500_000 * (1 + 1.0 / 64))
        #expect(p99 >= 990_000 && p99 <= 990_000 * (1 + 1.0 / 64))
        var twice = h
        twice.merge(h)
        #expect(twice.count == 2000)
        #expect(twice.percentile(0.5) == h.percentile(0.5))
    }
}
