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
    /// TLS material passed by value (a kubeconfig's CA and client certificate); nil: the system's trust store
    /// and no client certificate.
    public var tls: TLSOptions?

    public init(
        method: String, url: String, headers: [(name: String, value: String)] = [], body: Data = Data(),
        timeout: Duration = .seconds(30), secretHeaders: Set<String> = [], tls: TLSOptions? = nil
    ) {
        self.method = method
        self.url = url
        self.headers = headers
        self.body = body
        self.timeout = timeout
        self.secretHeaders = secretHeaders
        self.tls = tls
    }

    public static func == (a: HTTPRequest, b: HTTPRequest) -> Bool {
        a.method == b.method && a.url == b.url && a.headers.map(\.name) == b.headers.map(\.name)
            && a.headers.map(\.value) == b.headers.map(\.value) && a.body == b.body && a.timeout == b.timeout
            && a.tls == b.tls
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

/// TLS settings a request carries as bytes rather than file paths (libcurl's `CURLOPT_CAINFO_BLOB`,
/// `CURLOPT_SSLCERT_BLOB` and `CURLOPT_SSLKEY_BLOB`), as kubeconfigs embed them. Its description never shows the key.
public struct TLSOptions: Sendable, Hashable, CustomStringConvertible {
    /// PEM certificates to verify the server with, instead of the system's trust store.
    public var caPEM: Data?
    /// PEM client certificate presented to the server.
    public var clientCertificatePEM: Data?
    /// PEM private key of the client certificate: a secret.
    public var clientKeyPEM: Data?
    /// Skip verifying the server's certificate (kubeconfig `insecure-skip-tls-verify`); never the default.
    public var insecureSkipVerify: Bool

    public init(
        caPEM: Data? = nil, clientCertificatePEM: Data? = nil, clientKeyPEM: Data? = nil,
        insecureSkipVerify: Bool = false
    ) {
        self.caPEM = caPEM
        self.clientCertificatePEM = clientCertificatePEM
        self.clientKeyPEM = clientKeyPEM
        self.insecureSkipVerify = insecureSkipVerify
    }

    /// Whether nothing differs from the defaults (system trust store, no client certificate).
    public var isEmpty: Bool { self == TLSOptions() }

    /// Sizes only: `TLSOptions(ca: 1204 bytes, cert: 1155 bytes, key: set)`.
    public var description: String {
        var parts: [String] = []
        if let caPEM { parts.append("ca: \(caPEM.count) bytes") }
        if let clientCertificatePEM { parts.append("cert: \(clientCertificatePEM.count) bytes") }
        if clientKeyPEM != nil { parts.append("key: set") }
        if insecureSkipVerify { parts.append("insecure") }
        return "TLSOptions(\(parts.joined(separator: ", ")))"
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
