import Foundation

extension ProviderError {
    /// The provider error a failed HTTP exchange means: network trouble and timeouts are transient, a TLS failure
    /// is an authentication problem (a wrong CA or a refused client certificate does not heal by retrying).
    public init(provider: String, transport error: HTTPTransportError, file: String = #fileID, line: Int = #line) {
        let kind: ProviderErrorKind
        switch error.kind {
        case .timeout, .connection, .responseTooLarge, .other, .cancelled: kind = .transient
        case .tls: kind = .authFailed
        case .invalidRequest: kind = .invalidRequest
        }
        self.init(kind, provider: provider, code: error.kind.rawValue, error.message, file: file, line: line)
    }
}

/// Sends a request through `transport`, turning transport failures into `ProviderError` (cancellation stays
/// `CancellationError`).
func sendMapped(_ transport: any HTTPTransport, _ request: HTTPRequest, provider: String) async throws -> HTTPResponse {
    do {
        return try await transport.send(request)
    } catch let e as HTTPTransportError {
        if e.kind == .cancelled { throw CancellationError() }
        throw ProviderError(provider: provider, transport: e)
    }
}
