// The GCP Compute Engine driver: REST v1 with a service-account OAuth token, async Operations polled to DONE.
//
//   provision(name, region) ─► GET the name in every candidate zone ─ found ─► that instance
//        │ none
//        ▼
//   for zone in the region's zones:
//        POST …/zones/{zone}/instances?requestId=uuid(name, zone) ─► Operation ─► poll …/operations/{op} until DONE
//          ├─ capacity (ZONE_RESOURCE_POOL_EXHAUSTED…, or a synchronous 503 stockout) ─► next zone
//          ├─ any other error ─► throw it (quota, auth, invalid …)
//          └─ done ─► GET the instance ─► return it
//   all zones out of capacity ─► capacityUnavailable
import FabricCore
import FabricLog
import Foundation

/// Settings of the GCP Compute Engine driver.
public struct GCPSettings: Sendable, Hashable {
    /// The service-account key file's JSON.
    public var serviceAccountKeyJSON: Data
    /// The project; the key's `project_id` when empty.
    public var project: String
    /// Zones Fabric may use, in order of preference within each region (`us-central1-a`, …).
    public var zones: [String]
    /// The Compute API base URL (`…/compute/v1/`) for a fake or private endpoint; empty for Google's.
    public var endpoint: String
    /// The boot image (`projects/debian-cloud/global/images/family/debian-12`).
    public var sourceImage: String
    /// Boot disk size in GB.
    public var diskSizeGB: Int
    /// The VPC network of new instances.
    public var network: String
    /// The timeout of each API call.
    public var requestTimeout: Duration
    /// API calls in flight at once.
    public var concurrencyMax: Int
    /// Instances per list page (the API allows up to 500).
    public var listPageSize: Int
    /// The wait between two polls of an Operation.
    public var operationPollInterval: Duration
    /// How many polls an Operation gets before the call gives up (as `transient`).
    public var operationPollsMax: Int

    /// Settings; defaults suit Google's API.
    public init(
        serviceAccountKeyJSON: Data, project: String = "", zones: [String], endpoint: String = "",
        sourceImage: String = "projects/debian-cloud/global/images/family/debian-12", diskSizeGB: Int = 100,
        network: String = "global/networks/default", requestTimeout: Duration = .seconds(30),
        concurrencyMax: Int = RetryingTransport.concurrencyMaxDefault,
        listPageSize: Int = GCEProvider.listPageSizeMax, operationPollInterval: Duration = .seconds(2),
        operationPollsMax: Int = 150
    ) {
        self.serviceAccountKeyJSON = serviceAccountKeyJSON
        self.project = project
        self.zones = zones
        self.endpoint = endpoint
        self.sourceImage = sourceImage
        self.diskSizeGB = diskSizeGB
        self.network = network
        self.requestTimeout = requestTimeout
        self.concurrencyMax = concurrencyMax
        self.listPageSize = min(max(1, listPageSize), GCEProvider.listPageSizeMax)
        self.operationPollInterval = operationPollInterval
        self.operationPollsMax = max(1, operationPollsMax)
    }
}

/// Google Compute Engine as a `Provider`: instances named by Fabric's name, labelled, created idempotently with a
/// `requestId` derived from the name and zone, failing over between a region's zones on stockouts.
public actor GCEProvider: Provider {
    /// Google's Compute API base URL.
    public static let defaultEndpoint = "https://compute.googleapis.com/compute/v1/"
    /// The most instances one list page may hold (the API's limit).
    public static let listPageSizeMax = 500
    /// The most list pages read in one zone.
    public static let listPagesMax = 100
    /// The longest instance name, label key or label value (GCE's limit).
    public static let nameLengthMax = 63
    /// The largest startup script, in bytes (GCE's metadata value limit).
    public static let startupScriptBytesMax = 256 << 10
    /// Operation error codes meaning the zone has no capacity now.
    public static let capacityCodes: Set<String> = [
        "ZONE_RESOURCE_POOL_EXHAUSTED", "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS", "RESOURCE_POOL_EXHAUSTED",
    ]
    /// Operation error codes meaning a quota.
    public static let quotaCodes: Set<String> = ["QUOTA_EXCEEDED"]
    /// Error reasons meaning throttling.
    public static let rateLimitReasons: Set<String> = ["rateLimitExceeded", "userRateLimitExceeded"]

    public nonisolated let name: ProviderName = .gcp
    let settings: GCPSettings
    let project: String
    let catalog: OfferCatalog
    let transport: any HTTPTransport
    let tokens: GCPTokenSource
    let clock: any WallClock
    let sleep: RetryingTransport.Sleep

    /// The production driver: libcurl under a `RetryingTransport` that also retries GCP's 403 rate limits and
    /// not stockouts.
    /// - Parameters:
    ///   - clock: the wall clock for JWT times, the token cache and Retry-After dates.
    ///   - random: jitter for the backoff.
    ///   - sleep: how retries and Operation polls wait (tests pass one that returns at once).
    /// - Throws: `ProviderError(.invalidRequest)` when the key file is unreadable or no project is known.
    public init(
        settings: GCPSettings, catalog: OfferCatalog = .bundled, logger: Logger, clock: any WallClock,
        random: some RandomNumberGenerator & Sendable, retryPolicy: RetryPolicy = GCEProvider.retryPolicy(),
        sleep: @escaping RetryingTransport.Sleep = RetryingTransport.taskSleep
    ) throws {
        let transport = RetryingTransport(
            CurlHTTPClient(), provider: ProviderName.gcp.rawValue, policy: retryPolicy,
            concurrencyMax: settings.concurrencyMax, logger: logger, clock: clock, random: random, sleep: sleep)
        try self.init(settings: settings, catalog: catalog, transport: transport, clock: clock, sleep: sleep)
    }

    /// A driver over any transport.
    public init(
        settings: GCPSettings, catalog: OfferCatalog = .bundled, transport: any HTTPTransport, clock: any WallClock,
        sleep: @escaping RetryingTransport.Sleep = RetryingTransport.taskSleep
    ) throws {
        let key = try ServiceAccountKey.parse(settings.serviceAccountKeyJSON)
        let project = settings.project.isEmpty ? (key.projectID ?? "") : settings.project
        guard !project.isEmpty else {
            throw ProviderError(.invalidRequest, provider: "gcp", code: "NoProject", "no GCP project configured")
        }
        self.settings = settings
        self.project = project
        self.catalog = catalog
        self.transport = transport
        self.tokens = try GCPTokenSource(key: key, transport: transport, clock: clock)
        self.clock = clock
        self.sleep = sleep
    }

    /// The default retry policy with GCP's verdicts: a 403 `rateLimitExceeded` is retried, a 503 stockout is not
    /// (the driver moves to the next zone instead).
    public static func retryPolicy(attemptsMax: Int = RetryPolicy.attemptsMaxDefault) -> RetryPolicy {
        RetryPolicy(attemptsMax: attemptsMax) { response in
            guard response.status >= 400, let e = GCEErrorBody.parse(response.body) else { return nil }
            if response.status == 403 { return !rateLimitReasons.isDisjoint(with: e.reasons) }
            if response.status == 503 && e.isStockout { return false }
            return nil
        }
    }

    // MARK: Provider

    /// The catalog's GCP rows in regions of the configured zones, with the catalog's as-of date.
    public func offers() async throws -> OfferList {
        let regions = Set(settings.zones.map(Self.region(ofZone:)))
        let rows = catalog.offers(provider: .gcp).filter { regions.isEmpty || regions.contains($0.region) }
        let newest = rows.compactMap { CatalogDate.millisecondsSinceEpoch($0.asOf) }.max() ?? 0
        return OfferList(offers: rows, origin: "catalog", asOf: Timestamp(millisecondsSinceEpoch: newest))
    }

    /// Creates the instance in the first zone of `request.region` with capacity, or returns the one that name has.
    public func provision(_ request: InstanceRequest) async throws -> Instance {
        let zones = try candidateZones(request.region)
        try validate(request)
        if let existing = try await find(name: request.name, zones: zones) { return existing }
        var lastCapacity: ProviderError?
        for zone in zones {
            do {
                return try await insert(request, zone: zone)
            } catch let e as ProviderError where e.kind == .capacityUnavailable {
                lastCapacity = e
            }
        }
        throw lastCapacity
            ?? ProviderError(.capacityUnavailable, provider: name.rawValue, "no zone of \(request.region) has capacity")
    }

    /// The instance named `name` in `region`'s zones (or in that exact zone), or nil.
    public func status(name: String, region: String) async throws -> Instance? {
        try await find(name: name, zones: try candidateZones(region))
    }

    /// Deletes the instance and waits for the delete to finish; an instance already gone is success.
    public func terminate(name: String, region: String) async throws {
        for zone in try candidateZones(region) {
            let path = "zones/\(zone)/instances/\(name)"
            do {
                let operation: GCEOperation = try await call("DELETE", path)
                try await wait(operation, zone: zone)
            } catch let e as ProviderError where e.kind == .notFound {
                continue
            }
        }
    }

    /// Every instance carrying Fabric's owner label in the configured zones. Fails as a whole when any zone fails,
    /// so a reconciler never mistakes a missing zone for missing instances.
    public func list() async throws -> [Instance] {
        var all: [Instance] = []
        let filter = "labels.\(InstanceRequest.ownerLabel):*"
        for zone in settings.zones {
            var token: String?
            var pages = 0
            repeat {
                pages += 1
                guard pages <= Self.listPagesMax else {
                    throw ProviderError(
                        .transient, provider: name.rawValue, code: "TooManyPages",
                        "instances.list in \(zone) returned more than \(Self.listPagesMax) pages")
                }
                var query = [("filter", filter), ("maxResults", String(settings.listPageSize))]
                if let token { query.append(("pageToken", token)) }
                let page: GCEInstanceList = try await call("GET", "zones/\(zone)/instances", query: query)
                all += (page.items ?? []).map { Self.instance(from: $0, zone: zone) }
                token = page.nextPageToken.flatMap { $0.isEmpty ? nil : $0 }
            } while token != nil
        }
        return all
    }

    // MARK: Steps

    private func insert(_ request: InstanceRequest, zone: String) async throws -> Instance {
        let query = [("requestId", Self.requestID(project: project, zone: zone, name: request.name))]
        let body = try JSONEncoder().encode(insertBody(request, zone: zone))
        let operation: GCEOperation
        do {
            operation = try await call("POST", "zones/\(zone)/instances", query: query, body: body)
        } catch let e as ProviderError where e.code == "alreadyExists" {
            // Made by an earlier attempt whose answer was lost (and whose requestId expired).
            if let existing = try await find(name: request.name, zones: [zone]) { return existing }
            throw e
        }
        try await wait(operation, zone: zone)
        guard let instance = try await find(name: request.name, zones: [zone]) else {
            throw ProviderError(
                .transient, provider: name.rawValue, code: "NotVisibleYet",
                "instance \(request.name) is not visible in \(zone) after its insert finished")
        }
        return instance
    }

    /// Polls a zone Operation until DONE; throws its mapped error.
    private func wait(_ first: GCEOperation, zone: String) async throws {
        var operation = first
        var polls = 0
        while operation.status != "DONE" {
            polls += 1
            guard polls <= settings.operationPollsMax, let opName = operation.name else {
                throw ProviderError(
                    .transient, provider: name.rawValue, code: "OperationTimeout",
                    "operation \(operation.name ?? "?") in \(zone) not done after \(settings.operationPollsMax) polls")
            }
            try await sleep(settings.operationPollInterval)
            operation = try await call("GET", "zones/\(zone)/operations/\(opName)")
        }
        if let error = GCEErrors.error(of: operation, zone: zone) { throw error }
    }

    private func find(name instanceName: String, zones: [String]) async throws -> Instance? {
        for zone in zones {
            do {
                let found: GCEInstance = try await call("GET", "zones/\(zone)/instances/\(instanceName)")
                return Self.instance(from: found, zone: zone)
            } catch let e as ProviderError where e.kind == .notFound {
                continue
            }
        }
        return nil
    }

    /// One authorized Compute API call decoded as `T`. A 401 drops the cached token and tries once more.
    private func call<T: Decodable>(
        _ method: String, _ path: String, query: [(String, String)] = [], body: Data = Data()
    ) async throws -> T {
        var url = base + "projects/\(project)/" + path
        if !query.isEmpty { url += "?" + FormEncoding.encode(query) }
        var response = try await send(method, url, body: body)
        if response.status == 401 {
            await tokens.invalidate()
            response = try await send(method, url, body: body)
        }
        guard (200..<300).contains(response.status) else {
            throw GCEErrors.error(from: response, what: "\(method) \(path)", now: clock.now())
        }
        do {
            return try JSONDecoder().decode(T.self, from: response.body)
        } catch {
            throw ProviderError(
                .transient, provider: name.rawValue, code: "MalformedResponse",
                "\(method) \(path) answered malformed JSON")
        }
    }

    private func send(_ method: String, _ url: String, body: Data) async throws -> HTTPResponse {
        let token = try await tokens.token()
        var headers = [("Authorization", "Bearer \(token)")]
        if !body.isEmpty { headers.append(("Content-Type", "application/json")) }
        let request = HTTPRequest(
            method: method, url: url, headers: headers, body: body, timeout: settings.requestTimeout)
        return try await sendMapped(transport, request, provider: name.rawValue)
    }

    private var base: String {
        let b = settings.endpoint.isEmpty ? Self.defaultEndpoint : settings.endpoint
        return b.hasSuffix("/") ? b : b + "/"
    }

    // MARK: Requests

    private func validate(_ request: InstanceRequest) throws {
        func invalid(_ message: String) -> ProviderError {
            ProviderError(.invalidRequest, provider: name.rawValue, code: "FabricValidation", message)
        }
        guard Self.isValidName(request.name) else {
            throw invalid(
                "instance name \(request.name.debugDescription) is not a GCE name ([a-z]([-a-z0-9]*[a-z0-9])?, ≤63)")
        }
        guard !request.machineType.isEmpty else { throw invalid("no machine type") }
        if let script = request.bootstrapScript, script.utf8.count > Self.startupScriptBytesMax {
            throw invalid("bootstrap script is over \(Self.startupScriptBytesMax) bytes")
        }
    }

    /// The zones a request for `region` may use: that zone if it is one, else the configured zones in it.
    private func candidateZones(_ region: String) throws -> [String] {
        if settings.zones.contains(region) { return [region] }
        let zones = settings.zones.filter { Self.region(ofZone: $0) == region }
        guard !zones.isEmpty else {
            throw ProviderError(
                .invalidRequest, provider: name.rawValue, code: "FabricValidation",
                "no zone of \(region) is configured (gcp zones: \(settings.zones.joined(separator: ", ")))")
        }
        return zones
    }

    /// The instances.insert body.
    func insertBody(_ request: InstanceRequest, zone: String) -> GCEInsert {
        var labels: [String: String] = [:]
        for (k, v) in request.labels { labels[Self.labelText(k, isKey: true)] = Self.labelText(v, isKey: false) }
        let scheduling =
            request.spot
            ? GCEInsert.Scheduling(
                provisioningModel: "SPOT", instanceTerminationAction: "STOP", onHostMaintenance: "TERMINATE",
                automaticRestart: false)
            : GCEInsert.Scheduling(
                provisioningModel: "STANDARD", instanceTerminationAction: nil, onHostMaintenance: "TERMINATE",
                automaticRestart: true)
        return GCEInsert(
            name: request.name, machineType: "zones/\(zone)/machineTypes/\(request.machineType)",
            disks: [
                .init(
                    boot: true, autoDelete: true,
                    initializeParams: .init(sourceImage: settings.sourceImage, diskSizeGb: String(settings.diskSizeGB)))
            ],
            networkInterfaces: [
                .init(network: settings.network, accessConfigs: [.init(type: "ONE_TO_ONE_NAT", name: "External NAT")])
            ],
            scheduling: scheduling,
            metadata: request.bootstrapScript.map { .init(items: [.init(key: "startup-script", value: $0)]) },
            labels: labels)
    }

    /// The requestId of an insert: a UUID (version 5 layout) from the SHA-256 of project, zone and name, so a retry
    /// of the same insert is recognised by GCE and an insert in another zone is not.
    public static func requestID(project: String, zone: String, name: String) -> String {
        var b = Array(Crypto.sha256(Data("fabric-gce-insert\u{0}\(project)\u{0}\(zone)\u{0}\(name)".utf8)).prefix(16))
        b[6] = (b[6] & 0x0F) | 0x50
        b[8] = (b[8] & 0x3F) | 0x80
        let h = Crypto.hex(b)
        let i = h.startIndex
        func part(_ from: Int, _ to: Int) -> Substring { h[h.index(i, offsetBy: from)..<h.index(i, offsetBy: to)] }
        return "\(part(0, 8))-\(part(8, 12))-\(part(12, 16))-\(part(16, 20))-\(part(20, 32))"
    }

    /// Whether `name` is a valid GCE resource name.
    public static func isValidName(_ name: String) -> Bool {
        let u = Array(name.utf8)
        guard (1...nameLengthMax).contains(u.count), let first = u.first, let last = u.last else { return false }
        func lower(_ c: UInt8) -> Bool { c >= 0x61 && c <= 0x7A }
        func digit(_ c: UInt8) -> Bool { c >= 0x30 && c <= 0x39 }
        return lower(first) && (lower(last) || digit(last)) && u.allSatisfy { lower($0) || digit($0) || $0 == 0x2D }
    }

    /// A label key or value as GCE accepts it: lower case, `[a-z0-9_-]`, at most 63 characters (keys start with a
    /// letter).
    public static func labelText(_ text: String, isKey: Bool) -> String {
        var out = String(
            text.lowercased().unicodeScalars.map { c -> Character in
                let ok = (c >= "a" && c <= "z") || (c >= "0" && c <= "9") || c == "-" || c == "_"
                return ok ? Character(c) : "_"
            }
        ).prefix(nameLengthMax)
        if isKey, let f = out.first, !(f >= "a" && f <= "z") { out = ("l" + out).prefix(nameLengthMax) }
        return String(out)
    }

    /// `us-central1` for `us-central1-a`.
    public static func region(ofZone zone: String) -> String {
        guard let dash = zone.lastIndex(of: "-") else { return zone }
        return String(zone[..<dash])
    }

    // MARK: Answers

    /// An `Instance` from the API's instance resource.
    static func instance(from i: GCEInstance, zone: String) -> Instance {
        let spot = i.scheduling?.provisioningModel == "SPOT" || i.scheduling?.preemptible == true
        let state: InstanceState
        switch i.status ?? "" {
        case "PROVISIONING", "STAGING", "PENDING", "REPAIRING": state = .pending
        case "RUNNING": state = .running
        case "STOPPING", "SUSPENDING", "DEPROVISIONING": state = .stopping
        // A spot VM is stopped (instanceTerminationAction STOP) when Google takes it back.
        case "TERMINATED", "STOPPED", "SUSPENDED": state = spot ? .preempted : .terminated
        default: state = .unknown
        }
        let nic = i.networkInterfaces?.first
        let type = i.machineType.map { String($0.split(separator: "/").last ?? Substring($0)) } ?? ""
        return Instance(
            id: "\(zone)/\(i.name)", name: i.name, provider: ProviderName.gcp.rawValue, region: region(ofZone: zone),
            machineType: type, spot: spot, state: state, stateReason: i.statusMessage,
            address: nic?.accessConfigs?.first?.natIP ?? nic?.networkIP, labels: i.labels ?? [:])
    }
}

/// GCE error bodies and Operation errors mapped to Fabric's kinds.
public enum GCEErrors {
    /// The `ProviderError` for a non-2xx answer.
    static func error(from response: HTTPResponse, what: String, now: Timestamp) -> ProviderError {
        let body = GCEErrorBody.parse(response.body)
        let reasons = body?.reasons ?? []
        let message = "\(what): \(body?.message ?? "HTTP \(response.status)")"
        let retryAfter = RetryAfter.parse(response.header("retry-after"), now: now)
        let kind: ProviderErrorKind
        var code = reasons.first ?? body?.status ?? String(response.status)
        switch response.status {
        case 429:
            kind = .rateLimited
        case 403 where !GCEProvider.rateLimitReasons.isDisjoint(with: reasons):
            kind = .rateLimited
        case _ where reasons.contains("quotaExceeded") || reasons.contains("QUOTA_EXCEEDED"):
            kind = .quotaExceeded
        case 503 where body?.isStockout == true:
            kind = .capacityUnavailable
        case 401, 403:
            kind = .authFailed
        case 404:
            kind = .notFound
        case 409 where reasons.contains("alreadyExists"):
            kind = .invalidRequest
            code = "alreadyExists"
        case 500...:
            kind = .transient
        default:
            kind = .invalidRequest
        }
        return ProviderError(
            kind, provider: "gcp", code: code, message, retryAfter: kind == .rateLimited ? retryAfter : nil)
    }

    /// The error of a DONE Operation, or nil when it succeeded.
    static func error(of operation: GCEOperation, zone: String) -> ProviderError? {
        guard let errors = operation.error?.errors, let first = errors.first else { return nil }
        let codes = errors.compactMap(\.code)
        let message =
            "operation \(operation.operationType ?? "") in \(zone): \(first.message ?? first.code ?? "failed")"
        let kind: ProviderErrorKind
        if !GCEProvider.capacityCodes.isDisjoint(with: codes) {
            kind = .capacityUnavailable
        } else if !GCEProvider.quotaCodes.isDisjoint(with: codes) {
            kind = .quotaExceeded
        } else if codes.contains("RESOURCE_NOT_FOUND") {
            kind = .notFound
        } else if let status = operation.httpErrorStatusCode, status >= 500 {
            kind = .transient
        } else if operation.httpErrorStatusCode == 401 || operation.httpErrorStatusCode == 403 {
            kind = .authFailed
        } else {
            kind = .invalidRequest
        }
        let code =
            codes.first { GCEProvider.capacityCodes.contains($0) || GCEProvider.quotaCodes.contains($0) } ?? codes.first
        return ProviderError(kind, provider: "gcp", code: code, message)
    }
}

/// `{"error":{"code","message","status","errors":[{"reason","domain","message"}]}}`.
struct GCEErrorBody: Decodable {
    struct Inner: Decodable {
        struct Item: Decodable {
            var reason: String?
            var message: String?
        }
        var code: Int?
        var message: String?
        var status: String?
        var errors: [Item]?
    }
    var error: Inner

    static func parse(_ data: Data) -> (message: String?, status: String?, reasons: [String], isStockout: Bool)? {
        guard let body = try? JSONDecoder().decode(GCEErrorBody.self, from: data) else { return nil }
        let reasons = (body.error.errors ?? []).compactMap(\.reason)
        let text = ([body.error.message ?? ""] + (body.error.errors ?? []).map { $0.message ?? "" }).joined(
            separator: " ")
        let stockout =
            !GCEProvider.capacityCodes.isDisjoint(with: reasons) || text.contains("does not have enough resources")
            || GCEProvider.capacityCodes.contains { text.contains($0) }
        return (body.error.message, body.error.status, reasons, stockout)
    }
}

/// The subset of a Compute Operation the driver reads.
struct GCEOperation: Codable, Sendable {
    struct ErrorList: Codable, Sendable {
        struct Item: Codable, Sendable {
            var code: String?
            var message: String?
        }
        var errors: [Item]?
    }
    var name: String?
    var operationType: String?
    var status: String?
    var targetLink: String?
    var httpErrorStatusCode: Int?
    var error: ErrorList?
}

/// The subset of a Compute instance the driver reads.
struct GCEInstance: Codable, Sendable {
    struct NIC: Codable, Sendable {
        struct Access: Codable, Sendable {
            var natIP: String?
        }
        var networkIP: String?
        var accessConfigs: [Access]?
    }
    struct Scheduling: Codable, Sendable {
        var provisioningModel: String?
        var preemptible: Bool?
    }
    var name: String
    var status: String?
    var statusMessage: String?
    var machineType: String?
    var labels: [String: String]?
    var networkInterfaces: [NIC]?
    var scheduling: Scheduling?
}

/// One page of instances.list.
struct GCEInstanceList: Codable, Sendable {
    var items: [GCEInstance]?
    var nextPageToken: String?
}

/// The instances.insert body.
struct GCEInsert: Codable, Sendable {
    struct Disk: Codable, Sendable {
        struct Params: Codable, Sendable {
            var sourceImage: String
            var diskSizeGb: String
        }
        var boot: Bool
        var autoDelete: Bool
        var initializeParams: Params
    }
    struct NIC: Codable, Sendable {
        struct Access: Codable, Sendable {
            var type: String
            var name: String
        }
        var network: String
        var accessConfigs: [Access]
    }
    struct Scheduling: Codable, Sendable {
        var provisioningModel: String
        var instanceTerminationAction: String?
        var onHostMaintenance: String
        var automaticRestart: Bool
    }
    struct Metadata: Codable, Sendable {
        struct Item: Codable, Sendable {
            var key: String
            var value: String
        }
        var items: [Item]
    }
    var name: String
    var machineType: String
    var disks: [Disk]
    var networkInterfaces: [NIC]
    var scheduling: Scheduling
    var metadata: Metadata?
    var labels: [String: String]
}
