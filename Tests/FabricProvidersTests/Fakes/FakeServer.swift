// What the fake provider servers share: a loopback FabricHTTP server on a free port, scripted faults, a request
// log, and JSON helpers.
import FabricCore
import FabricHTTP
import FabricProviders
import Foundation
import Synchronization

/// A fault a fake server applies to matching requests instead of (or before) answering them.
enum Fault: Sendable {
    /// Answer with this status, headers and body.
    case respond(status: Int, headers: [String: String], body: String)
    /// Wait this long, then answer normally.
    case delay(Duration)
    /// Answer 200 with a body that is not JSON.
    case malformedJSON
}

/// Scripted faults: each applies to the next `times` requests whose key contains `match`.
final class FaultScript: Sendable {
    private struct Entry {
        var match: String
        var fault: Fault
        var remaining: Int
    }

    private let entries = Mutex<[Entry]>([])

    /// Adds a fault for the next `times` requests whose key (`METHOD /path`, or the GraphQL operation) contains
    /// `match`; faults apply in the order added.
    func add(_ fault: Fault, matching match: String, times: Int = 1) {
        entries.withLock { $0.append(Entry(match: match, fault: fault, remaining: times)) }
    }

    /// The fault for this request, if one is scripted (and counts it down).
    func take(_ key: String) -> Fault? {
        entries.withLock { entries in
            guard let i = entries.firstIndex(where: { key.contains($0.match) }) else { return nil }
            entries[i].remaining -= 1
            let fault = entries[i].fault
            if entries[i].remaining == 0 { entries.remove(at: i) }
            return fault
        }
    }

    /// Faults not used up yet.
    var pending: Int { entries.withLock { $0.count } }
}

/// Applies a fault before the rest of the chain.
struct FaultMiddleware: HTTPMiddleware {
    let faults: FaultScript
    let key: @Sendable (Request) -> String

    func handle(_ request: Request, next: HTTPNext) async throws -> Response {
        switch faults.take(key(request)) {
        case .respond(let status, let headers, let body):
            var h = HTTPHeaders()
            h.add(name: "Content-Type", value: "application/json")
            for (name, value) in headers { h.add(name: name, value: value) }
            return Response(status: status, headers: h, body: Data(body.utf8))
        case .delay(let d):
            try await Task.sleep(for: d)
            return try await next(request)
        case .malformedJSON:
            return Response(
                status: 200, headers: ["Content-Type": "application/json"], body: Data("{\"items\": [".utf8))
        case nil:
            return try await next(request)
        }
    }
}

/// One request a fake server saw.
struct SeenRequest: Sendable {
    var method: String
    var path: String
    var query: [String: String]
    var headers: [String: String]
    var body: Data
}

/// Every request a fake server saw, in arrival order.
final class RequestLog: Sendable {
    private let entries = Mutex<[SeenRequest]>([])

    func append(_ r: SeenRequest) { entries.withLock { $0.append(r) } }

    var all: [SeenRequest] { entries.withLock { $0 } }
}

/// Logs every request before faults apply.
struct LogMiddleware: HTTPMiddleware {
    let log: RequestLog

    func handle(_ request: Request, next: HTTPNext) async throws -> Response {
        var query: [String: String] = [:]
        for item in request.query { query[item.name] = item.value }
        var headers: [String: String] = [:]
        for field in request.headers { headers[field.name.lowercased()] = field.value }
        log.append(
            SeenRequest(
                method: request.method.rawValue, path: request.path, query: query, headers: headers,
                body: request.body))
        return try await next(request)
    }
}

/// A running loopback server around a router; `stop()` shuts it down.
final class LoopbackServer: Sendable {
    let server: HTTPServer

    init(_ router: Router) throws {
        server = HTTPServer(settings: HTTPServerSettings(address: "127.0.0.1:0", threadCount: 2), responder: router)
        try server.start()
    }

    var baseURL: String { "http://127.0.0.1:\(server.port)" }

    func stop() async { await server.shutdown(gracePeriod: .seconds(2)) }
}

/// JSON helpers for the fakes (they read and write JSON on their own, not through the drivers' types).
enum FakeJSON {
    static func object(_ data: Data) -> [String: Any]? {
        (try? JSONSerialization.jsonObject(with: data)) as? [String: Any]
    }

    static func response(_ value: Any, status: Int = 200, headers: [String: String] = [:]) -> Response {
        var h = HTTPHeaders()
        h.add(name: "Content-Type", value: "application/json")
        for (name, value) in headers { h.add(name: name, value: value) }
        let body = (try? JSONSerialization.data(withJSONObject: value, options: [.sortedKeys])) ?? Data()
        return Response(status: status, headers: h, body: body)
    }

    /// A JSON string literal (for scripted fault bodies).
    static func text(_ value: Any) -> String {
        String(
            decoding: (try? JSONSerialization.data(withJSONObject: value, options: [.sortedKeys])) ?? Data(),
            as: UTF8.self)
    }
}

/// A transport that remembers every request it passes on (to check headers and bodies).
final class RecordingTransport: HTTPTransport, Sendable {
    let inner: any HTTPTransport
    private let recorded = Mutex<[HTTPRequest]>([])

    init(_ inner: any HTTPTransport) { self.inner = inner }

    var requests: [HTTPRequest] { recorded.withLock { $0 } }

    func send(_ request: HTTPRequest) async throws -> HTTPResponse {
        recorded.withLock { $0.append(request) }
        return try await inner.send(request)
    }
}
