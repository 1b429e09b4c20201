// Keeps docs/openapi.yaml true to the code: its paths and methods are exactly the routes the real router has, its
// enums are exactly the code's, and the documented query limits are the ones the handlers enforce.
import FabricCore
import FabricHTTP
import FabricLog
import FabricScheduler
import Foundation
import Testing

@testable import Weaver

/// docs/openapi.yaml, read once and parsed line by line (no YAML library: the document keeps a simple layout).
struct OpenAPIDocument {
    static let path: String = {
        // <root>/Tests/WeaverTests/OpenAPIDocumentTests.swift
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { url.deleteLastPathComponent() }
        return url.appendingPathComponent("docs/openapi.yaml").path
    }()

    static let httpMethods: Set<String> = ["get", "put", "post", "delete", "options", "head", "patch", "trace"]

    let lines: [String]

    init() throws {
        let text = try String(contentsOfFile: Self.path, encoding: .utf8)
        lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
    }

    static func indent(of line: String) -> Int { line.prefix { $0 == " " }.count }

    /// `METHOD /pattern` for every operation under `paths:` (path keys at indent 2, methods at indent 4), with
    /// `{name}` turned into the router's `:name`.
    func operations() -> [String] {
        guard let start = lines.firstIndex(of: "paths:") else { return [] }
        var result: [String] = []
        var current: String?
        for line in lines[(start + 1)...] {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if trimmed.isEmpty || trimmed.hasPrefix("#") { continue }
            let indent = Self.indent(of: line)
            if indent == 0 { break }  // the next top-level key
            guard trimmed.hasSuffix(":") else { continue }
            let key = String(trimmed.dropLast()).trimmingCharacters(in: CharacterSet(charactersIn: "'\""))
            if indent == 2 {
                current = key.hasPrefix("/") ? key : nil
            } else if indent == 4, let path = current, Self.httpMethods.contains(key) {
                result.append("\(key.uppercased()) \(Self.routerPattern(path))")
            }
        }
        return result
    }

    /// `/v1/workloads/{id}/logs` -> `/v1/workloads/:id/logs`.
    static func routerPattern(_ path: String) -> String {
        path.split(separator: "/", omittingEmptySubsequences: false).map { segment in
            segment.hasPrefix("{") && segment.hasSuffix("}") ? ":" + segment.dropFirst().dropLast() : segment
        }.joined(separator: "/")
    }

    /// The values of a flow-style `enum: [a, b, 'c d']` line.
    static func enumValues(_ line: String) -> [String]? {
        let trimmed = line.trimmingCharacters(in: .whitespaces)
        guard trimmed.hasPrefix("enum: ["), trimmed.hasSuffix("]") else { return nil }
        return trimmed.dropFirst("enum: [".count).dropLast().split(separator: ",").map {
            $0.trimmingCharacters(in: .whitespaces).trimmingCharacters(in: CharacterSet(charactersIn: "'\""))
        }
    }

    /// Every enum in the document, in order of appearance.
    func allEnums() -> [[String]] { lines.compactMap(Self.enumValues) }

    /// The enum of `components.schemas.<name>` (its key at indent 4, its `enum:` at indent 6).
    func schemaEnum(_ name: String) -> [String]? {
        guard let schemas = lines.firstIndex(of: "  schemas:"),
            let start = lines[schemas...].firstIndex(of: "    \(name):")
        else { return nil }
        for line in lines[(start + 1)...] {
            let indent = Self.indent(of: line)
            if !line.trimmingCharacters(in: .whitespaces).isEmpty, indent <= 4 { return nil }
            if indent == 6, let values = Self.enumValues(line) { return values }
        }
        return nil
    }

    /// `minimum`, `maximum` and `default` of the query parameter `name` of the operation `method path`.
    func queryLimits(_ method: String, _ path: String, _ name: String) -> [String: String] {
        guard let p = lines.firstIndex(of: "  \(path):"),
            let m = lines[(p + 1)...].firstIndex(where: { $0 == "    \(method):" || Self.indent(of: $0) == 2 }),
            lines[m] == "    \(method):",
            let param = lines[(m + 1)...].firstIndex(where: {
                $0.trimmingCharacters(in: .whitespaces) == "- name: \(name)" || Self.indent(of: $0) <= 4
            }), lines[param].trimmingCharacters(in: .whitespaces) == "- name: \(name)"
        else { return [:] }
        var found: [String: String] = [:]
        let paramIndent = Self.indent(of: lines[param])
        for line in lines[(param + 1)...] {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if trimmed.isEmpty { continue }
            if Self.indent(of: line) <= paramIndent { break }
            for key in ["minimum", "maximum", "default"] where trimmed.hasPrefix("\(key): ") {
                found[key] = String(trimmed.dropFirst(key.count + 2))
            }
        }
        return found
    }
}

@Suite("OpenAPI document")
struct OpenAPIDocumentTests {
    /// The router weaver serves, built the way `main` builds it (store, catalog, services), but not listening.
    static func weaverRoutes() async throws -> [String] {
        let dir = FileManager.default.temporaryDirectory
            .appendingPathComponent("fabric-openapi-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var settings = Settings()
        settings.data.dir = dir
        settings.node.enabled = false
        let logger = Logger(component: "test", level: .error, sink: MemorySink())
        let app = try await WeaverApp.build(settings: settings, logger: logger)
        let routes = app.router.routes.map { "\($0.method.rawValue) \($0.pattern)" }
        await app.service.shutdown()
        await app.store.close()
        return routes
    }

    @Test("the document's paths and methods are exactly the router's routes")
    func pathsMatchRoutes() async throws {
        let documented = try OpenAPIDocument().operations()
        let routed = try await Self.weaverRoutes()
        #expect(routed.count == 15)
        #expect(documented.count == Set(documented).count, "an operation is documented twice")
        let undocumented = Set(routed).subtracting(documented).sorted()
        let unrouted = Set(documented).subtracting(routed).sorted()
        #expect(undocumented.isEmpty, "routes missing from docs/openapi.yaml: \(undocumented)")
        #expect(unrouted.isEmpty, "documented operations the router does not have: \(unrouted)")
    }

    @Test("the line parser reads paths, methods and parameters")
    func parser() {
        #expect(
            OpenAPIDocument.routerPattern("/v1/providers/{name}/machine-types") == "/v1/providers/:name/machine-types")
        #expect(OpenAPIDocument.routerPattern("/health") == "/health")
        #expect(
            OpenAPIDocument.enumValues("      enum: [ok, 'no credentials: x', null]") == [
                "ok", "no credentials: x", "null",
            ])
        #expect(OpenAPIDocument.enumValues("      type: string") == nil)
    }

    @Test("every scheduler Reason is documented, and the Reason schema lists exactly Reason.all")
    func reasons() throws {
        let doc = try OpenAPIDocument()
        #expect(doc.schemaEnum("Reason") == Reason.all)
        let documented = Set(doc.allEnums().joined())
        for reason in Reason.all { #expect(documented.contains(reason), "reason \(reason) is not in any enum") }
        // The candidate `reason` is the same list plus null.
        #expect(doc.allEnums().contains(Reason.all + ["null"]))
    }

    @Test("every Phase is documented, and the Phase schema lists exactly Phase.allCases")
    func phases() throws {
        let doc = try OpenAPIDocument()
        let phases = Phase.allCases.map(\.rawValue)
        #expect(doc.schemaEnum("Phase") == phases)
        let documented = Set(doc.allEnums().joined())
        for phase in phases { #expect(documented.contains(phase), "phase \(phase) is not in any enum") }
    }

    @Test("the other enums match their Swift types")
    func otherEnums() throws {
        let doc = try OpenAPIDocument()
        #expect(doc.schemaEnum("ErrorCode") == FabricError.Code.allCases.map(\.rawValue))
        #expect(doc.schemaEnum("SpotPolicy") == SpotPolicy.allCases.map(\.rawValue))
        #expect(doc.schemaEnum("RestartPolicy") == RestartPolicy.allCases.map(\.rawValue))
        #expect(doc.schemaEnum("RuntimeKind") == RuntimeKind.allCases.map(\.rawValue))
        #expect(doc.schemaEnum("NodeState") == NodeState.allCases.map(\.rawValue))
        #expect(doc.schemaEnum("ProviderName") == ProviderName.allCases.map(\.rawValue))
    }

    @Test("documented query limits are the ones the handlers enforce")
    func queryLimits() throws {
        let doc = try OpenAPIDocument()
        #expect(
            doc.queryLimits("get", "/v1/workloads", "limit")
                == ["minimum": "1", "maximum": "\(Limits.listPageSizeMax)", "default": "\(Limits.listPageSizeDefault)"])
        #expect(
            doc.queryLimits("get", "/v1/workloads/{id}/events", "limit")
                == ["minimum": "1", "maximum": "\(WeaverAPI.eventsPageMax)", "default": "\(WeaverAPI.eventsPageMax)"])
        #expect(doc.queryLimits("get", "/v1/workloads/{id}/events", "after") == ["minimum": "0", "default": "0"])
        #expect(
            doc.queryLimits("get", "/v1/workloads/{id}/logs", "tail")
                == [
                    "minimum": "1", "maximum": "\(WeaverAPI.logTailBytesMax)",
                    "default": "\(WeaverAPI.logTailBytesDefault)",
                ])
    }
}
