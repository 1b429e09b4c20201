// Request, Response and their parts: methods, case-insensitive headers, query parameters, the JSON error shape.
import FabricCore
import Foundation

/// An HTTP request method; compared by its exact (upper-case) token.
public struct HTTPMethod: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: String

    public init(rawValue: String) { self.rawValue = rawValue }

    public static let get = HTTPMethod(rawValue: "GET")
    public static let head = HTTPMethod(rawValue: "HEAD")
    public static let post = HTTPMethod(rawValue: "POST")
    public static let put = HTTPMethod(rawValue: "PUT")
    public static let delete = HTTPMethod(rawValue: "DELETE")
    public static let patch = HTTPMethod(rawValue: "PATCH")
    public static let options = HTTPMethod(rawValue: "OPTIONS")

    public var description: String { rawValue }
}

/// HTTP header fields in arrival order; names compare ASCII case-insensitively, repeated names are kept.
public struct HTTPHeaders: Sendable, Equatable, Sequence, ExpressibleByDictionaryLiteral {
    /// One header line.
    public struct Field: Sendable, Equatable {
        public var name: String
        public var value: String

        public init(name: String, value: String) {
            self.name = name
            self.value = value
        }
    }

    public private(set) var fields: [Field]

    public init() { fields = [] }

    init(fields: [Field]) { self.fields = fields }

    public init(dictionaryLiteral elements: (String, String)...) {
        fields = elements.map { Field(name: $0.0, value: $0.1) }
    }

    /// The first value of `name` (any case), or nil.
    public subscript(name: String) -> String? {
        for field in fields where asciiCaseInsensitiveEqual(field.name, name) { return field.value }
        return nil
    }

    /// Every value of `name` (any case), in arrival order.
    public func values(for name: String) -> [String] {
        fields.filter { asciiCaseInsensitiveEqual($0.name, name) }.map(\.value)
    }

    /// Appends a field, keeping any earlier ones of the same name.
    public mutating func add(name: String, value: String) {
        fields.append(Field(name: name, value: value))
    }

    /// Replaces every field of `name` (any case) with one field.
    public mutating func replaceOrAdd(name: String, value: String) {
        fields.removeAll { asciiCaseInsensitiveEqual($0.name, name) }
        fields.append(Field(name: name, value: value))
    }

    public var count: Int { fields.count }

    public func makeIterator() -> IndexingIterator<[Field]> { fields.makeIterator() }

    /// Equality ignores name case but not order.
    public static func == (a: HTTPHeaders, b: HTTPHeaders) -> Bool {
        a.fields.count == b.fields.count
            && zip(a.fields, b.fields).allSatisfy {
                asciiCaseInsensitiveEqual($0.name, $1.name) && $0.value == $1.value
            }
    }
}

/// Decoded query parameters in arrival order; names are case-sensitive, repeated names are kept.
public struct QueryParameters: Sendable, Equatable, Sequence, ExpressibleByDictionaryLiteral {
    /// One `name=value` pair; a bare `name` has the value "".
    public struct Item: Sendable, Equatable {
        public var name: String
        public var value: String

        public init(name: String, value: String) {
            self.name = name
            self.value = value
        }
    }

    public private(set) var items: [Item]

    public init() { items = [] }

    init(items: [Item]) { self.items = items }

    public init(dictionaryLiteral elements: (String, String)...) {
        items = elements.map { Item(name: $0.0, value: $0.1) }
    }

    /// The first value of `name`, or nil.
    public subscript(name: String) -> String? {
        items.first { $0.name == name }?.value
    }

    /// Every value of `name`, in arrival order.
    public func values(for name: String) -> [String] {
        items.filter { $0.name == name }.map(\.value)
    }

    /// Appends a pair.
    public mutating func add(name: String, value: String) {
        items.append(Item(name: name, value: value))
    }

    public var isEmpty: Bool { items.isEmpty }

    public func makeIterator() -> IndexingIterator<[Item]> { items.makeIterator() }
}

/// One HTTP request as handlers see it: the whole body has arrived and is within the server's limit.
public struct Request: Sendable {
    public var method: HTTPMethod
    /// The path without the query string, percent-decoded by the server.
    public var path: String
    public var query: QueryParameters
    public var headers: HTTPHeaders
    public var body: Data
    /// Values of the route's `:name` segments, filled in by the router.
    public var parameters: [String: String]

    public init(
        method: HTTPMethod, path: String, query: QueryParameters = [:], headers: HTTPHeaders = [:],
        body: Data = Data(), parameters: [String: String] = [:]
    ) {
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.body = body
        self.parameters = parameters
    }

    /// The route parameter `name`; a missing one is a programming error in the route and reported as internal.
    public func parameter(_ name: String) throws(FabricError) -> String {
        guard let value = parameters[name] else {
            throw FabricError(.internalError, "route has no parameter \(name)")
        }
        return value
    }

    /// Decodes the body as JSON; a malformed body is `.invalidArgument` on field "body".
    public func decode<T: Decodable>(_ type: T.Type) throws(FabricError) -> T {
        do { return try JSONDecoder().decode(type, from: body) } catch let error as FabricError {
            throw error
        } catch {
            throw FabricError.invalid("body", "body is not a valid \(T.self) document: \(describe(error))")
        }
    }
}

/// One HTTP response: a status, header fields and the body bytes.
public struct Response: Sendable {
    public var status: Int
    public var headers: HTTPHeaders
    public var body: Data

    public init(status: Int = 200, headers: HTTPHeaders = [:], body: Data = Data()) {
        self.status = status
        self.headers = headers
        self.body = body
    }

    /// The media type of every JSON body.
    public static let jsonContentType = "application/json"

    /// `value` encoded with `FabricJSON.encode`, as `application/json`.
    public static func json<T: Encodable>(_ value: T, status: Int = 200) throws(FabricError) -> Response {
        Response(status: status, headers: ["Content-Type": jsonContentType], body: try FabricJSON.encode(value))
    }

    /// Raw bytes with the given media type.
    public static func bytes(
        _ bytes: some Sequence<UInt8>, status: Int = 200, contentType: String = "application/octet-stream"
    ) -> Response {
        Response(status: status, headers: ["Content-Type": contentType], body: Data(bytes))
    }

    /// UTF-8 text as `text/plain`.
    public static func text(_ text: String, status: Int = 200) -> Response {
        Response(status: status, headers: ["Content-Type": "text/plain; charset=utf-8"], body: Data(text.utf8))
    }

    /// The one JSON error shape `{"error":{"code","message","field"}}` with the code's HTTP status.
    public static func error(_ error: FabricError) -> Response {
        let envelope = ErrorEnvelope(
            error: .init(code: error.code.rawValue, message: error.message, field: error.field))
        let body = (try? FabricJSON.encode(envelope)) ?? Data(#"{"error":{"code":"internal","message":"?"}}"#.utf8)
        return Response(status: error.code.httpStatus, headers: ["Content-Type": jsonContentType], body: body)
    }

    /// Renders any error: a `FabricError` as itself, anything else as a 500 that reveals nothing about it.
    public static func error(from error: any Error) -> Response {
        if let fabric = error as? FabricError { return .error(fabric) }
        if let notAllowed = error as? MethodNotAllowed {
            var response = Response.error(
                FabricError(.methodNotAllowed, "\(notAllowed.method) is not allowed on \(notAllowed.path)"))
            response.headers.add(name: "Allow", value: notAllowed.allowed.map(\.rawValue).joined(separator: ", "))
            return response
        }
        return .error(FabricError(.internalError, internalErrorMessage))
    }

    /// The message of every 500 made from a non-Fabric error.
    public static let internalErrorMessage = "internal error"
}

/// The wire shape of an error body; `field` is left out when nil.
struct ErrorEnvelope: Codable, Equatable {
    struct Detail: Codable, Equatable {
        var code: String
        var message: String
        var field: String?
    }

    var error: Detail
}

/// ASCII case-insensitive equality, the rule for HTTP field names.
@inline(__always)
func asciiCaseInsensitiveEqual(_ a: String, _ b: String) -> Bool {
    var ia = a.utf8.makeIterator()
    var ib = b.utf8.makeIterator()
    while true {
        switch (ia.next(), ib.next()) {
        case (nil, nil): return true
        case (let x?, let y?):
            if x == y { continue }
            if x | 0x20 != y | 0x20 { return false }
            let lower = x | 0x20
            if lower < UInt8(ascii: "a") || lower > UInt8(ascii: "z") { return false }
        default: return false
        }
    }
}

/// A short description of a decoding error that names the path but never echoes the payload.
private func describe(_ error: any Error) -> String {
    guard let decoding = error as? DecodingError else { return "malformed JSON" }
    func path(_ context: DecodingError.Context) -> String {
        let p = context.codingPath.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".")
        return p.isEmpty ? "" : " at \(p)"
    }
    switch decoding {
    case .dataCorrupted(let c): return "malformed JSON\(path(c))"
    case .keyNotFound(let key, let c): return "missing key \(key.stringValue)\(path(c))"
    case .typeMismatch(_, let c), .valueNotFound(_, let c): return "wrong type\(path(c))"
    @unknown default: return "malformed JSON"
    }
}
