import Foundation

/// Keeps secrets out of request logs: header values and query parameters that carry credentials are replaced by
/// a placeholder, and so is any user:password part of a URL. Bodies are never logged at all.
public enum HTTPRedaction {
    /// What a redacted value reads as.
    public static let placeholder = "<redacted>"

    /// Header names (lower case) whose values are always redacted, on top of a request's own `secretHeaders`.
    public static let secretHeaders: Set<String> = [
        "authorization", "proxy-authorization", "cookie", "set-cookie", "x-amz-security-token", "x-api-key",
        "api-key", "x-auth-token", "x-goog-api-key",
    ]

    /// Query parameter names (lower case) whose values are always redacted.
    public static let secretQueryParameters: Set<String> = [
        "api_key", "apikey", "key", "access_token", "token", "client_secret", "password", "assertion", "signature",
        "x-amz-security-token", "x-amz-signature", "x-amz-credential", "sig",
    ]

    /// The URL with secret query values and any userinfo replaced by the placeholder.
    public static func url(_ url: String) -> String {
        var head = url
        var query: Substring?
        var fragment = ""
        if let hash = head.firstIndex(of: "#") {
            fragment = String(head[hash...])
            head = String(head[..<hash])
        }
        if let q = head.firstIndex(of: "?") {
            query = head[head.index(after: q)...]
            head = String(head[..<q])
        }
        // scheme://user:password@host → scheme://<redacted>@host
        if let scheme = head.range(of: "://") {
            let authorityEnd = head[scheme.upperBound...].firstIndex(of: "/") ?? head.endIndex
            if let at = head[scheme.upperBound..<authorityEnd].lastIndex(of: "@") {
                head = String(head[..<scheme.upperBound]) + placeholder + String(head[at...])
            }
        }
        guard let query else { return head + fragment }
        let items = query.split(separator: "&", omittingEmptySubsequences: false).map { item -> String in
            guard let eq = item.firstIndex(of: "=") else { return String(item) }
            let name = item[..<eq]
            let decoded = (name.removingPercentEncoding ?? String(name)).lowercased()
            return secretQueryParameters.contains(decoded) ? "\(name)=\(placeholder)" : String(item)
        }
        return head + "?" + items.joined(separator: "&") + fragment
    }

    /// Whether a header's value must not be logged.
    public static func isSecret(header name: String, extra: Set<String> = []) -> Bool {
        let lower = name.lowercased()
        return secretHeaders.contains(lower) || extra.contains { $0.lowercased() == lower }
    }

    /// `Name: value` pairs joined by `, `, secret values replaced by the placeholder.
    public static func headers(_ headers: [(name: String, value: String)], extra: Set<String> = []) -> String {
        headers.map { "\($0.name): \(isSecret(header: $0.name, extra: extra) ? placeholder : $0.value)" }
            .joined(separator: ", ")
    }
}
