// Real loopback HTTP servers for the provider tests: FabricHTTP's server on 127.0.0.1 and a free port, answering
// through a test responder.
import FabricCore
import FabricHTTP
import FabricLog
import Foundation
import Synchronization

@testable import FabricProviders

/// A responder built from one closure (scripted answers in a test).
struct ClosureResponder: HTTPResponder {
    let handler: @Sendable (Request) async throws -> Response
    func respond(to request: Request) async throws -> Response { try await handler(request) }
}

/// Starts a FabricHTTP server on 127.0.0.1 with a free port, runs `body` with its base URL, and stops it.
func withLoopbackServer<T>(
    _ responder: some HTTPResponder, _ body: (_ baseURL: String) async throws -> T
) async throws -> T {
    let server = HTTPServer(
        settings: HTTPServerSettings(address: "127.0.0.1:0", threadCount: 2, bodyBytesMax: 8 << 20),
        responder: responder)
    try server.start()
    do {
        let result = try await body("http://127.0.0.1:\(server.port)")
        await server.shutdown(gracePeriod: .milliseconds(200))
        return result
    } catch {
        await server.shutdown(gracePeriod: .milliseconds(200))
        throw error
    }
}

/// Starts a server answering with `handler`.
func withLoopbackServer<T>(
    handler: @escaping @Sendable (Request) async throws -> Response, _ body: (_ baseURL: String) async throws -> T
) async throws -> T {
    try await withLoopbackServer(ClosureResponder(handler: handler), body)
}

/// A sleep seam that records each wait and returns at once.
final class RecordedSleeps: Sendable {
    private let waits = Mutex<[Duration]>([])
    var all: [Duration] { waits.withLock { $0 } }
    var sleep: RetryingTransport.Sleep { { d in self.waits.withLock { $0.append(d) } } }
}

/// Counts calls and remembers the most that ran at once.
final class Gauge: Sendable {
    private let state = Mutex<(current: Int, max: Int, total: Int)>((0, 0, 0))
    func enter() {
        state.withLock {
            $0.current += 1; $0.total += 1; $0.max = Swift.max($0.max, $0.current)
        }
    }
    func leave() { state.withLock { $0.current -= 1 } }
    var max: Int { state.withLock { $0.max } }
    var total: Int { state.withLock { $0.total } }
}

/// A test logger that keeps its lines.
func memoryLogger(level: LogLevel = .debug) -> (Logger, MemorySink) {
    let sink = MemorySink()
    return (Logger(component: "providers-test", level: level, sink: sink), sink)
}

/// A retrying transport over a fresh libcurl client with recorded sleeps.
func retrying(
    _ policy: RetryPolicy = RetryPolicy(), clock: any WallClock = ManualClock(), concurrencyMax: Int = 8,
    responseBytesMax: Int = CurlHTTPClient.responseBytesMaxDefault, logger: Logger? = nil,
    sleeps: RecordedSleeps = RecordedSleeps()
) -> RetryingTransport {
    RetryingTransport(
        CurlHTTPClient(responseBytesMax: responseBytesMax), provider: "test", policy: policy,
        concurrencyMax: concurrencyMax, logger: logger ?? memoryLogger().0, clock: clock,
        random: SplitMix64(seed: 7), sleep: sleeps.sleep)
}
