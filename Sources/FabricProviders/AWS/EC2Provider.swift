// The AWS EC2 driver: the Query API (form-encoded POST, Version=2016-11-15) signed with SigV4, answers in XML.
//
//   provision ─► DescribeInstances(tag:Name=name) ─ found ─► that instance (a repeat after a crash)
//                        │ none
//                        ▼
//                RunInstances(ClientToken=name, tags, UserData, spot) ─► instance (pending)
//   status    ─► DescribeInstances(tag:Name=name) ─► the live one, else the newest ended one, else nil
//   terminate ─► DescribeInstances(tag:Name=name) ─► TerminateInstances(ids); InvalidInstanceID.NotFound = done
//   list      ─► DescribeInstances(tag-key=fabric-owner) per region, NextToken pages
import FabricCore
import FabricLog
import Foundation

/// Settings of the AWS EC2 driver.
public struct AWSSettings: Sendable, Hashable {
    public var credentials: AWSCredentials
    /// The regions Fabric provisions in and lists; requests for other regions are refused.
    public var regions: [String]
    /// A Query API URL used for every region instead of `https://ec2.{region}.amazonaws.com/` (moto, a VPC
    /// endpoint); empty for AWS itself.
    public var endpoint: String
    /// The AMI booted by default.
    public var imageID: String
    /// AMIs per region (AMI IDs are regional), overriding `imageID`.
    public var imageIDsByRegion: [String: String]
    /// An EC2 key pair name for SSH, if any.
    public var keyName: String?
    /// Security groups for new instances (the VPC default when empty).
    public var securityGroupIDs: [String]
    /// The timeout of each API call.
    public var requestTimeout: Duration
    /// API calls in flight at once.
    public var concurrencyMax: Int
    /// DescribeInstances page size, within EC2's 5 to 1000.
    public var describePageSize: Int

    /// Settings; `regions` defaults to us-east-1.
    public init(
        credentials: AWSCredentials, regions: [String] = ["us-east-1"], endpoint: String = "", imageID: String = "",
        imageIDsByRegion: [String: String] = [:], keyName: String? = nil, securityGroupIDs: [String] = [],
        requestTimeout: Duration = .seconds(30), concurrencyMax: Int = RetryingTransport.concurrencyMaxDefault,
        describePageSize: Int = EC2Provider.describePageSizeDefault
    ) {
        self.credentials = credentials
        self.regions = regions
        self.endpoint = endpoint
        self.imageID = imageID
        self.imageIDsByRegion = imageIDsByRegion
        self.keyName = keyName
        self.securityGroupIDs = securityGroupIDs
        self.requestTimeout = requestTimeout
        self.concurrencyMax = concurrencyMax
        self.describePageSize = min(max(describePageSize, 5), 1000)
    }
}

/// Amazon EC2 as a `Provider`: instances named by an EC2 `Name` tag, idempotent by that name and by ClientToken.
public actor EC2Provider: Provider {
    /// The Query API version every call names.
    public static let apiVersion = "2016-11-15"
    /// DescribeInstances page size unless the settings say otherwise (EC2 accepts 5 to 1000).
    public static let describePageSizeDefault = 100
    /// The most DescribeInstances pages one lookup reads before giving up.
    public static let describePagesMax = 100
    /// The longest ClientToken EC2 accepts; longer names are hashed to fit.
    public static let clientTokenLengthMax = 64
    /// The largest user-data script before base64, in bytes (EC2's limit).
    public static let userDataBytesMax = 16 << 10
    /// The most tags on one instance (EC2's limit).
    public static let tagsMax = 50
    /// The longest instance name (EC2 tag values hold 256 characters).
    public static let nameLengthMax = 255
    /// The tag holding Fabric's instance name (the console's name column).
    public static let nameTag = "Name"
    /// The EC2 state reason code of a spot instance taken back.
    public static let spotTerminationReason = "Server.SpotInstanceTermination"

    public nonisolated let name: ProviderName = .aws
    let settings: AWSSettings
    let catalog: OfferCatalog
    let transport: any HTTPTransport
    let clock: any WallClock

    /// The production driver: libcurl under a `RetryingTransport` that retries throttling and 5xx answers (not
    /// capacity, quota or auth errors) with jittered backoff.
    /// - Parameters:
    ///   - catalog: where offers come from (EC2 has no on-demand price API).
    ///   - clock: the wall clock for signing and Retry-After dates.
    ///   - random: jitter for the backoff.
    ///   - sleep: how retries wait (tests pass one that returns at once).
    public init(
        settings: AWSSettings, catalog: OfferCatalog = .bundled, logger: Logger, clock: any WallClock,
        random: some RandomNumberGenerator & Sendable, retryPolicy: RetryPolicy = EC2Provider.retryPolicy(),
        sleep: @escaping RetryingTransport.Sleep = RetryingTransport.taskSleep
    ) {
        let transport = RetryingTransport(
            CurlHTTPClient(), provider: ProviderName.aws.rawValue, policy: retryPolicy,
            concurrencyMax: settings.concurrencyMax, logger: logger, clock: clock, random: random, sleep: sleep)
        self.init(settings: settings, catalog: catalog, transport: transport, clock: clock)
    }

    /// A driver over any transport.
    public init(
        settings: AWSSettings, catalog: OfferCatalog = .bundled, transport: any HTTPTransport, clock: any WallClock
    ) {
        self.settings = settings
        self.catalog = catalog
        self.transport = transport
        self.clock = clock
    }

    /// The default retry policy with EC2's verdict on error answers: throttling and server trouble are retried,
    /// capacity, quota, auth and request errors are not (EC2 reports some capacity errors as HTTP 500).
    public static func retryPolicy(attemptsMax: Int = RetryPolicy.attemptsMaxDefault) -> RetryPolicy {
        RetryPolicy(attemptsMax: attemptsMax) { response in
            guard response.status >= 400, let code = EC2Errors.parse(response.body)?.code else { return nil }
            let kind = EC2Errors.kind(code: code, status: response.status)
            return kind == .rateLimited || kind == .transient
        }
    }

    // MARK: Provider

    /// The catalog's AWS rows in the configured regions, with the catalog's as-of date (EC2 has no on-demand price
    /// API; see provider-apis.md §4.1).
    public func offers() async throws -> OfferList {
        let regions = Set(settings.regions)
        let rows = catalog.offers(provider: .aws).filter { regions.isEmpty || regions.contains($0.region) }
        let newest = rows.compactMap { CatalogDate.millisecondsSinceEpoch($0.asOf) }.max() ?? 0
        return OfferList(offers: rows, origin: "catalog", asOf: Timestamp(millisecondsSinceEpoch: newest))
    }

    /// Launches one instance named `request.name`, or returns the instance that name already has.
    public func provision(_ request: InstanceRequest) async throws -> Instance {
        let image = try validate(request)
        if let existing = try await find(name: request.name, region: request.region) { return existing }
        let root = try await call("RunInstances", region: request.region, runParameters(request, image: image))
        guard let item = root.items("instancesSet").first else {
            throw ProviderError(.transient, provider: name.rawValue, "RunInstances answered without an instance")
        }
        var instance = Self.instance(from: item, region: request.region)
        if instance.name.isEmpty { instance.name = request.name }
        return instance
    }

    /// The instance named `name` in `region`: a live one if any, else the newest ended one; nil when none.
    public func status(name: String, region: String) async throws -> Instance? {
        try checkRegion(region)
        return try await find(name: name, region: region)
    }

    /// Terminates every live instance named `name`; none, or one already gone, is success.
    public func terminate(name: String, region: String) async throws {
        try checkRegion(region)
        let live = try await describe(region: region, filters: [("tag:\(Self.nameTag)", [name])])
            .filter { $0.state != .terminated }
        guard !live.isEmpty else { return }
        var parameters: [(String, String)] = []
        for (i, instance) in live.enumerated() { parameters.append(("InstanceId.\(i + 1)", instance.id)) }
        do {
            _ = try await call("TerminateInstances", region: region, parameters)
        } catch let e as ProviderError where e.kind == .notFound {
            return
        }
    }

    /// Every instance tagged with Fabric's owner label in the configured regions, ended ones included (EC2 keeps
    /// them visible for about an hour). Fails as a whole when any region fails, so a reconciler never mistakes a
    /// missing region for missing instances.
    public func list() async throws -> [Instance] {
        var all: [Instance] = []
        for region in settings.regions {
            all += try await describe(region: region, filters: [("tag-key", [InstanceRequest.ownerLabel])])
        }
        return all
    }

    // MARK: Requests

    private func validate(_ request: InstanceRequest) throws -> String {
        try checkRegion(request.region)
        func invalid(_ message: String) -> ProviderError {
            ProviderError(.invalidRequest, provider: name.rawValue, code: "FabricValidation", message)
        }
        guard !request.name.isEmpty, request.name.count <= Self.nameLengthMax else {
            throw invalid("instance name must be 1-\(Self.nameLengthMax) characters")
        }
        guard !request.machineType.isEmpty else { throw invalid("no instance type") }
        guard request.labels.count + 1 <= Self.tagsMax else { throw invalid("more than \(Self.tagsMax - 1) labels") }
        if let script = request.bootstrapScript, script.utf8.count > Self.userDataBytesMax {
            throw invalid("bootstrap script is over \(Self.userDataBytesMax) bytes")
        }
        let image = settings.imageIDsByRegion[request.region] ?? settings.imageID
        guard !image.isEmpty else { throw invalid("no AMI configured for \(request.region)") }
        return image
    }

    private func checkRegion(_ region: String) throws {
        guard settings.regions.isEmpty || settings.regions.contains(region) else {
            throw ProviderError(
                .invalidRequest, provider: name.rawValue, code: "FabricValidation",
                "region \(region) is not configured (aws regions: \(settings.regions.joined(separator: ", ")))")
        }
    }

    /// The RunInstances parameters for a request.
    func runParameters(_ request: InstanceRequest, image: String) -> [(String, String)] {
        var p: [(String, String)] = [
            ("ImageId", image), ("InstanceType", request.machineType), ("MinCount", "1"), ("MaxCount", "1"),
            ("ClientToken", Self.clientToken(request.name)),
        ]
        let tags = [(Self.nameTag, request.name)] + request.labels.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
        p.append(("TagSpecification.1.ResourceType", "instance"))
        for (i, tag) in tags.enumerated() {
            p.append(("TagSpecification.1.Tag.\(i + 1).Key", tag.0))
            p.append(("TagSpecification.1.Tag.\(i + 1).Value", tag.1))
        }
        if let script = request.bootstrapScript { p.append(("UserData", Data(script.utf8).base64EncodedString())) }
        if request.spot {
            p.append(("InstanceMarketOptions.MarketType", "spot"))
            p.append(("InstanceMarketOptions.SpotOptions.SpotInstanceType", "one-time"))
            p.append(("InstanceMarketOptions.SpotOptions.InstanceInterruptionBehavior", "terminate"))
        }
        if let key = settings.keyName { p.append(("KeyName", key)) }
        for (i, group) in settings.securityGroupIDs.enumerated() { p.append(("SecurityGroupId.\(i + 1)", group)) }
        return p
    }

    /// The ClientToken for an instance name: the name itself when it fits, else the hex SHA-256 of it.
    public static func clientToken(_ name: String) -> String {
        name.utf8.count <= clientTokenLengthMax && name.allSatisfy(\.isASCII)
            ? name : Crypto.hex(Crypto.sha256(Data(name.utf8)))
    }

    private func find(name: String, region: String) async throws -> Instance? {
        let matches = try await describe(region: region, filters: [("tag:\(Self.nameTag)", [name])])
        if let live = matches.first(where: { $0.state != .terminated && $0.state != .preempted }) { return live }
        return matches.last
    }

    /// DescribeInstances with filters, every page.
    private func describe(region: String, filters: [(String, [String])]) async throws -> [Instance] {
        var base: [(String, String)] = [("MaxResults", String(settings.describePageSize))]
        for (i, filter) in filters.enumerated() {
            base.append(("Filter.\(i + 1).Name", filter.0))
            for (j, value) in filter.1.enumerated() { base.append(("Filter.\(i + 1).Value.\(j + 1)", value)) }
        }
        var instances: [Instance] = []
        var token: String?
        for _ in 0..<Self.describePagesMax {
            let root = try await call(
                "DescribeInstances", region: region, base + (token.map { [("NextToken", $0)] } ?? []))
            for reservation in root.items("reservationSet") {
                for item in reservation.items("instancesSet") {
                    instances.append(Self.instance(from: item, region: region))
                }
            }
            token = root.string("nextToken")
            if token == nil { return instances }
        }
        throw ProviderError(
            .transient, provider: name.rawValue, code: "TooManyPages",
            "DescribeInstances returned more than \(Self.describePagesMax) pages")
    }

    /// One signed Query API call; the parsed answer, or the mapped error.
    private func call(_ action: String, region: String, _ parameters: [(String, String)]) async throws -> XMLTree {
        guard !settings.credentials.accessKeyID.isEmpty, !settings.credentials.secretAccessKey.isEmpty else {
            throw ProviderError(
                .authFailed, provider: name.rawValue, code: "MissingCredentials", "no AWS access key is configured")
        }
        let body = FormEncoding.encode([("Action", action), ("Version", Self.apiVersion)] + parameters)
        let request = HTTPRequest(
            method: "POST", url: endpoint(region),
            headers: [("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")], body: Data(body.utf8),
            timeout: settings.requestTimeout)
        let signed = SigV4Signer(credentials: settings.credentials, region: region, service: "ec2")
            .sign(request, at: clock.now())
        let response = try await sendMapped(transport, signed, provider: name.rawValue)
        guard (200..<300).contains(response.status) else {
            throw EC2Errors.error(from: response, action: action, now: clock.now())
        }
        do {
            return try XMLTree.parse(response.body)
        } catch {
            throw ProviderError(
                .transient, provider: name.rawValue, code: "MalformedResponse",
                "\(action) answered malformed XML: \(error)")
        }
    }

    private func endpoint(_ region: String) -> String {
        settings.endpoint.isEmpty ? "https://ec2.\(region).amazonaws.com/" : settings.endpoint
    }

    // MARK: Answers

    /// An `Instance` from an `instancesSet/item` element.
    static func instance(from item: XMLTree, region: String) -> Instance {
        var tags: [String: String] = [:]
        for tag in item.items("tagSet") {
            if let key = tag.string("key") { tags[key] = tag.string("value") ?? "" }
        }
        let spot = item.string("instanceLifecycle") == "spot"
        let code = (Int(item.string("instanceState/code") ?? "") ?? -1) & 0xFF
        let reasonCode = item.string("stateReason/code")
        let state: InstanceState
        switch code {
        case 0: state = .pending
        case 16: state = .running
        case 32, 64: state = .stopping
        case 48: state = spot && reasonCode == spotTerminationReason ? .preempted : .terminated
        // A stopped instance runs nothing; a stopped spot instance was interrupted.
        case 80: state = spot ? .preempted : .terminated
        default: state = .unknown
        }
        let address =
            item.string("ipAddress") ?? item.string("publicIpAddress")
            ?? item.items("networkInterfaceSet").first?.string("association/publicIp")
            ?? item.string("privateIpAddress")
        var labels = tags
        let name = labels.removeValue(forKey: nameTag) ?? ""
        return Instance(
            id: item.string("instanceId") ?? "", name: name, provider: ProviderName.aws.rawValue, region: region,
            machineType: item.string("instanceType") ?? "", spot: spot, state: state,
            stateReason: item.string("stateReason/message") ?? item.string("reason"), address: address, labels: labels)
    }
}

/// EC2's error answers: `<Response><Errors><Error><Code>…</Code><Message>…</Message></Error></Errors>…`.
public enum EC2Errors {
    /// Codes meaning the type has no capacity there now.
    public static let capacity: Set<String> = [
        "InsufficientInstanceCapacity", "InsufficientCapacity", "Unsupported", "InsufficientHostCapacity",
        "InsufficientReservedInstanceCapacity",
    ]
    /// Codes meaning an account limit.
    public static let quota: Set<String> = [
        "InstanceLimitExceeded", "VcpuLimitExceeded", "MaxSpotInstanceCountExceeded", "SpotMaxPriceTooLow",
    ]
    /// Codes meaning the credentials or the clock are wrong.
    public static let auth: Set<String> = [
        "AuthFailure", "UnauthorizedOperation", "SignatureDoesNotMatch", "RequestExpired", "InvalidClientTokenId",
        "IncompleteSignature", "MissingAuthenticationToken", "OptInRequired", "Blocked",
    ]
    /// Codes meaning throttling.
    public static let throttling: Set<String> = ["RequestLimitExceeded", "Throttling", "ThrottlingException"]
    /// Codes meaning the object does not exist.
    public static let notFound: Set<String> = ["InvalidInstanceID.NotFound"]
    /// Codes meaning server trouble worth a retry.
    public static let transient: Set<String> = [
        "InternalError", "ServiceUnavailable", "Unavailable", "InternalFailure",
    ]

    /// Fabric's error kind for an EC2 error code and HTTP status.
    public static func kind(code: String, status: Int) -> ProviderErrorKind {
        if capacity.contains(code) { return .capacityUnavailable }
        if quota.contains(code) { return .quotaExceeded }
        if auth.contains(code) { return .authFailed }
        if throttling.contains(code) { return .rateLimited }
        if notFound.contains(code) { return .notFound }
        if transient.contains(code) || status >= 500 { return .transient }
        if status == 401 || status == 403 { return .authFailed }
        return .invalidRequest
    }

    /// The first error's code and message in an error body, nil when it is not EC2's error XML.
    public static func parse(_ body: Data) -> (code: String, message: String)? {
        guard let root = try? XMLTree.parse(body) else { return nil }
        let error = root.at("Errors/Error") ?? (root.name == "Error" ? root : root.child("Error"))
        guard let error, let code = error.string("Code") else { return nil }
        return (code, error.string("Message") ?? "")
    }

    /// The `ProviderError` for a non-2xx answer.
    static func error(from response: HTTPResponse, action: String, now: Timestamp) -> ProviderError {
        let provider = ProviderName.aws.rawValue
        let retryAfter = RetryAfter.parse(response.header("retry-after"), now: now)
        guard let (code, message) = parse(response.body) else {
            let kind: ProviderErrorKind =
                response.status == 429
                ? .rateLimited
                : response.status >= 500
                    ? .transient
                    : (response.status == 401 || response.status == 403) ? .authFailed : .invalidRequest
            return ProviderError(
                kind, provider: provider, code: String(response.status),
                "\(action) failed with HTTP \(response.status)", retryAfter: retryAfter)
        }
        let kind = kind(code: code, status: response.status)
        return ProviderError(
            kind, provider: provider, code: code, "\(action): \(message)",
            retryAfter: kind == .rateLimited ? retryAfter : nil)
    }
}

/// `application/x-www-form-urlencoded` bodies with RFC 3986 encoding (spaces as %20), as the Query API and OAuth
/// token endpoints accept.
public enum FormEncoding {
    /// `name=value&…` in the given order.
    public static func encode(_ pairs: [(String, String)]) -> String {
        pairs.map {
            "\(SigV4Signer.uriEncode($0.0, keepSlash: false))=\(SigV4Signer.uriEncode($0.1, keepSlash: false))"
        }
        .joined(separator: "&")
    }

    /// Decodes a form body into pairs (`+` as space), in order.
    public static func decode(_ body: String) -> [(String, String)] {
        body.split(separator: "&").map { item in
            let parts = item.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            func d(_ s: Substring) -> String {
                let plus = s.replacingOccurrences(of: "+", with: " ")
                return plus.removingPercentEncoding ?? plus
            }
            return (d(parts[0]), parts.count > 1 ? d(parts[1]) : "")
        }
    }
}
