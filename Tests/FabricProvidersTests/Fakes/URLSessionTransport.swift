// A test-only HTTPTransport on Foundation's URLSession, for driver tests against the fake servers on loopback.
// It ignores `HTTPRequest.tls` (the fakes speak plain HTTP); the production client is libcurl.
import FabricProviders
import Foundation

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// Sends requests with an ephemeral URLSession; each request's `timeout` bounds the whole call.
///
/// The timeout is enforced here, by racing the call against a sleep, not by `URLRequest.timeoutInterval`:
/// swift-corelibs-foundation let a timed-out request's timer fail the next request at once (seen as
/// NSURLErrorTimedOut 3 ms into a call with a 500 ms limit).
final class URLSessionTransport: HTTPTransport, @unchecked Sendable {
    /// The URLSession's own timeout, far beyond any test's request timeout.
    static let sessionTimeoutSeconds = 120.0
    private let session: URLSession

    init() {
        let configuration = URLSessionConfiguration.ephemeral
        configuration.requestCachePolicy = .reloadIgnoringLocalCacheData
        configuration.urlCache = nil
        session = URLSession(configuration: configuration)
    }

    deinit { session.invalidateAndCancel() }

    func send(_ request: HTTPRequest) async throws -> HTTPResponse {
        guard let url = URL(string: request.url) else { throw URLError(.badURL) }
        var r = URLRequest(url: url)
        r.httpMethod = request.method
        for header in request.headers { r.addValue(header.value, forHTTPHeaderField: header.name) }
        if !request.body.isEmpty { r.httpBody = request.body }
        r.timeoutInterval = Self.sessionTimeoutSeconds
        let session = self.session
        let timeout = request.timeout
        let urlRequest = r
        return try await withThrowingTaskGroup(of: HTTPResponse?.self) { group in
            group.addTask {
                let (data, response) = try await session.data(for: urlRequest)
                guard let http = response as? HTTPURLResponse else { throw URLError(.badServerResponse) }
                var headers: [String: String] = [:]
                for (name, value) in http.allHeaderFields {
                    if let name = name as? String, let value = value as? String { headers[name.lowercased()] = value }
                }
                return HTTPResponse(status: http.statusCode, headers: headers, body: data)
            }
            group.addTask {
                try await Task.sleep(for: timeout)
                return nil
            }
            defer { group.cancelAll() }
            guard let first = try await group.next(), let response = first else { throw URLError(.timedOut) }
            return response
        }
    }
}

/// A transport that remembers every request it passes on (to check headers, TLS material and bodies).
final class RecordingTransport: HTTPTransport, @unchecked Sendable {
    let inner: any HTTPTransport
    private let lock = NSLock()
    private var recorded: [HTTPRequest] = []

    init(_ inner: any HTTPTransport) { self.inner = inner }

    var requests: [HTTPRequest] { lock.withLock { recorded } }

    func send(_ request: HTTPRequest) async throws -> HTTPResponse {
        lock.withLock { recorded.append(request) }
        return try await inner.send(request)
    }
}
