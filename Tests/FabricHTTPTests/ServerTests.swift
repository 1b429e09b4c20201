// HTTPServer through a real socket on 127.0.0.1, port 0.
import FabricCore
import Foundation
import Synchronization
import Testing

@testable import FabricHTTP

#if canImport(Glibc)
    import Glibc
#endif

/// What the echo route saw, sent back as JSON.
private struct Echo: Codable {
    var method: String
    var id: String
    var query: [String: String]
    var trace: String?
    var bodyBytes: Int
}

private func echoRouter() -> Router {
    var router = Router()
    let echo: HTTPHandler = { request in
        var query: [String: String] = [:]
        for item in request.query { query[item.name] = item.value }
        return try .json(
            Echo(
                method: request.method.rawValue, id: try request.parameter("id"), query: query,
                trace: request.headers["x-trace-id"], bodyBytes: request.body.count))
    }
    router.get("/v1/workloads/:id", query: ["phase", "label", "flag", "x"], echo)
    router.post("/v1/workloads/:id", query: ["phase", "label", "flag", "x"], echo)
    router.get("/v1/workloads") { _ in .text("list") }
    return router
}

@Suite("HTTPServer")
struct ServerTests {
    @Test("routes, route parameters, decoded query and case-insensitive headers over a socket")
    func routing() async throws {
        try await withServer(echoRouter()) { server in
            #expect(server.port > 0)
            let response = try await fetch(
                server.port, "GET", "/v1/workloads/wl-7?phase=running&label=a%20b&flag",
                headers: [("X-TRACE-ID", "t-1")])
            #expect(response.status == 200)
            #expect(response.headers["Content-Type"] == "application/json")
            let echo = try JSONDecoder().decode(Echo.self, from: response.body)
            #expect(echo.method == "GET")
            #expect(echo.id == "wl-7")
            #expect(echo.query == ["phase": "running", "label": "a b", "flag": ""])
            #expect(echo.trace == "t-1")
            #expect(try await fetch(server.port, "GET", "/v1/workloads").text == "list")
        }
    }

    @Test("404 for an unknown path, 405 with Allow for a known one")
    func notFoundAndNotAllowed() async throws {
        try await withServer(echoRouter()) { server in
            let missing = try await fetch(server.port, "GET", "/v2/nothing")
            #expect(missing.status == 404)
            #expect(try missing.errorObject == ["code": "not_found", "message": "no route for GET /v2/nothing"])
            let wrong = try await fetch(server.port, "DELETE", "/v1/workloads/wl-1")
            #expect(wrong.status == 405)
            #expect(wrong.headers["allow"] == "GET, HEAD, POST")
            #expect(try wrong.errorObject["code"] == "method_not_allowed")
        }
    }

    @Test("a FabricError renders as its status and JSON; any other error as a bare 500")
    func errors() async throws {
        struct Leaky: Error { var detail = "SELECT password FROM users" }
        var router = Router()
        router.post("/v1/workloads") { _ in throw FabricError.invalid("resources.cpu", "cpu must be positive") }
        router.get("/v1/busy") { _ in throw FabricError(.resourceExhausted, "queue is full") }
        router.get("/v1/leak") { _ in
            try await Task.sleep(for: .milliseconds(1))  // thrown after a real suspension
            throw Leaky()
        }
        try await withServer(router) { server in
            let invalid = try await fetch(server.port, "POST", "/v1/workloads", body: Data("{}".utf8))
            #expect(invalid.status == 400)
            #expect(invalid.headers["Content-Type"] == "application/json")
            #expect(
                try invalid.errorObject == [
                    "code": "invalid_argument", "message": "cpu must be positive", "field": "resources.cpu",
                ])
            let busy = try await fetch(server.port, "GET", "/v1/busy")
            #expect(busy.status == 429)
            #expect(try busy.errorObject == ["code": "resource_exhausted", "message": "queue is full"])
            let leak = try await fetch(server.port, "GET", "/v1/leak")
            #expect(leak.status == 500)
            #expect(try leak.errorObject == ["code": "internal", "message": "internal error"])
            #expect(!leak.text.contains("password"))
        }
    }

    @Test("a body within the limit arrives whole; a 2 MiB body gets 413 without reaching the handler")
    func bodyLimit() async throws {
        let gauge = ConcurrencyGauge()
        var router = Router()
        router.post("/upload") { request in
            gauge.enter()
            gauge.leave()
            return .text("\(request.body.count)")
        }
        try await withServer(router) { server in
            let limit = server.settings.bodyBytesMax
            #expect(limit == 1 << 20)
            let whole = try await fetch(server.port, "POST", "/upload", body: Data(repeating: 7, count: limit))
            #expect(whole.status == 200)
            #expect(whole.text == "\(limit)")

            // Declared too large, sent anyway: read and dropped, 413, and the connection stays usable.
            let port = server.port
            let (tooLarge, after) = try await offPool {
                let connection = try RawConnection(port: port)
                try connection.send(method: "POST", path: "/upload", body: Data(repeating: 1, count: 2 << 20))
                let tooLarge = try connection.readResponse()
                try connection.send(method: "POST", path: "/upload", body: Data("abc".utf8))
                return (tooLarge, try connection.readResponse())
            }
            #expect(tooLarge.status == 413)
            #expect(try tooLarge.errorObject["code"] == "payload_too_large")
            #expect(after.status == 200)
            #expect(after.text == "3")

            // Declared too large with Expect: 100-continue: refused before any body byte is sent.
            let refused = try await offPool {
                let connection = try RawConnection(port: port)
                try connection.send(
                    "POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: \(2 << 20)\r\nExpect: 100-continue\r\n\r\n")
                return try connection.readResponse()
            }
            #expect(refused.status == 413)

            // Declared larger than the server will even read: 413 at once, then the connection closes.
            let (hopeless, closed) = try await offPool {
                let connection = try RawConnection(port: port)
                try connection.send("POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: \(64 << 20)\r\n\r\n")
                return (try connection.readResponse(), try connection.readResponseOrClose() == nil)
            }
            #expect(hopeless.status == 413)
            #expect(closed)

            // Chunked, no length declared: counted as it streams in, dropped past the limit.
            let chunked = try await offPool {
                let connection = try RawConnection(port: port)
                try connection.send("POST /upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
                let chunk = Data(repeating: 2, count: 256 << 10)
                for _ in 0..<8 {
                    try connection.send(Data(String(chunk.count, radix: 16).utf8) + Data("\r\n".utf8) + chunk)
                    try connection.send("\r\n")
                }
                try connection.send("0\r\n\r\n")
                return try connection.readResponse()
            }
            #expect(chunked.status == 413)
            #expect(gauge.total == 2)  // the two small uploads only
        }
    }

    @Test("the body limit is a setting")
    func configurableBodyLimit() async throws {
        var router = Router()
        router.put("/small") { request in .text("\(request.body.count)") }
        let settings = HTTPServerSettings(address: "127.0.0.1:0", bodyBytesMax: 100)
        try await withServer(router, settings: settings) { server in
            #expect(try await fetch(server.port, "PUT", "/small", body: Data(count: 100)).text == "100")
            let tooLarge = try await fetch(server.port, "PUT", "/small", body: Data(count: 101))
            #expect(tooLarge.status == 413)
            #expect(
                try tooLarge.errorObject == ["code": "payload_too_large", "message": "request body exceeds 100 bytes"])
        }
    }

    @Test("%00 stays literal instead of cutting the path; Content-Length headers that disagree are 400")
    func nulAndConflictingLengths() async throws {
        try await withServer(echoRouter()) { server in
            let port = server.port
            // Decoded, a NUL would end the C string: /v1/workloads/%00 would reach the router as /v1/workloads/.
            let nul = try await fetch(port, "GET", "/v1/workloads/%00")
            #expect(nul.status == 200)
            #expect(try nul.json["id"] as? String == "%00")
            let cut = try await fetch(port, "GET", "/v1/workloads/wl-1%00junk?x=a%00b")
            #expect(try cut.json["id"] as? String == "wl-1%00junk")
            #expect((try cut.json["query"] as? [String: String])?["x"] == "a%00b")
            #expect(try await fetch(port, "GET", "/v1/workloads/a%20b").json["id"] as? String == "a b")
            let conflicting = try await offPool {
                let connection = try RawConnection(port: port)
                try connection.send(
                    "POST /v1/workloads/x HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 31\r\n\r\nhello")
                return try connection.readResponse()
            }
            #expect(conflicting.status == 400)
            #expect(try conflicting.errorObject["message"] == "the request has Content-Length headers that disagree")
            let same = try await offPool {
                let connection = try RawConnection(port: port)
                try connection.send(
                    "POST /v1/workloads/x HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello")
                return try connection.readResponse()
            }
            #expect(same.status == 200)
        }
    }

    @Test("one client address holds at most connections_per_client_max connections; one more is closed unanswered")
    func perClientConnectionLimit() async throws {
        var router = Router()
        router.get("/ping") { _ in .text("pong") }
        let settings = HTTPServerSettings(address: "127.0.0.1:0", connectionsPerClientMax: 2)
        try await withServer(router, settings: settings) { server in
            let port = server.port
            let outcome = try await offPool { () -> (Int?, Int?, Int?) in
                // Two half-sent requests hold both of this client's connections.
                let first = try RawConnection(port: port)
                let second = try RawConnection(port: port)
                try first.send("GET /ping HTTP/1.1\r\nHost: t\r\n")
                try second.send("GET /ping HTTP/1.1\r\nHost: t\r\n")
                Thread.sleep(forTimeInterval: 0.5)  // accepted by the server before the third connects
                let third = try RawConnection(port: port)
                try? third.send(method: "GET", path: "/ping")
                let refused = (try? third.readResponseOrClose())??.status
                // The held ones still complete, and once they close a new connection is served.
                try first.send("\r\n")
                let held = try first.readResponse().status
                first.shutdownWrite()
                try second.send("\r\n")
                _ = try second.readResponse()
                second.shutdownWrite()
                Thread.sleep(forTimeInterval: 0.2)
                let later = try RawConnection(port: port)
                try later.send(method: "GET", path: "/ping")
                return (refused, held, try later.readResponse().status)
            }
            #expect(outcome.0 == nil)
            #expect(outcome.1 == 200)
            #expect(outcome.2 == 200)
        }
    }

    @Test("malformed requests get 400 (or a closed connection) and the server keeps serving")
    func malformed() async throws {
        var router = echoRouter()
        router.post("/v1/specs") { request in
            struct Spec: Decodable { var name: String }
            return .text(try request.decode(Spec.self).name)
        }
        try await withServer(router) { server in
            let port = server.port
            let badHeader = try await offPool {
                let connection = try RawConnection(port: port)
                try connection.send("GET /v1/workloads/x HTTP/1.1\r\nHost: t\r\nNo colon here\r\n\r\n")
                return try connection.readResponse()
            }
            #expect(badHeader.status == 400)
            let badLength = try await offPool {
                let connection = try RawConnection(port: port)
                try connection.send("POST /v1/specs HTTP/1.1\r\nHost: t\r\nContent-Length: lots\r\n\r\n")
                return try connection.readResponse()
            }
            #expect(badLength.status == 400)
            for garbage in ["GARBAGE\r\n\r\n", "\u{1}\u{2} NOT HTTP AT ALL\r\n\r\n"] {
                let answer = try await offPool {
                    let connection = try RawConnection(port: port)
                    try connection.send(garbage)
                    return try connection.readResponseOrClose()
                }
                #expect(
                    answer == nil || answer?.status == 400, "\(garbage.debugDescription): \(String(describing: answer))"
                )
            }
            let hugeHeader = try await fetch(
                port, "GET", "/v1/workloads/x", headers: [("X-Big", String(repeating: "a", count: 100 << 10))])
            #expect(hugeHeader.status == 431)
            let badJSON = try await fetch(port, "POST", "/v1/specs", body: Data("{not json".utf8))
            #expect(badJSON.status == 400)
            #expect(try badJSON.errorObject["code"] == "invalid_argument")
            #expect(try badJSON.errorObject["field"] == "body")
            #expect(try await fetch(port, "POST", "/v1/specs", body: Data(#"{"name":"ok"}"#.utf8)).text == "ok")
            #expect(await eventually { server.inFlightRequests == 0 })
        }
    }

    @Test("100 parallel requests to a 50 ms handler overlap")
    func parallel() async throws {
        let gauge = ConcurrencyGauge()
        var router = Router()
        router.get("/slow/:n") { request in
            gauge.enter()
            defer { gauge.leave() }
            try await Task.sleep(for: .milliseconds(50))
            return .text(try request.parameter("n"))
        }
        let requestCount = 100
        try await withServer(router) { server in
            let port = server.port
            let bodies = try await offPool {
                let connections = try (0..<requestCount).map { _ in try RawConnection(port: port) }
                for (n, connection) in connections.enumerated() {
                    try connection.send(method: "GET", path: "/slow/\(n)")
                }
                return try connections.map { try $0.readResponse().text }
            }
            #expect(bodies == (0..<requestCount).map(String.init))
            #expect(gauge.total == requestCount)
            #expect(gauge.max >= 2)
            #expect(server.suspendedRequests == 0)
        }
    }

    @Test("keep-alive connections survive many suspend/resume round trips")
    func suspendResumeChurn() async throws {
        var router = Router()
        router.get("/yield/:n") { request in
            await Task.yield()
            return .text(try request.parameter("n"))
        }
        router.get("/now/:n") { request in .text(try request.parameter("n")) }
        let connectionsCount = 8
        let requestsPerConnection = 200
        try await withServer(router) { server in
            let port = server.port
            let mismatches = try await offPool {
                let connections = try (0..<connectionsCount).map { _ in try RawConnection(port: port) }
                var mismatches = 0
                for round in 0..<requestsPerConnection {
                    let route = round % 2 == 0 ? "yield" : "now"
                    for (c, connection) in connections.enumerated() {
                        try connection.send(method: "GET", path: "/\(route)/\(c)-\(round)")
                    }
                    for (c, connection) in connections.enumerated() {
                        let response = try connection.readResponse()
                        if response.status != 200 || response.text != "\(c)-\(round)" { mismatches += 1 }
                    }
                }
                return mismatches
            }
            #expect(mismatches == 0)
        }
    }

    @Test("handlers may hop actors, fan out child tasks and leave unstructured work behind")
    func concurrencyInsideHandlers() async throws {
        actor Tally {
            var count = 0
            func bump() -> Int {
                count += 1
                return count
            }
        }
        let tally = Tally()
        var router = Router()
        router.get("/fan/:n") { request in
            let n = Int(try request.parameter("n")) ?? 0
            async let first = tally.bump()
            let sum = await withTaskGroup(of: Int.self) { group in
                for i in 0..<n {
                    group.addTask {
                        if i % 2 == 0 { try? await Task.sleep(for: .milliseconds(1)) }
                        return i
                    }
                }
                return await group.reduce(0, +)
            }
            _ = await first
            Task { _ = await tally.bump() }  // outlives the response
            return .text("\(sum)")
        }
        try await withServer(router) { server in
            for n in [0, 1, 10, 50] {
                #expect(try await fetch(server.port, "GET", "/fan/\(n)").text == "\(n * (n - 1) / 2)")
            }
            let port = server.port
            let bodies = try await offPool {
                let connections = try (0..<20).map { _ in try RawConnection(port: port) }
                for connection in connections { try connection.send(method: "GET", path: "/fan/8") }
                return try connections.map { try $0.readResponse().text }
            }
            #expect(bodies == Array(repeating: "28", count: 20))
            let expected = 2 * (4 + 20)
            #expect(await eventually { await tally.count == expected })
        }
    }

    @Test("the access log sees method, path, status and duration")
    func accessLog() async throws {
        final class Log: Sendable { let entries = Mutex<[AccessLogEntry]>([]) }
        let log = Log()
        var router = echoRouter()
        router.get("/sleepy") { _ in
            try await Task.sleep(for: .milliseconds(20))
            return .text("z")
        }
        try await withServer(router, accessLog: { entry in log.entries.withLock { $0.append(entry) } }) { server in
            _ = try await fetch(server.port, "GET", "/v1/workloads/a?x=1")
            _ = try await fetch(server.port, "PUT", "/v1/workloads/a")
            _ = try await fetch(server.port, "GET", "/sleepy")
            let entries = log.entries.withLock { $0 }
            #expect(entries.map(\.method) == [.get, .put, .get])
            #expect(entries.map(\.path) == ["/v1/workloads/a", "/v1/workloads/a", "/sleepy"])
            #expect(entries.map(\.status) == [200, 405, 200])
            #expect(entries[2].duration >= .milliseconds(20))
        }
    }

    @Test("shutdown lets an in-flight request finish, then refuses connections")
    func gracefulShutdown() async throws {
        let gauge = ConcurrencyGauge()
        // The handler holds its request until the test lets it go (bounded), so it is in flight when shutdown
        // begins however slowly the test's own tasks are scheduled.
        let release = Mutex(false)
        var router = Router()
        router.get("/work") { _ in
            gauge.enter()
            defer { gauge.leave() }
            for _ in 0..<2000 where !release.withLock({ $0 }) { try await Task.sleep(for: .milliseconds(5)) }
            return .text("finished")
        }
        let server = HTTPServer(settings: HTTPServerSettings(address: "127.0.0.1:0"), responder: router)
        try server.start()
        let port = server.port
        async let response = fetch(port, "GET", "/work")
        #expect(await eventually { gauge.current == 1 })
        let stopping = Task { await server.shutdown(gracePeriod: .seconds(10)) }
        try await Task.sleep(for: .milliseconds(50))
        release.withLock { $0 = true }
        await stopping.value
        let finished = try await response
        #expect(finished.status == 200)
        #expect(finished.text == "finished")
        #expect(finished.headers["Connection"] == "close")
        #expect(server.port == 0)
        await #expect(throws: ClientError.self) { try await fetch(port, "GET", "/work") }
        await server.shutdown()  // a second call is a no-op
    }

    @Test("shutdown answers requests still running after the grace period 503 and cancels them")
    func forcedShutdown() async throws {
        let gauge = ConcurrencyGauge()
        final class Flag: Sendable { let value = Atomic<Bool>(false) }
        let wasCancelled = Flag()
        var router = Router()
        router.get("/forever") { _ in
            gauge.enter()
            defer { gauge.leave() }
            do { try await Task.sleep(for: .seconds(60)) } catch { wasCancelled.value.store(true, ordering: .relaxed) }
            return .text("too late")
        }
        let server = HTTPServer(settings: HTTPServerSettings(address: "127.0.0.1:0"), responder: router)
        try server.start()
        async let response = fetch(server.port, "GET", "/forever")
        #expect(await eventually { gauge.current == 1 })
        await server.shutdown(gracePeriod: .milliseconds(100))
        let answered = try await response
        #expect(answered.status == 503)
        #expect(try answered.errorObject == ["code": "unavailable", "message": "server is shutting down"])
        #expect(await eventually { wasCancelled.value.load(ordering: .relaxed) })
    }

    @Test("a client that hangs up mid-request or mid-upload leaves nothing behind")
    func clientDisconnects() async throws {
        let gauge = ConcurrencyGauge()
        var router = Router()
        router.post("/slow") { request in
            gauge.enter()
            defer { gauge.leave() }
            try await Task.sleep(for: .milliseconds(100))
            return .text("\(request.body.count)")
        }
        // The connection timeout (60 s) is far beyond `eventually`'s wait: cleanup must come from noticing the close.
        try await withServer(router) { server in
            let port = server.port
            try await offPool {
                let connection = try RawConnection(port: port)
                try connection.send(method: "POST", path: "/slow", body: Data("x".utf8))
            }  // closed on return, while the handler sleeps
            #expect(await eventually { gauge.total == 1 })
            try await offPool {
                let connections = try (0..<20).map { _ in try RawConnection(port: port) }
                for connection in connections {
                    try connection.send(method: "POST", path: "/slow", body: Data("y".utf8))
                }
            }  // twenty more gone while their handlers sleep
            #expect(await eventually { gauge.total == 21 })
            try await offPool {
                let connection = try RawConnection(port: port)
                try connection.send("POST /slow HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n0123456789")
            }  // closed with 990 bytes of body missing
            #expect(await eventually { gauge.current == 0 && server.inFlightRequests == 0 })
            #expect(server.suspendedRequests == 0)
            #expect(gauge.total == 21)
            #expect(try await fetch(port, "POST", "/slow", body: Data("abc".utf8)).text == "3")
        }
    }

    @Test("start reports bad addresses, busy ports and double starts")
    func startErrors() async throws {
        let bad = HTTPServer(settings: HTTPServerSettings(address: "nowhere:80"), responder: Router())
        #expect(throws: FabricError.self) { try bad.start() }
        try await withServer(Router()) { server in
            #expect(server.port > 0)
            let error = #expect(throws: FabricError.self) { try server.start() }
            #expect(error?.code == .failedPrecondition)
            let clash = HTTPServer(
                settings: HTTPServerSettings(address: "127.0.0.1:\(server.port)"), responder: Router())
            let busy = #expect(throws: FabricError.self) { try clash.start() }
            #expect(busy?.code == .unavailable)
        }
    }

    @Test("serves IPv6 loopback when the host has it", .enabled(if: ipv6LoopbackAvailable()))
    func ipv6() async throws {
        var router = Router()
        router.get("/v6") { _ in .text("six") }
        try await withServer(router, settings: HTTPServerSettings(address: "[::1]:0")) { server in
            let port = server.port
            let response = try await offPool {
                let connection = try RawConnection(port: port, ipv6: true)
                try connection.send(method: "GET", path: "/v6")
                return try connection.readResponse()
            }
            #expect(response.text == "six")
        }
    }

    @Test("run() serves until its task is cancelled")
    func runUntilCancelled() async throws {
        var router = Router()
        router.get("/ping") { _ in .text("pong") }
        let server = HTTPServer(settings: HTTPServerSettings(address: "127.0.0.1:0"), responder: router)
        let running = Task { try await server.run() }
        #expect(await eventually { server.port > 0 })
        #expect(try await fetch(server.port, "GET", "/ping").text == "pong")
        running.cancel()
        try await running.value
        #expect(server.port == 0)
    }
}

private func ipv6LoopbackAvailable() -> Bool {
    let fd = socket(AF_INET6, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return false }
    defer { close(fd) }
    var address = sockaddr_in6()
    address.sin6_family = sa_family_t(AF_INET6)
    address.sin6_addr = in6addr_loopback
    return withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in6>.size)) == 0
        }
    }
}
