// The Kubernetes driver: one pod per instance, through the core/v1 REST API on an HTTPTransport.
import FabricCore
import FabricLog
import Foundation

/// Settings of one Kubernetes driver (the `k8s` provider, or CoreWeave through `KubernetesDriver.coreWeave`).
public struct KubernetesConfiguration: Sendable {
    /// Where the driver's offers come from.
    public enum OfferSource: Sendable {
        /// The cluster's own nodes: one offer per region and machine type with free room, priced as given.
        case nodes(KubernetesNodePricing)
        /// The provider's rows of an offer catalog (CoreWeave), with the catalog's `as_of`.
        case catalog(OfferCatalog)
    }

    /// The provider name it answers to (`k8s`, `coreweave`).
    public var provider: ProviderName
    public var connection: KubernetesConnection
    /// The namespace pods go into (default: the connection's).
    public var namespace: String
    /// How node labels name GPU classes, CPU types and regions.
    public var nodeLabels: KubernetesNodeLabels
    public var offerSource: OfferSource
    /// How long a pod may stay Pending and Unschedulable before its instance reports `capacityUnavailable`
    /// (`Instance.provisioningFailure`).
    public var pendingTimeout: Duration
    /// Limit of each API call.
    public var requestTimeout: Duration
    /// Items per list page (`limit`).
    public var listPageSize: Int
    /// Grace period of a pod delete, in seconds.
    public var deleteGracePeriodSeconds: Int
    /// The value of the owner label on Fabric's pods; `list` selects on it.
    public var owner: String
    /// The image of pods whose request has none; nil: such requests are refused.
    public var defaultImage: String?

    /// Settings with the defaults below; `namespace` nil means the connection's.
    public init(
        provider: ProviderName = .k8s, connection: KubernetesConnection, namespace: String? = nil,
        nodeLabels: KubernetesNodeLabels = .generic, offerSource: OfferSource = .nodes(KubernetesNodePricing()),
        pendingTimeout: Duration = KubernetesConfiguration.pendingTimeoutDefault,
        requestTimeout: Duration = KubernetesConfiguration.requestTimeoutDefault,
        listPageSize: Int = KubernetesConfiguration.listPageSizeDefault,
        deleteGracePeriodSeconds: Int = KubernetesConfiguration.deleteGracePeriodSecondsDefault,
        owner: String = KubernetesConfiguration.ownerDefault, defaultImage: String? = nil
    ) {
        self.provider = provider
        self.connection = connection
        self.namespace = namespace ?? connection.namespace
        self.nodeLabels = nodeLabels
        self.offerSource = offerSource
        self.pendingTimeout = pendingTimeout
        self.requestTimeout = requestTimeout
        self.listPageSize = listPageSize
        self.deleteGracePeriodSeconds = deleteGracePeriodSeconds
        self.owner = owner
        self.defaultImage = defaultImage
    }

    /// How long a pod may stay Unschedulable before it counts as no capacity.
    public static let pendingTimeoutDefault = Duration.seconds(5 * 60)
    /// Limit of one API call.
    public static let requestTimeoutDefault = Duration.seconds(30)
    /// Items per list page.
    public static let listPageSizeDefault = 500
    /// The largest page size asked for.
    public static let listPageSizeMax = 5000
    /// Seconds a deleted pod gets to stop.
    public static let deleteGracePeriodSecondsDefault = 30
    /// The owner label value weaver puts on every instance.
    public static let ownerDefault = "fabric"
}

/// A Kubernetes cluster as a Fabric provider: an instance is a Pod named by the request name.
///
/// ```
///  provision ── POST pods ──► 201 ──► Instance (pending)
///                  └─ 409 AlreadyExists ──► GET pod ──► that Instance (idempotent by name)
///  status ───── GET pod ──► Instance (pending / running / terminated / stopping); 404 ──► nil
///                  Pending + Unschedulable past pendingTimeout ──► provisioningFailure = capacityUnavailable
///  terminate ── DELETE pod (404 is success)
///  list ─────── GET pods?labelSelector=fabric-owner=<owner>&limit=N&continue=T …; 410 Expired ──► start over
///  offers ───── nodes (allocatable − requests of non-terminal pods) or the catalog
/// ```
///
/// Capacity shortages do not fail the create call on Kubernetes: the pod stays Pending. The driver reports it
/// through `Instance.provisioningFailure` (`capacityUnavailable`) once the pod has been Unschedulable longer than
/// `pendingTimeout`, with the scheduler's message in `stateReason`; the caller deletes the pod and places the
/// workload elsewhere, as for a `capacityUnavailable` error from `provision`.
public actor KubernetesDriver: Provider {
    public nonisolated let name: ProviderName
    public let configuration: KubernetesConfiguration
    let transport: any HTTPTransport
    let clock: any WallClock
    private var token: CachedToken?

    /// How long a token read from a file is used before the file is read again.
    public static let tokenFileRereadInterval = Duration.seconds(60)
    /// The most pages one list reads.
    public static let listPagesMax = 1000
    /// How often a list starts over after its continue token expired.
    public static let listRestartsMax = 3

    private struct CachedToken {
        var value: String
        var readAt: Timestamp
    }

    /// A driver that talks to `configuration.connection` through `transport`, reading time from `clock`.
    public init(configuration: KubernetesConfiguration, transport: any HTTPTransport, clock: any WallClock) {
        self.name = configuration.provider
        self.configuration = configuration
        self.transport = transport
        self.clock = clock
    }

    /// The production transport for a connection: a libcurl client holding the connection's CA, client
    /// certificate and key, behind retries (Retry-After honoured), a concurrency bound and redacted request logs.
    public static func transport(
        for connection: KubernetesConnection, provider: ProviderName, logger: Logger, clock: any WallClock,
        random: some RandomNumberGenerator & Sendable, policy: RetryPolicy = .default
    ) -> RetryingTransport {
        RetryingTransport(
            CurlHTTPClient(tls: connection.tls), provider: provider.rawValue, policy: policy, logger: logger,
            clock: clock, random: random)
    }

    // MARK: Provider

    /// Offers from the nodes' free capacity (`live`), or the catalog's rows with their `as_of`.
    public func offers() async throws -> OfferList {
        switch configuration.offerSource {
        case .catalog(let catalog):
            let rows = catalog.offers(provider: name)
            let newest = rows.compactMap { CatalogDate.millisecondsSinceEpoch($0.asOf) }.max()
            return OfferList(
                offers: rows, origin: "catalog", asOf: newest.map(Timestamp.init) ?? clock.now())
        case .nodes(let pricing):
            let now = clock.now()
            let nodes = try await nodeCapacity()
            return OfferList(
                offers: KubernetesMapping.offers(
                    from: nodes, provider: name.rawValue, pricing: pricing, asOf: ProviderHTTP.date(now)),
                origin: "live", asOf: now)
        }
    }

    /// Creates the pod; when one of that name exists already (a retry, a restart), returns it instead.
    public func provision(_ request: InstanceRequest) async throws -> Instance {
        let pod = try KubernetesMapping.pod(
            for: request, namespace: configuration.namespace, labels: configuration.nodeLabels,
            owner: configuration.owner, defaultImage: configuration.defaultImage, provider: name.rawValue)
        let body = try JSONEncoder().encode(pod)
        let response = try await send("POST", podsPath, body: body)
        switch response.status {
        case 200, 201, 202:
            return try instance(decode(KubeWire.Pod.self, response, doing: "create pod \(request.name)"))
        case 409 where reason(of: response) == "AlreadyExists":
            guard let existing = try await fetchPod(request.name) else {
                // Deleted between the two calls: the next attempt creates it again.
                throw ProviderError(
                    .transient, provider: name.rawValue, code: "AlreadyExists",
                    "pod \(request.name) existed and vanished before it could be read")
            }
            return existing
        default:
            throw apiError(response, doing: "create pod \(request.name)")
        }
    }

    /// The pod's state as an Instance, nil when there is no such pod.
    public func status(name instanceName: String, region: String) async throws -> Instance? {
        try await fetchPod(instanceName)
    }

    /// Deletes the pod (with `deleteGracePeriodSeconds`); a pod that is already gone is success.
    public func terminate(name instanceName: String, region: String) async throws {
        let options = KubeWire.DeleteOptions(
            gracePeriodSeconds: configuration.deleteGracePeriodSeconds, propagationPolicy: "Background")
        let response = try await send(
            "DELETE", podsPath + "/" + ProviderHTTP.encode(instanceName), body: try JSONEncoder().encode(options))
        switch response.status {
        case 200, 202, 404: return
        default:
            throw apiError(response, doing: "delete pod \(instanceName)")
        }
    }

    /// Every pod carrying the owner label, page by page; an expired continue token starts the list over.
    public func list() async throws -> [Instance] {
        let selector = "\(InstanceRequest.ownerLabel)=\(configuration.owner)"
        let pods: [KubeWire.Pod] = try await listAll(podsPath, [("labelSelector", selector)], doing: "list pods")
        return pods.map(instance)
    }

    // MARK: Capacity

    /// Every node with its allocatable resources, the requests of its non-terminal pods, what is free, and
    /// whether it is Ready and schedulable.
    public func nodeCapacity() async throws -> [KubernetesNodeCapacity] {
        let nodes: [KubeWire.Node] = try await listAll("/api/v1/nodes", [], doing: "list nodes")
        let pods: [KubeWire.Pod] = try await listAll(
            "/api/v1/pods", [("fieldSelector", "status.phase!=Succeeded,status.phase!=Failed")],
            doing: "list pods of all namespaces")
        return KubernetesMapping.capacity(nodes: nodes, pods: pods, labels: configuration.nodeLabels)
    }

    // MARK: Calls

    private var podsPath: String { "/api/v1/namespaces/\(ProviderHTTP.encode(configuration.namespace))/pods" }

    private func instance(_ pod: KubeWire.Pod) -> Instance {
        KubernetesMapping.instance(
            from: pod, provider: name.rawValue, now: clock.now(), pendingTimeout: configuration.pendingTimeout,
            fallbackRegion: configuration.nodeLabels.unlabelledRegion)
    }

    private func fetchPod(_ podName: String) async throws -> Instance? {
        let response = try await send("GET", podsPath + "/" + ProviderHTTP.encode(podName))
        switch response.status {
        case 200: return instance(try decode(KubeWire.Pod.self, response, doing: "get pod \(podName)"))
        case 404: return nil
        default: throw apiError(response, doing: "get pod \(podName)")
        }
    }

    /// All items of a list, following `metadata.continue`; on 410 Expired the list starts over (at most
    /// `listRestartsMax` times), keeping nothing from the expired pass.
    private func listAll<Item: Codable & Sendable & Hashable>(
        _ path: String, _ query: [(String, String)], doing what: String
    ) async throws -> [Item] {
        let limit = min(max(1, configuration.listPageSize), KubernetesConfiguration.listPageSizeMax)
        var restarts = 0
        restart: while true {
            var items: [Item] = []
            var token: String?
            for _ in 0..<Self.listPagesMax {
                var q = query + [("limit", String(limit))]
                if let token { q.append(("continue", token)) }
                let response = try await send("GET", path + "?" + ProviderHTTP.query(q))
                if response.status == 410, token != nil, restarts < Self.listRestartsMax {
                    restarts += 1
                    continue restart
                }
                guard response.status == 200 else {
                    throw apiError(response, doing: what)
                }
                let page = try decode(KubeWire.List<Item>.self, response, doing: what)
                items += page.items ?? []
                guard let next = page.metadata?.continue, !next.isEmpty else { return items }
                token = next
            }
            throw ProviderError(
                .transient, provider: name.rawValue, code: "TooManyPages",
                "\(what): more than \(Self.listPagesMax) pages of \(limit)")
        }
    }

    private func send(_ method: String, _ path: String, body: Data = Data()) async throws -> HTTPResponse {
        var headers: [(name: String, value: String)] = [("Accept", "application/json")]
        if !body.isEmpty { headers.append(("Content-Type", "application/json")) }
        if let bearer = try bearerToken() { headers.append(("Authorization", "Bearer \(bearer)")) }
        let request = HTTPRequest(
            method: method, url: configuration.connection.server + path, headers: headers, body: body,
            timeout: configuration.requestTimeout)
        return try await ProviderHTTP.send(request, over: transport, provider: name.rawValue)
    }

    /// The bearer token: from the token file (read again every `tokenFileRereadInterval`, as service account
    /// tokens rotate), else the configured one, else none.
    private func bearerToken() throws(ProviderError) -> String? {
        guard let file = configuration.connection.tokenFile else { return configuration.connection.token }
        let now = clock.now()
        if let token, now.since(token.readAt) < Self.tokenFileRereadInterval { return token.value }
        do {
            let text = String(decoding: try KubeConfig.readFile(file, what: "token"), as: UTF8.self)
            let value = text.trimmingCharacters(in: .whitespacesAndNewlines)
            token = CachedToken(value: value, readAt: now)
            return value
        } catch {
            throw ProviderError(.authFailed, provider: name.rawValue, code: "TokenFile", error.message)
        }
    }

    private func decode<T: Decodable>(_ type: T.Type, _ response: HTTPResponse, doing what: String) throws -> T {
        do { return try JSONDecoder().decode(type, from: response.body) } catch {
            throw ProviderError(
                .transient, provider: name.rawValue, code: "MalformedResponse",
                "\(what): HTTP \(response.status) with a body that is not a \(T.self): "
                    + ProviderHTTP.quote(response.body))
        }
    }

    private func apiError(_ response: HTTPResponse, doing what: String) -> ProviderError {
        KubernetesMapping.error(response, provider: name.rawValue, doing: what, now: clock.now())
    }

    private func reason(of response: HTTPResponse) -> String? {
        (try? JSONDecoder().decode(KubeWire.Status.self, from: response.body))?.reason
    }
}
