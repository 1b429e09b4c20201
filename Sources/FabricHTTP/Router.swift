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
    /// The route tree, flattened: `nodes[0]` is the root, children are indices (cheap to walk, no copies).
    private var nodes = [Node()]
    private var middlewares: [any HTTPMiddleware] = []

    /// Every registered route in registration order, its pattern normalized to `/segment/:name` (empty segments
    /// dropped). HEAD is not listed: it is answered by the GET handler unless registered itself.
    public private(set) var routes: [(method: HTTPMethod, pattern: String)] = []

    /// Whether a query parameter a route does not name is refused with 400 (the default) or passed on to the handler
    /// (for servers that stand in for other APIs, which ignore what they do not know).
    public var refusesUnknownQuery = true

    public init() {}

    /// Registers `handler` for GET (and HEAD, unless HEAD has its own route) on `pattern`, taking the query
    /// parameters named in `query` (any other is refused with 400).
    public mutating func get(_ pattern: String, query: [String] = [], _ handler: @escaping HTTPHandler) {
        on(.get, pattern, query: query, handler)
    }

    /// Registers `handler` for POST on `pattern`, taking the query parameters named in `query`.
    public mutating func post(_ pattern: String, query: [String] = [], _ handler: @escaping HTTPHandler) {
        on(.post, pattern, query: query, handler)
    }

    /// Registers `handler` for PUT on `pattern`, taking the query parameters named in `query`.
    public mutating func put(_ pattern: String, query: [String] = [], _ handler: @escaping HTTPHandler) {
        on(.put, pattern, query: query, handler)
    }

    /// Registers `handler` for DELETE on `pattern`, taking the query parameters named in `query`.
    public mutating func delete(_ pattern: String, query: [String] = [], _ handler: @escaping HTTPHandler) {
        on(.delete, pattern, query: query, handler)
    }

    /// Registers `handler` for `method` on `pattern`; registering the same method and pattern twice is a bug. A
    /// request with a query parameter not named in `query` is refused with 400 `invalid_argument` naming it, so a
    /// misspelt one (`dryrun` for `dryRun`) is never silently ignored.
    public mutating func on(
        _ method: HTTPMethod, _ pattern: String, query: [String] = [], _ handler: @escaping HTTPHandler
    ) {
        var index = 0
        let segments = Self.segments(of: pattern)
        for segment in segments {
            if segment.hasPrefix(":") {
                let name = String(segment.dropFirst())
                precondition(!name.isEmpty, "route \(pattern) has an unnamed parameter")
                if let child = nodes[index].parameter {
                    precondition(
                        child.name == name,
                        "route \(pattern) names a parameter :\(name) where another route has :\(child.name)")
                    index = child.node
                } else {
                    nodes.append(Node())
                    nodes[index].parameter = (name, nodes.count - 1)
                    index = nodes.count - 1
                }
            } else if let child = nodes[index].literal(segment) {
                index = child
            } else {
                nodes.append(Node())
                nodes[index].literals.append((String(segment), nodes.count - 1))
                index = nodes.count - 1
            }
        }
        precondition(nodes[index].handler(for: method) == nil, "route \(method) \(pattern) is registered twice")
        nodes[index].handlers.append((method, query, handler))
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
        guard let index = match(Self.segments(of: path)[...], from: 0, parameters: &parameters) else { return nil }
        return nodes[index].allowed
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
        guard let index = match(Self.segments(of: request.path)[...], from: 0, parameters: &parameters) else {
            throw FabricError(.notFound, "no route for \(request.method) \(request.path)")
        }
        let node = nodes[index]
        guard
            let entry = node.entry(for: request.method) ?? (request.method == .head ? node.entry(for: .get) : nil)
        else {
            throw MethodNotAllowed(allowed: node.allowed, method: request.method, path: request.path)
        }
        let handler = entry.handler
        for item in request.query.items where refusesUnknownQuery && !entry.query.contains(item.name) {
            let takes =
                entry.query.isEmpty ? "takes no query parameters" : "takes \(entry.query.joined(separator: ", "))"
            throw FabricError.invalid(
                String(item.name.prefix(100)),
                "unknown query parameter \"\(item.name.prefix(100))\": \(request.method) \(request.path.prefix(200)) \(takes)"
            )
        }
        if parameters.isEmpty { return try await handler(request) }
        var request = request
        request.parameters = parameters
        return try await handler(request)
    }

    /// One level of the route tree: literal children, at most one `:name` child, the handlers that end here.
    private struct Node: Sendable {
        /// A list, not a dictionary: fan-out is small, and comparing bytes beats hashing a String.
        var literals: [(segment: String, node: Int)] = []
        var parameter: (name: String, node: Int)?
        /// A list for the same reason: a handful of methods, compared as short strings.
        var handlers: [(method: HTTPMethod, query: [String], handler: HTTPHandler)] = []

        func handler(for method: HTTPMethod) -> HTTPHandler? { entry(for: method)?.handler }

        func entry(for method: HTTPMethod) -> (method: HTTPMethod, query: [String], handler: HTTPHandler)? {
            for entry in handlers where entry.method == method { return entry }
            return nil
        }

        func literal(_ segment: Substring) -> Int? {
            for literal in literals where literal.segment.utf8.elementsEqual(segment.utf8) { return literal.node }
            return nil
        }

        var allowed: [HTTPMethod] {
            var methods = Set(handlers.map(\.method))
            if methods.contains(.get) { methods.insert(.head) }
            return methods.sorted { $0.rawValue < $1.rawValue }
        }
    }

    /// The first node with handlers that `segments` reach from `index`, literals before parameters.
    private func match(
        _ segments: ArraySlice<Substring>, from index: Int, parameters: inout [String: String]
    ) -> Int? {
        guard let first = segments.first else { return nodes[index].handlers.isEmpty ? nil : index }
        let rest = segments.dropFirst()
        if let child = nodes[index].literal(first),
            let found = match(rest, from: child, parameters: &parameters)
        {
            return found
        }
        if let parameter = nodes[index].parameter,
            let found = match(rest, from: parameter.node, parameters: &parameters)
        {
            parameters[parameter.name] = String(first)
            return found
        }
        return nil
    }

    /// The non-empty `/`-separated segments of `path`, scanned as bytes (`String.split` works on Characters and
    /// costs several times more).
    private static func segments(of path: String) -> [Substring] {
        var segments: [Substring] = []
        let bytes = path.utf8
        var start = bytes.startIndex
        while start < bytes.endIndex {
            guard bytes[start] != UInt8(ascii: "/") else {
                start = bytes.index(after: start)
                continue
            }
            var end = bytes.index(after: start)
            while end < bytes.endIndex, bytes[end] != UInt8(ascii: "/") { end = bytes.index(after: end) }
            segments.append(path[start..<end])
            start = end
        }
        return segments
    }
}

/// A 405 from the router: `Response.error(from:)` renders it as the JSON error shape plus an `Allow` header.
struct MethodNotAllowed: Error {
    var allowed: [HTTPMethod]
    var method: HTTPMethod
    var path: String
}
