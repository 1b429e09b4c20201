// CurlHTTPClient and RetryingTransport against real loopback servers: FabricHTTP's server scripted per test, and
// `openssl s_server` for TLS with a CA and a client certificate held in memory.
import FabricCore
import FabricHTTP
import FabricLog
import Foundation
import Synchronization
import Testing

@testable import FabricProviders

/// Answers from a script, one entry per request, repeating the last entry; counts the requests.
final class Script: Sendable {
    private let state: Mutex<(steps: [Response], served: Int)>
    init(_ steps: [Response]) { state = Mutex((steps, 0)) }
    var served: Int { state.withLock { $0.served } }
    func next() -> Response {
        state.withLock { s in
            defer { s.served += 1 }
            return s.steps[min(s.served, s.steps.count - 1)]
        }
    }
}

private func status(_ code: Int, _ headers: HTTPHeaders = [:], body: String = "") -> Response {
    Response(status: code, headers: headers, body: Data(body.utf8))
}

@Suite("CurlHTTPClient")
struct CurlHTTPClientTests {
    @Test("sends method, headers and body; collects status, response headers and body")
    func roundTrip() async throws {
        try await withLoopbackServer(handler: { request in
            var headers: HTTPHeaders = ["Content-Type": "application/json", "X-Echo-Method": request.method.rawValue]
            headers.add(name: "X-Echo-Header", value: request.headers["x-fabric-test"] ?? "none")
            headers.add(name: "X-Echo-Query", value: request.query["q"] ?? "none")
            return Response(status: 201, headers: headers, body: request.body + Data(" echoed".utf8))
        }) { base in
            let client = CurlHTTPClient()
            let response = try await client.send(
                HTTPRequest(
                    method: "PUT", url: "\(base)/things/1?q=a%20b", headers: [("X-Fabric-Test", "yes")],
                    body: Data("hello".utf8)))
            #expect(response.status == 201)
            #expect(response.header("content-type") == "application/json")
            #expect(response.header("X-Echo-Method") == "PUT")
            #expect(response.header("x-echo-header") == "yes")
            #expect(response.header("x-echo-query") == "a b")
            #expect(String(decoding: response.body, as: UTF8.self) == "hello echoed")

            let deleted = try await client.send(HTTPRequest(method: "DELETE", url: "\(base)/things/1"))
            #expect(deleted.header("x-echo-method") == "DELETE")
            let posted = try await client.send(HTTPRequest(method: "POST", url: "\(base)/things"))
            #expect(posted.header("x-echo-method") == "POST")
            #expect(posted.body == Data(" echoed".utf8))
        }
    }

    @Test("a response slower than the request's timeout fails as .timeout, on time")
    func timeout() async throws {
        // The server answers after 6 s; the 300 ms timeout must end the call well before that (a loaded 2-core
        // machine can stall the caller for a second or two, so the bound is loose).
        try await withLoopbackServer(handler: { _ in
            try await Task.sleep(for: .seconds(6))
            return status(200)
        }) { base in
            let started = ContinuousClock.now
            let error = await #expect(throws: HTTPTransportError.self) {
                try await CurlHTTPClient().send(
                    HTTPRequest(method: "GET", url: base + "/slow", timeout: .milliseconds(300)))
            }
            #expect(error?.kind == .timeout)
            #expect(error?.isRetryable == true)
            #expect(ContinuousClock.now - started < .seconds(5))
        }
    }

    @Test("a body over the limit fails as .responseTooLarge; one at the limit arrives whole")
    func bodyLimit() async throws {
        let limit = 64 << 10
        try await withLoopbackServer(handler: { request in
            let size = Int(request.query["size"] ?? "0") ?? 0
            return Response(status: 200, body: Data(repeating: 0x61, count: size))
        }) { base in
            let client = CurlHTTPClient(responseBytesMax: limit)
            let exact = try await client.send(HTTPRequest(method: "GET", url: "\(base)/blob?size=\(limit)"))
            #expect(exact.body.count == limit)
            let error = await #expect(throws: HTTPTransportError.self) {
                try await client.send(HTTPRequest(method: "GET", url: "\(base)/blob?size=\(4 * limit)"))
            }
            #expect(error?.kind == .responseTooLarge)
            #expect(error?.isRetryable == false)
        }
    }

    @Test("nothing listening fails as .connection")
    func refused() async throws {
        let port = try freeLoopbackPort()
        let error = await #expect(throws: HTTPTransportError.self) {
            try await CurlHTTPClient().send(HTTPRequest(method: "GET", url: "http://127.0.0.1:\(port)/"))
        }
        #expect(error?.kind == .connection)
    }

    @Test("a header with a line break is refused before sending")
    func headerInjection() async throws {
        let error = await #expect(throws: HTTPTransportError.self) {
            try await CurlHTTPClient().send(
                HTTPRequest(method: "GET", url: "http://127.0.0.1:1/", headers: [("X-A", "b\r\nX-Injected: 1")]))
        }
        #expect(error?.kind == .invalidRequest)
    }

    @Test("cancelling the caller aborts a transfer in flight")
    func cancellation() async throws {
        // The server answers after 6 s; a cancelled call must end well before that (loose bound, as above).
        try await withLoopbackServer(handler: { _ in
            try await Task.sleep(for: .seconds(6))
            return status(200)
        }) { base in
            let started = ContinuousClock.now
            let task = Task { try await CurlHTTPClient().send(HTTPRequest(method: "GET", url: base + "/slow")) }
            try await Task.sleep(for: .milliseconds(200))
            task.cancel()
            let result = await task.result
            #expect(throws: (any Error).self) { try result.get() }
            #expect((try? result.get()) == nil)
            if case .failure(let e as HTTPTransportError) = result { #expect(e.kind == .cancelled) }
            #expect(ContinuousClock.now - started < .seconds(5))
        }
    }
}

@Suite("RetryingTransport")
struct RetryingTransportTests {
    @Test("429 with Retry-After in seconds, then 200: waits exactly what the server asked")
    func retryAfterSeconds() async throws {
        let script = Script([status(429, ["Retry-After": "2"]), status(200, body: "ok")])
        try await withLoopbackServer(handler: { _ in script.next() }) { base in
            let sleeps = RecordedSleeps()
            let response = try await retrying(sleeps: sleeps).send(HTTPRequest(method: "GET", url: base + "/x"))
            #expect(response.status == 200)
            #expect(String(decoding: response.body, as: UTF8.self) == "ok")
            #expect(script.served == 2)
            #expect(sleeps.all == [.seconds(2)])
        }
    }

    @Test("503 with Retry-After as an HTTP date is measured from the injected clock")
    func retryAfterDate() async throws {
        // 1_800_000_000 s is Fri, 15 Jan 2027 08:00:00 GMT; the header asks for 7 s later.
        let clock = ManualClock(Timestamp(millisecondsSinceEpoch: 1_800_000_000_000))
        let script = Script([status(503, ["Retry-After": "Fri, 15 Jan 2027 08:00:07 GMT"]), status(200)])
        try await withLoopbackServer(handler: { _ in script.next() }) { base in
            let sleeps = RecordedSleeps()
            let response = try await retrying(clock: clock, sleeps: sleeps).send(
                HTTPRequest(method: "POST", url: base + "/x", body: Data("a=b".utf8)))
            #expect(response.status == 200)
            #expect(sleeps.all == [.seconds(7)])
        }
    }

    @Test("503 then 200 without Retry-After: one jittered backoff within [base/2, base]")
    func backoffWithoutRetryAfter() async throws {
        let script = Script([status(503), status(503), status(200)])
        try await withLoopbackServer(handler: { _ in script.next() }) { base in
            let sleeps = RecordedSleeps()
            let policy = RetryPolicy(backoffBase: .milliseconds(400), backoffMax: .seconds(10))
            let response = try await retrying(policy, sleeps: sleeps).send(HTTPRequest(method: "GET", url: base))
            #expect(response.status == 200)
            #expect(script.served == 3)
            #expect(sleeps.all.count == 2)
            #expect(sleeps.all[0] >= .milliseconds(200) && sleeps.all[0] <= .milliseconds(400))
            #expect(sleeps.all[1] >= .milliseconds(400) && sleeps.all[1] <= .milliseconds(800))
        }
    }

    @Test("attempts are bounded: a server that always fails gets attemptsMax requests and its last answer returns")
    func boundedAttempts() async throws {
        let script = Script([status(500, body: "broken")])
        try await withLoopbackServer(handler: { _ in script.next() }) { base in
            let sleeps = RecordedSleeps()
            let response = try await retrying(RetryPolicy(attemptsMax: 3), sleeps: sleeps).send(
                HTTPRequest(method: "GET", url: base))
            #expect(response.status == 500)
            #expect(script.served == 3)
            #expect(sleeps.all.count == 2)
        }
    }

    @Test("a Retry-After longer than retryAfterMax is not waited out: the 429 goes back to the driver")
    func retryAfterTooLong() async throws {
        let script = Script([status(429, ["Retry-After": "3600"]), status(200)])
        try await withLoopbackServer(handler: { _ in script.next() }) { base in
            let sleeps = RecordedSleeps()
            let response = try await retrying(sleeps: sleeps).send(HTTPRequest(method: "GET", url: base))
            #expect(response.status == 429)
            #expect(response.header("retry-after") == "3600")
            #expect(script.served == 1)
            #expect(sleeps.all.isEmpty)
        }
    }

    @Test("4xx other than 429 is final; a driver's own classifier can make a 403 retryable")
    func classifier() async throws {
        let limited = status(403, body: #"{"error":{"errors":[{"reason":"rateLimitExceeded"}]}}"#)
        let script = Script([limited, limited, status(200)])
        try await withLoopbackServer(handler: { _ in script.next() }) { base in
            let plain = try await retrying().send(HTTPRequest(method: "GET", url: base))
            #expect(plain.status == 403)
            let policy = RetryPolicy(isRetryableResponse: { r in
                r.status == 403 && String(decoding: r.body, as: UTF8.self).contains("rateLimitExceeded")
            })
            let retried = try await retrying(policy).send(HTTPRequest(method: "GET", url: base))
            #expect(retried.status == 200)
            #expect(script.served == 3)
        }
    }

    @Test("timeouts are retried, then the last transport error is thrown")
    func timeoutsRetried() async throws {
        let gauge = Gauge()
        try await withLoopbackServer(handler: { _ in
            gauge.enter()
            defer { gauge.leave() }
            try await Task.sleep(for: .seconds(2))
            return status(200)
        }) { base in
            let sleeps = RecordedSleeps()
            let error = await #expect(throws: HTTPTransportError.self) {
                try await retrying(RetryPolicy(attemptsMax: 2), sleeps: sleeps).send(
                    HTTPRequest(method: "GET", url: base, timeout: .milliseconds(200)))
            }
            #expect(error?.kind == .timeout)
            #expect(sleeps.all.count == 1)
            #expect(gauge.total == 2)
        }
    }

    @Test("at most concurrencyMax requests of one provider are in flight at once")
    func boundedConcurrency() async throws {
        let gauge = Gauge()
        try await withLoopbackServer(handler: { _ in
            gauge.enter()
            defer { gauge.leave() }
            try await Task.sleep(for: .milliseconds(150))
            return status(200)
        }) { base in
            let transport = retrying(concurrencyMax: 2)
            let statuses = try await withThrowingTaskGroup(of: Int.self) { group in
                for i in 0..<6 {
                    group.addTask { try await transport.send(HTTPRequest(method: "GET", url: "\(base)/\(i)")).status }
                }
                return try await group.reduce(into: [Int]()) { $0.append($1) }
            }
            #expect(statuses == Array(repeating: 200, count: 6))
            #expect(gauge.total == 6)
            #expect(gauge.max == 2)
        }
    }

    @Test("request logs redact Authorization, secret headers and api_key, and never carry the body")
    func redaction() async throws {
        let script = Script([status(429, ["Retry-After": "0"]), status(200)])
        try await withLoopbackServer(handler: { _ in script.next() }) { base in
            let (logger, sink) = memoryLogger(level: .debug)
            let transport = retrying(logger: logger)
            let response = try await transport.send(
                HTTPRequest(
                    method: "POST", url: "\(base)/v1/pods?api_key=SECRET-QUERY&region=us-east-1",
                    headers: [
                        ("Authorization", "Bearer SECRET-TOKEN"), ("X-Session", "SECRET-SESSION"),
                        ("Content-Type", "application/json"),
                    ], body: Data(#"{"password":"SECRET-BODY"}"#.utf8), secretHeaders: ["x-session"]))
            #expect(response.status == 200)
            let lines = sink.lines
            #expect(lines.count == 2)
            for line in lines {
                #expect(!line.contains("SECRET"), "leaked: \(line)")
                #expect(line.contains("api_key=<redacted>&region=us-east-1"))
                #expect(line.contains("Authorization: <redacted>"))
                #expect(line.contains("X-Session: <redacted>"))
                #expect(line.contains("Content-Type: application/json"))
                #expect(line.contains("provider=test"))
            }
            #expect(lines[0].contains("result=429") && lines[0].contains("retry_in_ms=0"))
            #expect(lines[1].contains("result=200") && lines[1].contains("attempt=2"))
        }
    }
}

@Suite("HTTP retry rules")
struct RetryRuleTests {
    @Test(
        "Retry-After values",
        arguments: [
            ("120", Duration.seconds(120)), ("0", .zero), (" 5 ", .seconds(5)),
            ("Fri, 15 Jan 2027 08:01:00 GMT", .seconds(60)), ("Friday, 15-Jan-27 08:00:30 GMT", .seconds(30)),
            ("Fri Jan 15 08:00:10 2027", .seconds(10)), ("Fri, 15 Jan 2027 07:00:00 GMT", .zero),
            ("99999999999999999999", RetryAfter.valueMax),
        ])
    func retryAfter(_ value: String, _ expected: Duration) {
        let now = Timestamp(millisecondsSinceEpoch: 1_800_000_000_000)
        #expect(RetryAfter.parse(value, now: now) == expected)
    }

    @Test("unreadable Retry-After values are ignored", arguments: ["", "soon", "-5", "1.5"])
    func retryAfterUnreadable(_ value: String) {
        #expect(RetryAfter.parse(value, now: Timestamp(millisecondsSinceEpoch: 0)) == nil)
    }

    @Test("backoff doubles per attempt, is capped, and stays within [step/2, step]")
    func backoff() {
        let policy = RetryPolicy(backoffBase: .milliseconds(100), backoffMax: .seconds(1))
        var rng = SplitMix64(seed: 42)
        for (attempt, step) in [(1, 100), (2, 200), (3, 400), (4, 800), (5, 1000), (9, 1000)] {
            for _ in 0..<50 {
                let d = policy.backoff(afterAttempt: attempt, using: &rng)
                #expect(d >= .milliseconds(step / 2) && d <= .milliseconds(step), "attempt \(attempt): \(d)")
            }
        }
    }

    @Test(
        "URL redaction",
        arguments: [
            ("https://h/p?api_key=abc&x=1", "https://h/p?api_key=<redacted>&x=1"),
            ("https://h/p?x=1&API_KEY=abc", "https://h/p?x=1&API_KEY=<redacted>"),
            ("https://user:pw@h:8/p?q", "https://<redacted>@h:8/p?q"),
            ("https://h/p?X-Amz-Signature=s&X-Amz-Date=d", "https://h/p?X-Amz-Signature=<redacted>&X-Amz-Date=d"),
            ("https://h/p", "https://h/p"),
        ])
    func urlRedaction(_ url: String, _ expected: String) {
        #expect(HTTPRedaction.url(url) == expected)
    }

    @Test("the semaphore hands permits to waiters in order and a cancelled waiter leaves the queue")
    func semaphore() async throws {
        let s = AsyncSemaphore(permits: 1)
        try await s.acquire()
        let waiter = Task { try await s.acquire() }
        try await Task.sleep(for: .milliseconds(50))
        waiter.cancel()
        await #expect(throws: CancellationError.self) { try await waiter.value }
        s.release()
        #expect(s.availablePermits == 1)
        try await s.acquire()
        #expect(s.availablePermits == 0)
        s.release()
    }
}
