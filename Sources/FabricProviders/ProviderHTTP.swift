// Small pieces every HTTP driver shares: Retry-After, query strings, transport failures as provider errors.
import FabricCore
import Foundation

/// Helpers for drivers that speak HTTP through an `HTTPTransport`.
public enum ProviderHTTP {
    /// The longest wait a Retry-After header may ask for; longer values are cut to this.
    public static let retryAfterMax = Duration.seconds(15 * 60)
    /// The most bytes of a response body an error message quotes.
    public static let quotedBodyBytesMax = 512

    /// The wait a `Retry-After` header asks for, in whole seconds (the form Kubernetes and RunPod send), capped at
    /// `retryAfterMax`; nil when absent or not a non-negative integer (an HTTP date is not read).
    public static func retryAfter(_ value: String?) -> Duration? {
        guard let text = value?.trimmingCharacters(in: .whitespaces), let seconds = Int64(text), seconds >= 0 else {
            return nil
        }
        return min(.seconds(seconds), retryAfterMax)
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

    /// Sends a request, turning a transport failure (no connection, timeout, TLS) into a `transient` error with
    /// code `Transport`. Cancellation passes through as `CancellationError`.
    public static func send(
        _ request: HTTPRequest, over transport: any HTTPTransport, provider: String
    ) async throws -> HTTPResponse {
        do {
            return try await transport.send(request)
        } catch let error as ProviderError {
            throw error
        } catch is CancellationError {
            throw CancellationError()
        } catch {
            throw ProviderError(
                .transient, provider: provider, code: transportErrorCode,
                "\(request.method) \(redactedURL(request.url)) failed: \(error)")
        }
    }

    /// `ProviderError.code` of a request that got no HTTP response.
    public static let transportErrorCode = "Transport"

    /// The URL without its query string (which may carry an `api_key`).
    public static func redactedURL(_ url: String) -> String {
        guard let q = url.firstIndex(of: "?") else { return url }
        return String(url[..<q]) + "?…"
    }

    /// A calendar date `YYYY-MM-DD` (UTC) for `Offer.asOf`.
    public static func date(_ t: Timestamp) -> String { String(t.rfc3339.prefix(10)) }
}
