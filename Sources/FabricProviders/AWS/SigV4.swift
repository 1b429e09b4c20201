// AWS Signature Version 4 on OpenSSL's SHA-256 and HMAC-SHA256.
//
//   canonical request = METHOD \n URI \n sorted query \n canonical headers \n \n signed headers \n hex(sha256(body))
//   string to sign    = AWS4-HMAC-SHA256 \n amzdate \n yyyymmdd/region/service/aws4_request \n hex(sha256(canonical))
//   signing key       = HMAC(HMAC(HMAC(HMAC("AWS4"+secret, yyyymmdd), region), service), "aws4_request")
//   Authorization     = AWS4-HMAC-SHA256 Credential=AKID/scope, SignedHeaders=..., Signature=hex(HMAC(key, sts))
import FabricCore
import Foundation

/// AWS credentials: an access key pair, plus a session token for temporary (STS) credentials.
public struct AWSCredentials: Sendable, Hashable {
    public var accessKeyID: String
    public var secretAccessKey: String
    /// The STS session token, sent as `X-Amz-Security-Token` and signed.
    public var sessionToken: String?

    /// Credentials from their parts.
    public init(accessKeyID: String, secretAccessKey: String, sessionToken: String? = nil) {
        self.accessKeyID = accessKeyID
        self.secretAccessKey = secretAccessKey
        self.sessionToken = sessionToken
    }
}

/// Signs requests with AWS Signature Version 4 for one region and service.
public struct SigV4Signer: Sendable {
    /// The algorithm name in the string to sign and the Authorization header.
    public static let algorithm = "AWS4-HMAC-SHA256"
    /// Headers never signed: they are added or changed by the transport or by proxies after signing.
    public static let unsignedHeaders: Set<String> = [
        "authorization", "user-agent", "expect", "connection", "content-length", "x-amzn-trace-id",
    ]

    public let credentials: AWSCredentials
    public let region: String
    public let service: String

    /// A signer for `service` (`ec2`) in `region` (`us-east-1`).
    public init(credentials: AWSCredentials, region: String, service: String) {
        self.credentials = credentials
        self.region = region
        self.service = service
    }

    /// A canonical request and the header names it signs.
    public struct CanonicalRequest: Sendable, Hashable {
        public var text: String
        public var signedHeaders: String
    }

    /// The request with `Host`, `X-Amz-Date`, `X-Amz-Security-Token` (for session credentials) and
    /// `Authorization` set, signed at `time`.
    public func sign(_ request: HTTPRequest, at time: Timestamp) -> HTTPRequest {
        var signed = request
        let amzDate = Self.amzDate(time)
        let parts = URLParts(request.url)
        let drop: Set<String> = ["authorization", "x-amz-date", "x-amz-security-token"]
        signed.headers.removeAll { drop.contains($0.name.lowercased()) }
        if signed.header("host") == nil { signed.headers.insert(("Host", parts.host), at: 0) }
        signed.headers.append(("X-Amz-Date", amzDate))
        if let token = credentials.sessionToken { signed.headers.append(("X-Amz-Security-Token", token)) }
        let canonical = Self.canonicalRequest(
            method: request.method, path: parts.path, query: parts.query, headers: signed.headers,
            payloadHash: Crypto.hex(Crypto.sha256(request.body)))
        let signature = self.signature(canonicalRequest: canonical.text, amzDate: amzDate)
        let scope = credentialScope(date: String(amzDate.prefix(8)))
        signed.headers.append(
            (
                "Authorization",
                "\(Self.algorithm) Credential=\(credentials.accessKeyID)/\(scope), "
                    + "SignedHeaders=\(canonical.signedHeaders), Signature=\(signature)"
            ))
        signed.secretHeaders.insert("x-amz-security-token")
        return signed
    }

    /// `yyyymmdd/region/service/aws4_request`.
    public func credentialScope(date: String) -> String { "\(date)/\(region)/\(service)/aws4_request" }

    /// The string to sign for a canonical request.
    public func stringToSign(canonicalRequest: String, amzDate: String) -> String {
        [
            Self.algorithm, amzDate, credentialScope(date: String(amzDate.prefix(8))),
            Crypto.hex(Crypto.sha256(Data(canonicalRequest.utf8))),
        ].joined(separator: "\n")
    }

    /// The hex signature of a canonical request.
    public func signature(canonicalRequest: String, amzDate: String) -> String {
        let key = Self.signingKey(
            secret: credentials.secretAccessKey, date: String(amzDate.prefix(8)), region: region, service: service)
        let toSign = stringToSign(canonicalRequest: canonicalRequest, amzDate: amzDate)
        return Crypto.hex(Crypto.hmacSHA256(key: key, data: Data(toSign.utf8)))
    }

    /// The derived signing key for one day, region and service.
    public static func signingKey(secret: String, date: String, region: String, service: String) -> [UInt8] {
        let kDate = Crypto.hmacSHA256(key: Data(("AWS4" + secret).utf8), data: Data(date.utf8))
        let kRegion = Crypto.hmacSHA256(key: kDate, data: Data(region.utf8))
        let kService = Crypto.hmacSHA256(key: kRegion, data: Data(service.utf8))
        return Crypto.hmacSHA256(key: kService, data: Data("aws4_request".utf8))
    }

    /// The canonical request of a method, a (percent-decoded or raw) path, a raw query string, headers and a
    /// payload hash. Header names are lower-cased and sorted, values trimmed with inner runs of spaces collapsed,
    /// repeated headers joined with commas; query pairs are decoded, re-encoded and sorted.
    public static func canonicalRequest(
        method: String, path: String, query: String, headers: [(name: String, value: String)], payloadHash: String
    ) -> CanonicalRequest {
        var byName: [String: [String]] = [:]
        for (name, value) in headers {
            let lower = name.lowercased()
            guard !unsignedHeaders.contains(lower) else { continue }
            byName[lower, default: []].append(collapseSpaces(value))
        }
        let names = byName.keys.sorted()
        let canonicalHeaders = names.map { "\($0):\(byName[$0]!.joined(separator: ","))\n" }.joined()
        let signedHeaders = names.joined(separator: ";")
        let text = [
            method.uppercased(), canonicalURI(path), canonicalQuery(query), canonicalHeaders, signedHeaders,
            payloadHash,
        ].joined(separator: "\n")
        return CanonicalRequest(text: text, signedHeaders: signedHeaders)
    }

    /// `YYYYMMDDTHHMMSSZ` in UTC.
    public static func amzDate(_ time: Timestamp) -> String {
        let iso = time.rfc3339  // 2015-08-30T12:36:00.000Z
        let digits = iso.prefix(19).filter { $0 != "-" && $0 != ":" }
        return digits + "Z"
    }

    /// The path with dot segments removed, each byte outside RFC 3986's unreserved set (and `/`) percent-encoded.
    static func canonicalURI(_ path: String) -> String {
        let raw = path.removingPercentEncoding ?? path
        var segments: [Substring] = []
        for segment in raw.split(separator: "/", omittingEmptySubsequences: false).dropFirst() {
            switch segment {
            case ".": continue
            case "..": _ = segments.popLast()
            default: segments.append(segment)
            }
        }
        let joined = "/" + segments.joined(separator: "/")
        return uriEncode(joined, keepSlash: true)
    }

    /// Query pairs decoded, re-encoded strictly and sorted by name, then value.
    static func canonicalQuery(_ query: String) -> String {
        guard !query.isEmpty else { return "" }
        let pairs = query.split(separator: "&").map { item -> (String, String) in
            let parts = item.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let name = String(parts[0]).removingPercentEncoding ?? String(parts[0])
            let value = parts.count > 1 ? (String(parts[1]).removingPercentEncoding ?? String(parts[1])) : ""
            return (uriEncode(name, keepSlash: false), uriEncode(value, keepSlash: false))
        }
        return pairs.sorted { $0.0 != $1.0 ? $0.0 < $1.0 : $0.1 < $1.1 }.map { "\($0.0)=\($0.1)" }
            .joined(separator: "&")
    }

    /// RFC 3986 percent-encoding as SigV4 wants it: unreserved bytes as they are, everything else `%XX` (upper case).
    static func uriEncode(_ text: String, keepSlash: Bool) -> String {
        var out = ""
        for byte in text.utf8 {
            let c = Character(Unicode.Scalar(byte))
            if (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A) || (byte >= 0x30 && byte <= 0x39)
                || c == "-" || c == "_" || c == "." || c == "~" || (keepSlash && c == "/")
            {
                out.append(c)
            } else {
                out += String(format: "%%%02X", byte)
            }
        }
        return out
    }

    /// Trims a header value and collapses runs of spaces to one.
    static func collapseSpaces(_ value: String) -> String {
        value.split(separator: " ", omittingEmptySubsequences: true).joined(separator: " ")
            .trimmingCharacters(in: .whitespaces)
    }
}

/// The host (with a non-default port), path and raw query of a URL string, read without Foundation's URL (which
/// refuses some raw paths the signing vectors use).
struct URLParts {
    var host: String
    var path: String
    var query: String

    init(_ url: String) {
        var rest = Substring(url)
        var scheme = "https"
        if let r = rest.range(of: "://") {
            scheme = rest[..<r.lowerBound].lowercased()
            rest = rest[r.upperBound...]
        }
        let authorityEnd = rest.firstIndex { $0 == "/" || $0 == "?" } ?? rest.endIndex
        var authority = rest[..<authorityEnd]
        if let at = authority.lastIndex(of: "@") { authority = authority[authority.index(after: at)...] }
        rest = rest[authorityEnd...]
        if let hash = rest.firstIndex(of: "#") { rest = rest[..<hash] }
        let queryStart = rest.firstIndex(of: "?")
        path = queryStart.map { String(rest[..<$0]) } ?? String(rest)
        if path.isEmpty { path = "/" }
        query = queryStart.map { String(rest[rest.index(after: $0)...]) } ?? ""
        var host = String(authority).lowercased()
        if (scheme == "https" && host.hasSuffix(":443")) || (scheme == "http" && host.hasSuffix(":80")) {
            host = String(host[..<host.lastIndex(of: ":")!])
        }
        self.host = host
    }
}
