import Foundation

/// One HTTP request a driver makes.
public struct HTTPRequest: Sendable, Hashable {
    public var method: String
    public var url: String
    /// Header names and values, in order; names are sent as given.
    public var headers: [(name: String, value: String)]
    public var body: Data
    /// The whole call (connect, send, receive) must finish within this.
    public var timeout: Duration
    /// Header names whose values never appear in logs (Authorization is always redacted).
    public var secretHeaders: Set<String>

    public init(
        method: String, url: String, headers: [(name: String, value: String)] = [], body: Data = Data(),
        timeout: Duration = .seconds(30), secretHeaders: Set<String> = []
    ) {
        self.method = method
        self.url = url
        self.headers = headers
        self.body = body
        self.timeout = timeout
        self.secretHeaders = secretHeaders
    }

    public static func == (a: HTTPRequest, b: HTTPRequest) -> Bool {
        a.method == b.method && a.url == b.url && a.headers.map(\.name) == b.headers.map(\.name)
            && a.headers.map(\.value) == b.headers.map(\.value) && a.body == b.body && a.timeout == b.timeout
    }

    public func hash(into h: inout Hasher) {
        h.combine(method)
        h.combine(url)
        h.combine(body)
    }

    /// The first value of a header, by case-insensitive name.
    public func header(_ name: String) -> String? {
        headers.first { $0.name.lowercased() == name.lowercased() }?.value
    }
}

/// The answer to an `HTTPRequest`.
public struct HTTPResponse: Sendable, Hashable {
    public var status: Int
    /// Header values by lower-case name (the last one wins where a header repeats).
    public var headers: [String: String]
    public var body: Data

    public init(status: Int, headers: [String: String] = [:], body: Data = Data()) {
        self.status = status
        self.headers = headers
        self.body = body
    }

    /// The first value of a header, by case-insensitive name.
    public func header(_ name: String) -> String? { headers[name.lowercased()] }
}

/// Sends HTTP requests: the libcurl client in production, the same client against a loopback fake server in
/// tests. A transport error (no connection, timeout, TLS) throws; any HTTP status is a response.
public protocol HTTPTransport: Sendable {
    func send(_ request: HTTPRequest) async throws -> HTTPResponse
}
