// A stateful fake of the GCE Compute REST API and Google's token endpoint, on FabricHTTP, following the wire
// shapes of provider-apis.md §5: service-account JWTs verified with the test key's public key, bearer tokens
// checked, instances and zone Operations kept in memory, requestId honoured, and scripted faults.
import FabricCore
import FabricHTTP
import Foundation
import Synchronization

@testable import FabricProviders

/// The instance resource as the fake stores and serves it.
struct FakeInstance: Codable, Sendable {
    struct Access: Codable, Sendable {
        var type: String?
        var name: String?
        var natIP: String?
    }
    struct NIC: Codable, Sendable {
        var network: String?
        var networkIP: String?
        var accessConfigs: [Access]?
    }
    struct Scheduling: Codable, Sendable {
        var provisioningModel: String?
        var instanceTerminationAction: String?
        var onHostMaintenance: String?
        var automaticRestart: Bool?
    }
    struct MetadataItem: Codable, Sendable {
        var key: String
        var value: String
    }
    struct Metadata: Codable, Sendable {
        var items: [MetadataItem]?
    }
    var kind: String? = "compute#instance"
    var id: String?
    var name: String
    var zone: String?
    var status: String?
    var machineType: String?
    var labels: [String: String]?
    var networkInterfaces: [NIC]?
    var scheduling: Scheduling?
    var metadata: Metadata?
}

/// A zone Operation as the fake serves it.
struct FakeOperation: Codable, Sendable {
    struct ErrorItem: Codable, Sendable {
        var code: String
        var message: String
    }
    struct Errors: Codable, Sendable {
        var errors: [ErrorItem]
    }
    var kind = "compute#operation"
    var name: String
    var operationType: String
    var status: String
    var targetLink: String
    var zone: String
    var httpErrorStatusCode: Int?
    var error: Errors?
}

/// A one-shot fault for the next request whose method matches and whose path contains `path`.
struct FakeFault: Sendable {
    enum Kind: Sendable {
        /// Answer this status with GCE's error JSON (`reason` in errors[0]) and an optional Retry-After.
        case status(Int, reason: String, retryAfter: String? = nil)
        /// Answer 200 with a body that is not JSON.
        case malformedJSON
        /// Wait this long, then answer normally.
        case slow(Duration)
        /// Do the work, then answer this status (a lost answer: the client will retry).
        case applyThenFail(Int)
    }
    var method: String
    var path: String
    var kind: Kind
}

final class FakeGCE: HTTPResponder {
    struct PendingInsert: Sendable {
        var instance: FakeInstance
        var errorCode: String?
    }
    struct State {
        var tokenURI = ""
        var instances: [String: [String: FakeInstance]] = [:]  // zone → name → instance
        var operations: [String: FakeOperation] = [:]
        var pending: [String: PendingInsert] = [:]  // operation → what DONE applies
        var requestIDs: [String: String] = [:]  // requestId → operation
        var faults: [FakeFault] = []
        var zoneErrors: [String: [String]] = [:]  // zone → operation error codes for the next inserts
        var tokens: Set<String> = []
        var tokenRequests = 0
        var rejectedAssertions = 0
        var inserts: [(zone: String, requestID: String, body: Data)] = []
        var requests: [String] = []
        var counter = 0
    }

    let project: String
    let clientEmail: String
    let publicKey: RSAPublicKey
    private let state = Mutex(State())

    init(project: String, clientEmail: String, publicKeyPEM: String) throws {
        self.project = project
        self.clientEmail = clientEmail
        self.publicKey = try RSAPublicKey(pem: publicKeyPEM)
    }

    // MARK: Test controls

    func setTokenURI(_ uri: String) { state.withLock { $0.tokenURI = uri } }
    func inject(_ fault: FakeFault) { state.withLock { $0.faults.append(fault) } }
    /// The next inserts in `zone` end with these Operation error codes, one per insert.
    func failInserts(in zone: String, with codes: [String]) {
        state.withLock { $0.zoneErrors[zone, default: []] += codes }
    }
    func plant(_ instance: FakeInstance, zone: String) {
        state.withLock { $0.instances[zone, default: [:]][instance.name] = instance }
    }
    func preempt(_ name: String, zone: String) { state.withLock { $0.instances[zone]?[name]?.status = "TERMINATED" } }
    var tokenRequests: Int { state.withLock { $0.tokenRequests } }
    var rejectedAssertions: Int { state.withLock { $0.rejectedAssertions } }
    var inserts: [(zone: String, requestID: String, body: Data)] { state.withLock { $0.inserts } }
    var requests: [String] { state.withLock { $0.requests } }
    func instances(in zone: String) -> [FakeInstance] {
        state.withLock { ($0.instances[zone] ?? [:]).values.sorted { $0.name < $1.name } }
    }
    var instanceCount: Int { state.withLock { $0.instances.values.reduce(0) { $0 + $1.count } } }

    // MARK: Serving

    func respond(to request: Request) async throws -> Response {
        let fault = state.withLock { s -> FakeFault.Kind? in
            s.requests.append("\(request.method.rawValue) \(request.path)")
            guard
                let i = s.faults.firstIndex(where: {
                    $0.method == request.method.rawValue && request.path.contains($0.path)
                })
            else { return nil }
            return s.faults.remove(at: i).kind
        }
        switch fault {
        case .status(let code, let reason, let retryAfter)?:
            var r = Self.error(code, reason: reason, message: "scripted \(reason)")
            if let retryAfter { r.headers.add(name: "Retry-After", value: retryAfter) }
            return r
        case .malformedJSON?:
            return Response(status: 200, headers: ["Content-Type": "application/json"], body: Data("{\"name\": ".utf8))
        case .slow(let d)?:
            try await Task.sleep(for: d)
            return try route(request)
        case .applyThenFail(let code)?:
            _ = try route(request)
            return Self.error(code, reason: "backendError", message: "scripted lost answer")
        case nil:
            return try route(request)
        }
    }

    private func route(_ request: Request) throws -> Response {
        if request.path == "/token" { return token(request) }
        let prefix = "/compute/v1/projects/\(project)/zones/"
        guard request.path.hasPrefix(prefix) else {
            return Self.error(404, reason: "notFound", message: "no such path")
        }
        guard let auth = request.headers["authorization"], auth.hasPrefix("Bearer "),
            state.withLock({ $0.tokens.contains(String(auth.dropFirst(7))) })
        else { return Self.error(401, reason: "authError", message: "Request had invalid authentication credentials.") }
        let parts = request.path.dropFirst(prefix.count).split(separator: "/").map(String.init)
        switch (request.method.rawValue, parts.count > 1 ? parts[1] : "", parts.count) {
        case ("POST", "instances", 2): return insert(zone: parts[0], request)
        case ("GET", "instances", 2): return list(zone: parts[0], request)
        case ("GET", "instances", 3): return get(zone: parts[0], name: parts[2])
        case ("DELETE", "instances", 3): return delete(zone: parts[0], name: parts[2])
        case ("GET", "operations", 3): return operation(zone: parts[0], name: parts[2])
        default: return Self.error(404, reason: "notFound", message: "no such path")
        }
    }

    private func token(_ request: Request) -> Response {
        let form = Dictionary(
            FormEncoding.decode(String(decoding: request.body, as: UTF8.self)), uniquingKeysWith: { a, _ in a })
        let verdict: String? = state.withLock { s in
            s.tokenRequests += 1
            guard form["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer" else {
                return "unsupported grant_type"
            }
            guard let jwt = form["assertion"] else { return "no assertion" }
            let parts = jwt.split(separator: ".", omittingEmptySubsequences: false)
            guard parts.count == 3, let headerData = Crypto.base64URLDecode(parts[0]),
                let claimsData = Crypto.base64URLDecode(parts[1]), let signature = Crypto.base64URLDecode(parts[2]),
                let header = try? JSONSerialization.jsonObject(with: headerData) as? [String: Any],
                let claims = try? JSONSerialization.jsonObject(with: claimsData) as? [String: Any]
            else { return "malformed JWT" }
            guard header["alg"] as? String == "RS256", header["typ"] as? String == "JWT" else { return "bad header" }
            guard publicKey.verifyRS256(signature, of: Data("\(parts[0]).\(parts[1])".utf8)) else {
                return "bad signature"
            }
            guard claims["iss"] as? String == clientEmail, claims["aud"] as? String == s.tokenURI,
                (claims["scope"] as? String)?.contains("https://www.googleapis.com/auth/cloud-platform") == true,
                let iat = claims["iat"] as? Int, let exp = claims["exp"] as? Int, exp > iat, exp - iat <= 3600
            else { return "bad claims" }
            return nil
        }
        if let verdict {
            state.withLock { $0.rejectedAssertions += 1 }
            return Self.json(400, ["error": "invalid_grant", "error_description": verdict])
        }
        let token = state.withLock { s -> String in
            s.counter += 1
            let t = "ya29.fake-\(s.counter)"
            s.tokens.insert(t)
            return t
        }
        return Self.json(200, ["access_token": token, "expires_in": 3599, "token_type": "Bearer"])
    }

    private func insert(zone: String, _ request: Request) -> Response {
        guard let body = try? JSONDecoder().decode(FakeInstance.self, from: request.body) else {
            return Self.error(400, reason: "invalid", message: "Invalid JSON payload received.")
        }
        let requestID = request.query["requestId"] ?? ""
        return state.withLock { s in
            s.inserts.append((zone, requestID, request.body))
            if !requestID.isEmpty, let existing = s.requestIDs[requestID], let op = s.operations[existing] {
                return Self.encode(200, op)
            }
            if s.instances[zone]?[body.name] != nil {
                return Self.error(
                    409, reason: "alreadyExists",
                    message: "The resource 'projects/\(project)/zones/\(zone)/instances/\(body.name)' already exists")
            }
            s.counter += 1
            let opName = "operation-\(s.counter)"
            var instance = body
            instance.id = String(1_000_000 + s.counter)
            instance.zone = "https://www.googleapis.com/compute/v1/projects/\(project)/zones/\(zone)"
            instance.machineType =
                "https://www.googleapis.com/compute/v1/projects/\(project)/" + (body.machineType ?? "")
            instance.status = "PROVISIONING"
            instance.networkInterfaces = [
                .init(
                    network: body.networkInterfaces?.first?.network, networkIP: "10.128.0.\(s.counter % 250 + 2)",
                    accessConfigs: [
                        .init(type: "ONE_TO_ONE_NAT", name: "External NAT", natIP: "34.1.2.\(s.counter % 250 + 2)")
                    ])
            ]
            var errorCode: String?
            if var queue = s.zoneErrors[zone], !queue.isEmpty {
                errorCode = queue.removeFirst()
                s.zoneErrors[zone] = queue
            }
            s.pending[opName] = PendingInsert(instance: instance, errorCode: errorCode)
            let op = FakeOperation(
                name: opName, operationType: "insert", status: "RUNNING",
                targetLink: "projects/\(project)/zones/\(zone)/instances/\(body.name)", zone: zone)
            s.operations[opName] = op
            if !requestID.isEmpty { s.requestIDs[requestID] = opName }
            return Self.encode(200, op)
        }
    }

    private func operation(zone: String, name: String) -> Response {
        state.withLock { s in
            guard var op = s.operations[name], op.zone == zone else {
                return Self.error(404, reason: "notFound", message: "The resource 'operations/\(name)' was not found")
            }
            if op.status != "DONE" {
                // Every poll moves it on: RUNNING → DONE, applying the insert (or its scripted error).
                op.status = "DONE"
                if let pending = s.pending.removeValue(forKey: name) {
                    if let code = pending.errorCode {
                        op.httpErrorStatusCode = code == "QUOTA_EXCEEDED" ? 403 : 503
                        let message =
                            code == "QUOTA_EXCEEDED"
                            ? "Quota 'GPUS_ALL_REGIONS' exceeded. Limit: 0.0 globally."
                            : "The zone 'projects/\(project)/zones/\(zone)' does not have enough resources available to fulfill the request."
                        op.error = .init(errors: [.init(code: code, message: message)])
                    } else {
                        s.instances[zone, default: [:]][pending.instance.name] = pending.instance
                    }
                }
                s.operations[name] = op
            }
            return Self.encode(200, op)
        }
    }

    private func get(zone: String, name: String) -> Response {
        state.withLock { s in
            guard var instance = s.instances[zone]?[name] else {
                return Self.error(
                    404, reason: "notFound",
                    message: "The resource 'projects/\(project)/zones/\(zone)/instances/\(name)' was not found")
            }
            let served = instance
            // Each read moves a new instance on: PROVISIONING → STAGING → RUNNING.
            switch instance.status {
            case "PROVISIONING": instance.status = "STAGING"
            case "STAGING": instance.status = "RUNNING"
            default: break
            }
            s.instances[zone]?[name] = instance
            return Self.encode(200, served)
        }
    }

    private func delete(zone: String, name: String) -> Response {
        state.withLock { s in
            guard s.instances[zone]?[name] != nil else {
                return Self.error(
                    404, reason: "notFound",
                    message: "The resource 'projects/\(project)/zones/\(zone)/instances/\(name)' was not found")
            }
            s.instances[zone]?[name] = nil
            s.counter += 1
            let op = FakeOperation(
                name: "operation-\(s.counter)", operationType: "delete", status: "RUNNING",
                targetLink: "projects/\(project)/zones/\(zone)/instances/\(name)", zone: zone)
            s.operations[op.name] = op
            return Self.encode(200, op)
        }
    }

    private func list(zone: String, _ request: Request) -> Response {
        let filter = request.query["filter"] ?? ""
        let pageSize = min(Int(request.query["maxResults"] ?? "500") ?? 500, 500)
        let start = Int(request.query["pageToken"] ?? "0") ?? 0
        let matches = state.withLock { s in
            (s.instances[zone] ?? [:]).values.sorted { $0.name < $1.name }.filter { Self.matches($0, filter) }
        }
        let page = Array(matches.dropFirst(start).prefix(pageSize))
        struct Page: Encodable {
            var kind = "compute#instanceList"
            var items: [FakeInstance]
            var nextPageToken: String?
        }
        let next = start + pageSize < matches.count ? String(start + pageSize) : nil
        return Self.encode(200, Page(items: page, nextPageToken: next))
    }

    /// `labels.KEY:*` (has the label) or `labels.KEY=VALUE`; an empty filter matches everything.
    static func matches(_ i: FakeInstance, _ filter: String) -> Bool {
        let f = filter.trimmingCharacters(in: .whitespaces)
        if f.isEmpty { return true }
        guard f.hasPrefix("labels.") else { return false }
        let rest = f.dropFirst("labels.".count)
        if rest.hasSuffix(":*") { return i.labels?[String(rest.dropLast(2))] != nil }
        let kv = rest.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
        return kv.count == 2 && i.labels?[kv[0]] == kv[1]
    }

    static func encode(_ status: Int, _ value: some Encodable) -> Response {
        Response(
            status: status, headers: ["Content-Type": "application/json"],
            body: (try? JSONEncoder().encode(value)) ?? Data())
    }

    static func json(_ status: Int, _ object: [String: Any]) -> Response {
        Response(
            status: status, headers: ["Content-Type": "application/json"],
            body: (try? JSONSerialization.data(withJSONObject: object)) ?? Data())
    }

    /// GCE's error shape.
    static func error(_ code: Int, reason: String, message: String) -> Response {
        json(
            code,
            [
                "error": [
                    "code": code, "message": message,
                    "errors": [
                        ["message": message, "domain": code == 403 ? "usageLimits" : "global", "reason": reason]
                    ],
                ] as [String: Any]
            ])
    }
}
