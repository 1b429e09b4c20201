// Small pieces every HTTP driver shares: Retry-After, query strings, transport failures as provider errors.
import FabricCore
import Foundation

/// Helpers for drivers that speak HTTP through an `HTTPTransport`.
public enum ProviderHTTP {
    /// The longest wait a Retry-After header may ask for; longer values are cut to this.
    public static let retryAfterMax = Duration.seconds(15 * 60)
    /// The most bytes of a response body an error message quotes.
    public static let quotedBodyBytesMax = 512

    /// The wait a `Retry-After` header asks for (seconds or an HTTP date, read by `RetryAfter.parse`), capped at
    /// `retryAfterMax`; nil when absent or unreadable.
    public static func retryAfter(_ value: String?, now: Timestamp) -> Duration? {
        RetryAfter.parse(value, now: now).map { min($0, retryAfterMax) }
    }

    /// `name=value` pairs joined with `&`, each percent-encoded for a query component (`=`, `&`, `,`, `/` and
    /// `!` inside values are encoded).
    public static func query(_ items: [(String, String)]) -> String {
        items.map { "\(encode($0.0))=\(encode($0.1))" }.joined(separator: "&")
    }

    /// Percent-encodes everything but RFC 3986 unreserved characters.
    public static func encode(_ text: String) -> String {
        text.addingPercentEncoding(withAllowedCharacters: unreserved) ?? text
    }

    private static let unreserved = CharacterSet(
        charactersIn: "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")

    /// The start of a response body for an error message, as UTF-8 text with invalid bytes replaced.
    public static func quote(_ body: Data) -> String {
        let text = String(decoding: body.prefix(quotedBodyBytesMax), as: UTF8.self)
        return body.count > quotedBodyBytesMax ? text + "..." : text
    }

    /// Sends a request, turning a failure without a response into a ProviderError: a TLS failure (unknown CA, a
    /// refused client certificate) is `authFailed` with code `TLS`, a request libcurl cannot send is
    /// `invalidRequest`, anything else (no connection, timeout) is `transient` with code `Transport`.
    /// Cancellation passes through as `CancellationError`.
    public static func send(
        _ request: HTTPRequest, over transport: any HTTPTransport, provider: String
    ) async throws -> HTTPResponse {
        do {
            return try await transport.send(request)
        } catch let error as ProviderError {
            throw error
        } catch is CancellationError {
            throw CancellationError()
        } catch let error as HTTPTransportError where error.kind == .cancelled {
            throw CancellationError()
        } catch {
            let what = "\(request.method) \(HTTPRedaction.url(request.url)) failed: \(error)"
            switch (error as? HTTPTransportError)?.kind {
            case .tls: throw ProviderError(.authFailed, provider: provider, code: tlsErrorCode, what)
            case .invalidRequest:
                throw ProviderError(.invalidRequest, provider: provider, code: transportErrorCode, what)
            default: throw ProviderError(.transient, provider: provider, code: transportErrorCode, what)
            }
        }
    }

    /// `ProviderError.code` of a request that got no HTTP response.
    public static let transportErrorCode = "Transport"
    /// `ProviderError.code` of a TLS failure.
    public static let tlsErrorCode = "TLS"

    /// A calendar date `YYYY-MM-DD` (UTC) for `Offer.asOf`.
    public static func date(_ t: Timestamp) -> String { String(t.rfc3339.prefix(10)) }
}
