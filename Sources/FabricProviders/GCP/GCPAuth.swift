// Google service-account auth: a JWT signed RS256 with the key's private key is exchanged at the token endpoint
// for an OAuth access token, cached until 5 minutes before it expires.
//
//   token() ─ cached and fresh ─► access token
//      │ stale or none (one refresh at a time; concurrent callers share it)
//      ▼
//   JWT {iss: client_email, scope, aud: token_uri, iat, exp: iat+3600} ─RS256─► POST token_uri (jwt-bearer grant)
//      ─► {access_token, expires_in} ─► cache until now + expires_in
import FabricCore
import Foundation

/// The fields Fabric reads from a service-account key file (the JSON Google issues).
public struct ServiceAccountKey: Sendable, Hashable, Decodable {
    public var type: String?
    public var projectID: String?
    public var privateKeyID: String?
    /// PKCS#8 PEM RSA private key.
    public var privateKey: String
    public var clientEmail: String
    /// Where tokens are issued; Google's endpoint when absent.
    public var tokenURI: String?

    enum CodingKeys: String, CodingKey {
        case type
        case projectID = "project_id"
        case privateKeyID = "private_key_id"
        case privateKey = "private_key"
        case clientEmail = "client_email"
        case tokenURI = "token_uri"
    }

    /// Google's OAuth token endpoint.
    public static let defaultTokenURI = "https://oauth2.googleapis.com/token"
    /// The largest key file accepted, in bytes.
    public static let fileBytesMax = 64 << 10

    /// Parses a key file's JSON; errors name the problem, never the key.
    public static func parse(_ json: Data) throws -> ServiceAccountKey {
        guard json.count <= fileBytesMax else {
            throw ProviderError(
                .invalidRequest, provider: "gcp", code: "InvalidKey", "service-account key is too large")
        }
        do {
            let key = try JSONDecoder().decode(ServiceAccountKey.self, from: json)
            guard !key.clientEmail.isEmpty, !key.privateKey.isEmpty else {
                throw ProviderError(
                    .invalidRequest, provider: "gcp", code: "InvalidKey",
                    "service-account key lacks client_email or private_key")
            }
            return key
        } catch let e as ProviderError {
            throw e
        } catch DecodingError.keyNotFound(let field, _) {
            throw ProviderError(
                .invalidRequest, provider: "gcp", code: "InvalidKey", "service-account key lacks \(field.stringValue)")
        } catch DecodingError.typeMismatch(_, let context) {
            let field = context.codingPath.map(\.stringValue).joined(separator: ".")
            throw ProviderError(
                .invalidRequest, provider: "gcp", code: "InvalidKey",
                "service-account key field \(field) has the wrong type")
        } catch {
            throw ProviderError(
                .invalidRequest, provider: "gcp", code: "InvalidKey", "service-account key is not valid JSON")
        }
    }

    /// The token endpoint in effect.
    public var tokenEndpoint: String { tokenURI.flatMap { $0.isEmpty ? nil : $0 } ?? Self.defaultTokenURI }
}

/// Issues and caches OAuth access tokens for one service account.
public actor GCPTokenSource {
    /// The scope every token asks for.
    public static let scope = "https://www.googleapis.com/auth/cloud-platform"
    /// JWT lifetime (Google's maximum).
    public static let assertionLifetime = Duration.seconds(3600)
    /// A cached token is replaced this long before it expires.
    public static let refreshMargin = Duration.seconds(300)
    /// The timeout of a token request.
    public static let requestTimeout = Duration.seconds(30)
    /// The lifetime assumed when the token endpoint names none.
    public static let tokenLifetimeDefault: Int64 = 3600
    /// The longest lifetime believed, in seconds, whatever the endpoint says.
    public static let tokenLifetimeMax: Int64 = 86_400

    let key: ServiceAccountKey
    let signer: RSAPrivateKey
    let transport: any HTTPTransport
    let clock: any WallClock
    private var cached: (token: String, expires: Timestamp)?
    private var refreshing: Task<(String, Timestamp), any Error>?
    /// Tokens fetched so far (for status and tests).
    public private(set) var fetches = 0

    /// A token source for `key`; throws when its private key is not an RSA PEM.
    public init(key: ServiceAccountKey, transport: any HTTPTransport, clock: any WallClock) throws {
        self.key = key
        do {
            self.signer = try RSAPrivateKey(pem: key.privateKey)
        } catch {
            throw ProviderError(
                .invalidRequest, provider: "gcp", code: "InvalidKey",
                "service-account private_key is not an RSA PEM key")
        }
        self.transport = transport
        self.clock = clock
    }

    /// A valid access token: the cached one while it has more than `refreshMargin` left, else a new one.
    public func token() async throws -> String {
        if let cached, clock.now() < cached.expires.adding(.zero - Self.refreshMargin) { return cached.token }
        if let refreshing { return try await refreshing.value.0 }
        let task = Task { try await self.fetch() }
        refreshing = task
        defer { refreshing = nil }
        let fresh = try await task.value
        cached = fresh
        return fresh.0
    }

    /// Forgets the cached token (after the API refused it).
    public func invalidate() { cached = nil }

    /// The signed JWT assertion for `now`.
    public func assertion(now: Timestamp) throws -> String {
        struct Header: Encodable {
            var alg = "RS256"
            var typ = "JWT"
            var kid: String?
        }
        struct Claims: Encodable {
            var iss: String
            var scope: String
            var aud: String
            var iat: Int64
            var exp: Int64
        }
        let iat = now.millisecondsSinceEpoch / 1000
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let header = try encoder.encode(Header(kid: key.privateKeyID))
        let claims = try encoder.encode(
            Claims(
                iss: key.clientEmail, scope: Self.scope, aud: key.tokenEndpoint, iat: iat,
                exp: iat + Self.assertionLifetime.components.seconds))
        let signingInput = Crypto.base64URL(header) + "." + Crypto.base64URL(claims)
        let signature = try signer.signRS256(Data(signingInput.utf8))
        return signingInput + "." + Crypto.base64URL(signature)
    }

    private func fetch() async throws -> (String, Timestamp) {
        let now = clock.now()
        let body = FormEncoding.encode([
            ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"), ("assertion", try assertion(now: now)),
        ])
        let request = HTTPRequest(
            method: "POST", url: key.tokenEndpoint, headers: [("Content-Type", "application/x-www-form-urlencoded")],
            body: Data(body.utf8), timeout: Self.requestTimeout)
        let response = try await sendMapped(transport, request, provider: "gcp")
        fetches += 1
        struct TokenAnswer: Decodable {
            var access_token: String
            var expires_in: Int64?
            var token_type: String?
        }
        struct TokenError: Decodable {
            var error: String?
            var error_description: String?
        }
        guard (200..<300).contains(response.status) else {
            let detail = (try? JSONDecoder().decode(TokenError.self, from: response.body))
            let code = detail?.error ?? String(response.status)
            let message =
                "token endpoint refused the assertion: \(detail?.error_description ?? "HTTP \(response.status)")"
            let kind: ProviderErrorKind =
                response.status == 429 ? .rateLimited : response.status >= 500 ? .transient : .authFailed
            throw ProviderError(
                kind, provider: "gcp", code: code, message,
                retryAfter: RetryAfter.parse(response.header("retry-after"), now: now))
        }
        guard let answer = try? JSONDecoder().decode(TokenAnswer.self, from: response.body),
            !answer.access_token.isEmpty
        else {
            throw ProviderError(
                .transient, provider: "gcp", code: "MalformedResponse", "token endpoint answered malformed JSON")
        }
        let lifetime = Duration.seconds(
            max(0, min(answer.expires_in ?? Self.tokenLifetimeDefault, Self.tokenLifetimeMax)))
        return (answer.access_token, now.adding(lifetime))
    }
}
