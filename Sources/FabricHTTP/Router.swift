// Responders, middleware and the router: path patterns with `:name` parameters, 404 and 405 as JSON errors.
import FabricCore

/// Anything that turns a request into a response: the router, a middleware chain, a test stub.
public protocol HTTPResponder: Sendable {
    /// Answers one request. Thrown errors are rendered by the caller with `Response.error(from:)`.
    func respond(to request: Request) async throws -> Response
}

/// The rest of the chain, as a middleware sees it.
public typealias HTTPNext = @Sendable (Request) async throws -> Response

/// Code that wraps every request the router sees, found or not (logging, auth, headers).
public protocol HTTPMiddleware: Sendable {
    /// Handles `request`, usually by calling `next` and adjusting what it returns or throws.
    func handle(_ request: Request, next: HTTPNext) async throws -> Response
}

/// A route's handler.
public typealias HTTPHandler = @Sendable (Request) async throws -> Response

/// Routes requests by method and path pattern (`/v1/workloads/:id`) to handlers, behind optional middleware.
///
/// Build it with `get`/`post`/`put`/`delete`/`add(middleware:)`, then hand it (a value) to `HTTPServer`, or call
/// `respond(to:)` directly in tests. Literal segments win over `:name` segments; a trailing slash and repeated
/// slashes are ignored. Unknown paths answer 404, known paths with another method 405 with an `Allow` header, and
/// thrown errors render as the JSON error shape (non-Fabric errors as a 500 that reveals nothing).
public struct Router: HTTPResponder {
    private var root = Node()
    private var middlewares: [any HTTPMiddleware] = []

    /// Every registered route in registration order, its pattern normalized to `/segment/:name` (empty segments
    /// dropped). HEAD is not listed: it is answered by the GET handler unless registered itself.
    public private(set) var routes: [(method: HTTPMethod, pattern: String)] = []

    public init() {}

    /// Registers `handler` for GET (and HEAD, unless HEAD has its own route) on `pattern`.
    public mutating func get(_ pattern: String, _ handler: @escaping HTTPHandler) {
        on(.get, pattern, handler)
    }

    /// Registers `handler` for POST on `pattern`.
    public mutating func post(_ pattern: String, _ handler: @escaping HTTPHandler) {
        on(.post, pattern, handler)
    }

    /// Registers `handler` for PUT on `pattern`.
    public mutating func put(_ pattern: String, _ handler: @escaping HTTPHandler) {
        on(.put, pattern, handler)
    }

    /// Registers `handler` for DELETE on `pattern`.
    public mutating func delete(_ pattern: String, _ handler: @escaping HTTPHandler) {
        on(.delete, pattern, handler)
    }

    /// Registers `handler` for `method` on `pattern`; registering the same method and pattern twice is a bug.
    public mutating func on(_ method: HTTPMethod, _ pattern: String, _ handler: @escaping HTTPHandler) {
        let segments = pattern.split(separator: "/", omittingEmptySubsequences: true).map(String.init)
        Self.insert(segments[...], method: method, handler: handler, pattern: pattern, into: &root)
        routes.append((method: method, pattern: "/" + segments.joined(separator: "/")))
    }

    /// Appends a middleware; the first added is the outermost.
    public mutating func add(middleware: some HTTPMiddleware) {
        middlewares.append(middleware)
    }

    /// Routes `request` through the middleware to its handler and renders any thrown error.
    public func respond(to request: Request) async throws -> Response {
        do {
            if middlewares.isEmpty { return try await route(request) }
            return try await next(0)(request)
        } catch {
            return Response.error(from: error)
        }
    }

    /// The methods registered on `path`, or nil when no route matches the path (for tests and diagnostics).
    public func allowedMethods(for path: String) -> [HTTPMethod]? {
        var parameters: [String: String] = [:]
        guard let node = Self.match(segments(of: path)[...], in: root, parameters: &parameters) else { return nil }
        return node.allowed
    }

    // MARK: - Routing

    private func next(_ index: Int) -> HTTPNext {
        if index == middlewares.count { return { request in try await self.route(request) } }
        let middleware = middlewares[index]
        let rest = next(index + 1)
        return { request in try await middleware.handle(request, next: rest) }
    }

    private func route(_ request: Request) async throws -> Response {
        var parameters: [String: String] = [:]
        guard let node = Self.match(segments(of: request.path)[...], in: root, parameters: &parameters) else {
            throw FabricError(.notFound, "no route for \(request.method) \(request.path)")
        }
        let handler = node.handlers[request.method] ?? (request.method == .head ? node.handlers[.get] : nil)
        guard let handler else {
            throw MethodNotAllowed(allowed: node.allowed, method: request.method, path: request.path)
        }
        var request = request
        if !parameters.isEmpty { request.parameters = parameters }
        return try await handler(request)
    }

    private func segments(of path: String) -> [Substring] {
        path.split(separator: "/", omittingEmptySubsequences: true)
    }

    /// One level of the route tree: literal children, at most one `:name` child, the handlers that end here.
    private struct Node: Sendable {
        var literals: [String: Node] = [:]
        var parameterName: String?
        /// Zero or one element: the `:name` child (an array gives the recursive value type its indirection).
        var parameterChild: [Node] = []
        var handlers: [HTTPMethod: HTTPHandler] = [:]

        var allowed: [HTTPMethod] {
            var methods = Set(handlers.keys)
            if methods.contains(.get) { methods.insert(.head) }
            return methods.sorted { $0.rawValue < $1.rawValue }
        }
    }

    private static func insert(
        _ segments: ArraySlice<String>, method: HTTPMethod, handler: @escaping HTTPHandler, pattern: String,
        into node: inout Node
    ) {
        guard let first = segments.first else {
            precondition(node.handlers[method] == nil, "route \(method) \(pattern) is registered twice")
            node.handlers[method] = handler
            return
        }
        let rest = segments.dropFirst()
        if first.hasPrefix(":") {
            let name = String(first.dropFirst())
            precondition(!name.isEmpty, "route \(pattern) has an unnamed parameter")
            precondition(
                node.parameterName == nil || node.parameterName == name,
                "route \(pattern) names a parameter :\(name) where another route has :\(node.parameterName ?? "")")
            node.parameterName = name
            if node.parameterChild.isEmpty { node.parameterChild.append(Node()) }
            insert(rest, method: method, handler: handler, pattern: pattern, into: &node.parameterChild[0])
        } else {
            insert(
                rest, method: method, handler: handler, pattern: pattern, into: &node.literals[first, default: Node()])
        }
    }

    /// The first node with handlers that `segments` reach, literals before parameters, collecting parameters.
    private static func match(
        _ segments: ArraySlice<Substring>, in node: Node, parameters: inout [String: String]
    ) -> Node? {
        guard let first = segments.first else { return node.handlers.isEmpty ? nil : node }
        let rest = segments.dropFirst()
        if let child = node.literals[String(first)], let found = match(rest, in: child, parameters: &parameters) {
            return found
        }
        if let name = node.parameterName, let child = node.parameterChild.first {
            if let found = match(rest, in: child, parameters: &parameters) {
                parameters[name] = String(first)
                return found
            }
        }
        return nil
    }
}

/// A 405 from the router: `Response.error(from:)` renders it as the JSON error shape plus an `Allow` header.
struct MethodNotAllowed: Error {
    var allowed: [HTTPMethod]
    var method: HTTPMethod
    var path: String
}
