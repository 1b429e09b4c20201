// The router, the error shape and the small value types, without a socket.
import FabricCore
import Foundation
import Synchronization
import Testing

@testable import FabricHTTP

/// A router whose handlers answer with which route matched and the parameters they saw.
private func sampleRouter() -> Router {
    var router = Router()
    router.get("/v1/workloads") { _ in .text("list") }
    router.post("/v1/workloads", query: ["dryRun"]) { request in
        .text("create \(request.query["dryRun"] ?? "-")", status: 202)
    }
    router.get("/v1/workloads/:id") { request in .text("get \(try request.parameter("id"))") }
    router.delete("/v1/workloads/:id") { request in .text("delete \(try request.parameter("id"))") }
    router.get("/v1/workloads/summary") { _ in .text("summary") }
    router.get("/v1/workloads/:id/events") { request in .text("events \(try request.parameter("id"))") }
    router.put("/v1/nodes/:node/labels/:key") { request in
        .text("label \(try request.parameter("node")) \(try request.parameter("key"))")
    }
    router.get("/healthz") { _ in .text("ok") }
    return router
}

struct RouteCase: Sendable, CustomTestStringConvertible {
    var method: HTTPMethod
    var path: String
    var status: Int
    var body: String?
    var testDescription: String { "\(method) \(path) -> \(status)" }
}

@Suite("Router")
struct RouterTests {
    @Test(
        "routes by method and pattern",
        arguments: [
            RouteCase(method: .get, path: "/v1/workloads", status: 200, body: "list"),
            RouteCase(method: .post, path: "/v1/workloads", status: 202, body: "create -"),
            RouteCase(method: .get, path: "/v1/workloads/", status: 200, body: "list"),
            RouteCase(method: .get, path: "/v1/workloads/wl-1", status: 200, body: "get wl-1"),
            RouteCase(method: .delete, path: "/v1/workloads/wl-1", status: 200, body: "delete wl-1"),
            RouteCase(method: .get, path: "/v1/workloads/summary", status: 200, body: "summary"),
            RouteCase(method: .get, path: "/v1/workloads/wl-2/events", status: 200, body: "events wl-2"),
            RouteCase(method: .get, path: "//v1//workloads/wl-3", status: 200, body: "get wl-3"),
            RouteCase(method: .put, path: "/v1/nodes/n1/labels/zone", status: 200, body: "label n1 zone"),
            RouteCase(method: .head, path: "/healthz", status: 200, body: "ok"),
            RouteCase(method: .get, path: "/", status: 404, body: nil),
            RouteCase(method: .get, path: "/v1/nope", status: 404, body: nil),
            RouteCase(method: .get, path: "/v1/workloads/wl-1/events/extra", status: 404, body: nil),
            RouteCase(method: .put, path: "/v1/workloads/wl-1", status: 405, body: nil),
            RouteCase(method: .delete, path: "/v1/workloads", status: 405, body: nil),
        ])
    func routes(_ c: RouteCase) async throws {
        let response = try await sampleRouter().respond(to: Request(method: c.method, path: c.path))
        #expect(response.status == c.status)
        if let body = c.body { #expect(String(decoding: response.body, as: UTF8.self) == body) }
    }

    @Test("unknown path answers 404 in the JSON error shape")
    func notFound() async throws {
        let response = try await sampleRouter().respond(to: Request(method: .get, path: "/v2/x"))
        #expect(response.status == 404)
        #expect(response.headers["content-type"] == "application/json")
        let envelope = try JSONDecoder().decode(ErrorEnvelope.self, from: response.body)
        #expect(envelope == ErrorEnvelope(error: .init(code: "not_found", message: "no route for GET /v2/x")))
    }

    @Test("a query parameter the route does not take is refused with 400, naming it")
    func unknownQueryParameters() async throws {
        let router = sampleRouter()
        let taken = try await router.respond(
            to: Request(method: .post, path: "/v1/workloads", query: ["dryRun": "true"]))
        #expect(taken.status == 202)
        #expect(String(decoding: taken.body, as: UTF8.self) == "create true")
        let misspelt = try await router.respond(
            to: Request(method: .post, path: "/v1/workloads", query: ["dryrun": "true"]))
        #expect(misspelt.status == 400)
        let envelope = try JSONDecoder().decode(ErrorEnvelope.self, from: misspelt.body)
        #expect(envelope.error.code == "invalid_argument")
        #expect(envelope.error.field == "dryrun")
        #expect(envelope.error.message == "unknown query parameter \"dryrun\": POST /v1/workloads takes dryRun")
        let none = try await router.respond(to: Request(method: .get, path: "/healthz", query: ["verbose": ""]))
        #expect(none.status == 400)
        #expect(
            try JSONDecoder().decode(ErrorEnvelope.self, from: none.body).error.message
                == "unknown query parameter \"verbose\": GET /healthz takes no query parameters")
        // HEAD answered by the GET handler takes what GET takes.
        #expect(try await router.respond(to: Request(method: .head, path: "/healthz", query: ["x": "1"])).status == 400)
    }

    @Test("known path with another method answers 405 with Allow")
    func methodNotAllowed() async throws {
        let router = sampleRouter()
        let response = try await router.respond(to: Request(method: .patch, path: "/v1/workloads/wl-1"))
        #expect(response.status == 405)
        #expect(response.headers["Allow"] == "DELETE, GET, HEAD")
        let envelope = try JSONDecoder().decode(ErrorEnvelope.self, from: response.body)
        #expect(envelope.error.code == "method_not_allowed")
        #expect(router.allowedMethods(for: "/v1/workloads") == [.get, .head, .post])
        #expect(router.allowedMethods(for: "/nowhere") == nil)
    }

    @Test("routes lists every registered method and pattern in order, normalized, without implicit HEAD")
    func listsRoutes() {
        var router = sampleRouter()
        router.post("//v1//things/:id/") { _ in .text("thing") }
        let listed = router.routes.map { "\($0.method.rawValue) \($0.pattern)" }
        #expect(
            listed == [
                "GET /v1/workloads", "POST /v1/workloads", "GET /v1/workloads/:id", "DELETE /v1/workloads/:id",
                "GET /v1/workloads/summary", "GET /v1/workloads/:id/events", "PUT /v1/nodes/:node/labels/:key",
                "GET /healthz", "POST /v1/things/:id",
            ])
        #expect(Router().routes.isEmpty)
    }

    @Test("a thrown FabricError renders with its status, code, message and field")
    func fabricErrors() async throws {
        var router = Router()
        router.post("/invalid") { _ in throw FabricError.invalid("spec.name", "name is too long") }
        router.post("/conflict") { _ in throw FabricError(.conflict, "version 3 is stale") }
        let invalid = try await router.respond(to: Request(method: .post, path: "/invalid"))
        #expect(invalid.status == 400)
        #expect(
            String(decoding: invalid.body, as: UTF8.self)
                == #"{"error":{"code":"invalid_argument","field":"spec.name","message":"name is too long"}}"#)
        let conflict = try await router.respond(to: Request(method: .post, path: "/conflict"))
        #expect(conflict.status == 409)
        #expect(
            String(decoding: conflict.body, as: UTF8.self)
                == #"{"error":{"code":"conflict","message":"version 3 is stale"}}"#)
    }

    @Test("every FabricError code renders with its own HTTP status", arguments: FabricError.Code.allCases)
    func everyCode(_ code: FabricError.Code) throws {
        let response = Response.error(FabricError(code, "m"))
        #expect(response.status == code.httpStatus)
        #expect(try JSONDecoder().decode(ErrorEnvelope.self, from: response.body).error.code == code.rawValue)
    }

    @Test("any other error renders as a 500 that leaks nothing")
    func otherErrors() async throws {
        struct DatabasePassword: Error { var secret = "hunter2" }
        var router = Router()
        router.get("/boom") { _ in throw DatabasePassword() }
        let response = try await router.respond(to: Request(method: .get, path: "/boom"))
        #expect(response.status == 500)
        let text = String(decoding: response.body, as: UTF8.self)
        #expect(text == #"{"error":{"code":"internal","message":"internal error"}}"#)
        #expect(!text.contains("hunter2") && !text.contains("DatabasePassword"))
    }

    @Test("middleware runs outermost first and sees 404s and errors")
    func middleware() async throws {
        final class Trail: Sendable { let lines = Mutex<[String]>([]) }
        struct Tag: HTTPMiddleware {
            var name: String
            let trail: Trail
            func handle(_ request: Request, next: HTTPNext) async throws -> Response {
                trail.lines.withLock { $0.append("in \(name)") }
                var response: Response
                do { response = try await next(request) } catch { response = .error(from: error) }
                trail.lines.withLock { $0.append("out \(name) \(response.status)") }
                response.headers.add(name: "X-Tag", value: name)
                return response
            }
        }
        let trail = Trail()
        var router = sampleRouter()
        router.add(middleware: Tag(name: "outer", trail: trail))
        router.add(middleware: Tag(name: "inner", trail: trail))
        let found = try await router.respond(to: Request(method: .get, path: "/healthz"))
        #expect(found.status == 200)
        #expect(found.headers.values(for: "x-tag") == ["inner", "outer"])
        let missing = try await router.respond(to: Request(method: .get, path: "/missing"))
        #expect(missing.status == 404)
        #expect(
            trail.lines.withLock { $0 } == [
                "in outer", "in inner", "out inner 200", "out outer 200",
                "in outer", "in inner", "out inner 404", "out outer 404",
            ])
    }

    @Test("headers compare names case-insensitively and keep repeats")
    func headers() {
        var headers: HTTPHeaders = ["Content-Type": "application/json", "X-Multi": "a"]
        headers.add(name: "x-multi", value: "b")
        #expect(headers["content-type"] == "application/json")
        #expect(headers["CONTENT-TYPE"] == "application/json")
        #expect(headers["Content-Typ"] == nil)
        #expect(headers.values(for: "X-MULTI") == ["a", "b"])
        headers.replaceOrAdd(name: "X-MULTI", value: "c")
        #expect(headers.values(for: "x-multi") == ["c"])
        #expect(asciiCaseInsensitiveEqual("Accept-1", "aCCEPT-1"))
        #expect(!asciiCaseInsensitiveEqual("a[", "A{"))  // '[' and '{' differ by 0x20 but are not letters
    }

    @Test("Response helpers set the media type")
    func responseHelpers() throws {
        struct Doc: Codable, Equatable { var b: Int; var a: String }
        let json = try Response.json(Doc(b: 1, a: "x/y"), status: 202)
        #expect(json.status == 202)
        #expect(json.headers["Content-Type"] == "application/json")
        #expect(String(decoding: json.body, as: UTF8.self) == #"{"a":"x/y","b":1}"#)
        let bytes = Response.bytes([1, 2, 3])
        #expect(bytes.body == Data([1, 2, 3]))
        #expect(bytes.headers["content-type"] == "application/octet-stream")
        #expect(Response.text("hi").headers["Content-Type"] == "text/plain; charset=utf-8")
    }

    @Test("Request.decode reports a malformed body as invalid_argument on field body")
    func decode() throws {
        struct Spec: Decodable { var name: String }
        let good = Request(method: .post, path: "/", body: Data(#"{"name":"a"}"#.utf8))
        #expect(try good.decode(Spec.self).name == "a")
        for body in ["{", #"{"name":1}"#, #"{}"#, ""] {
            let bad = Request(method: .post, path: "/", body: Data(body.utf8))
            let error = #expect(throws: FabricError.self) { try bad.decode(Spec.self) }
            #expect(error?.code == .invalidArgument)
            #expect(error?.field == "body")
        }
    }
}

struct AddressCase: Sendable, CustomTestStringConvertible {
    var text: String
    var host: String?
    var port: UInt16 = 0
    var ipv6 = false
    var testDescription: String { text }
}

@Suite("BindAddress")
struct BindAddressTests {
    @Test(
        "parses listen addresses",
        arguments: [
            AddressCase(text: "127.0.0.1:8080", host: "127.0.0.1", port: 8080),
            AddressCase(text: ":8080", host: "0.0.0.0", port: 8080),
            AddressCase(text: "0.0.0.0:0", host: "0.0.0.0", port: 0),
            AddressCase(text: "localhost:9", host: "127.0.0.1", port: 9),
            AddressCase(text: "[::1]:8080", host: "::1", port: 8080, ipv6: true),
            AddressCase(text: "[::]:0", host: "::", port: 0, ipv6: true),
            AddressCase(text: "8080", host: nil),
            AddressCase(text: "127.0.0.1:", host: nil),
            AddressCase(text: "127.0.0.1:65536", host: nil),
            AddressCase(text: "example.com:80", host: nil),
            AddressCase(text: "[::1]8080", host: nil),
            AddressCase(text: "::1:8080", host: nil),
        ])
    func parse(_ c: AddressCase) {
        let parsed = try? BindAddress(parsing: c.text)
        #expect(parsed?.host == c.host)
        if parsed != nil {
            #expect(parsed?.port == c.port)
            #expect(parsed?.isIPv6 == c.ipv6)
        }
    }
}
