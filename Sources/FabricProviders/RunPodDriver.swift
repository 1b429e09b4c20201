// The RunPod driver: GPU pods through RunPod's GraphQL API, on-demand and spot, on an HTTPTransport.
import FabricCore
import FabricLog
import Foundation

/// Settings of the RunPod driver. Its description never shows the API key.
public struct RunPodConfiguration: Sendable, CustomStringConvertible {
    /// The API key, sent as `Authorization: Bearer` (redacted in request logs).
    public var apiKey: String
    /// The GraphQL endpoint (a fake's URL in tests, a private endpoint).
    public var endpoint: String
    /// Catalog rows of provider `runpod`: machine types, and prices when live ones cannot be read.
    public var catalog: OfferCatalog
    /// Limit of each API call.
    public var requestTimeout: Duration
    /// Fabric's instance names start with this; `list` only reports pods named so.
    public var namePrefix: String
    /// The owner Fabric writes into each pod's `FABRIC_OWNER` variable; `list` skips pods of other owners.
    public var owner: String
    /// Container disk of each pod, in GB.
    public var containerDiskGB: Int
    /// RunPod `gpuTypeId` per catalog GPU name.
    public var gpuTypeIDs: [String: String]
    /// The image of pods whose request has none; nil: such requests are refused.
    public var defaultImage: String?
    /// Whether `offers` asks the API for current prices (else the catalog's).
    public var livePrices: Bool

    /// Settings with the defaults below.
    public init(
        apiKey: String, endpoint: String = RunPodConfiguration.endpointDefault, catalog: OfferCatalog = .bundled,
        requestTimeout: Duration = .seconds(30), namePrefix: String = RunPodConfiguration.namePrefixDefault,
        owner: String = "fabric", containerDiskGB: Int = RunPodConfiguration.containerDiskGBDefault,
        gpuTypeIDs: [String: String] = RunPodMachineType.gpuTypeIDs, defaultImage: String? = nil,
        livePrices: Bool = true
    ) {
        self.apiKey = apiKey
        self.endpoint = endpoint
        self.catalog = catalog
        self.requestTimeout = requestTimeout
        self.namePrefix = namePrefix
        self.owner = owner
        self.containerDiskGB = containerDiskGB
        self.gpuTypeIDs = gpuTypeIDs
        self.defaultImage = defaultImage
        self.livePrices = livePrices
    }

    /// RunPod's GraphQL endpoint.
    public static let endpointDefault = "https://api.runpod.io/graphql"
    /// The prefix of weaver's instance names (`fabric-<workload>-<version>`).
    public static let namePrefixDefault = "fabric-"
    /// Container disk per pod, in GB.
    public static let containerDiskGBDefault = 50

    /// Endpoint and settings; the key as `****`.
    public var description: String {
        "RunPod(endpoint: \(endpoint), apiKey: \(apiKey.isEmpty ? "unset" : "****"), prefix: \(namePrefix))"
    }
}

/// RunPod as a Fabric provider: a pod per instance, found again by its (deterministic) name.
///
/// ```
///  provision ── myself { pods } has the name? ── yes ──► that pod (idempotent by name)
///                                  └─ no ──► podFindAndDeployOnDemand | podRentInterruptable(bidPerGpu)
///                                             └─ errors[] "no longer any instances available" ──► capacityUnavailable
///  status ───── pod(podId) (ID remembered, else found by name in myself { pods })
///  terminate ── podTerminate(podId); an unknown pod is success
///  list ─────── myself { pods } named with the prefix and owned by this Fabric
///  offers ───── gpuTypes prices × GPUs over the catalog's machine types (live), else the catalog
/// ```
///
/// RunPod has no idempotency token: a create whose answer was lost may have made a pod. The driver therefore looks
/// for the name before every create, and its production transport does not retry (`transport(logger:…)`): a
/// failed call goes back to the caller, whose next `provision` looks again first.
public actor RunPodDriver: Provider {
    public nonisolated let name = ProviderName.runpod
    public let configuration: RunPodConfiguration
    let transport: any HTTPTransport
    let clock: any WallClock
    /// Pod IDs by instance name, as made or found.
    private var podIDs: [String: String] = [:]
    /// The last live prices read, for spot bids.
    private var live: [Offer] = []

    /// The most pods one `myself` answer may hold before the driver refuses it as implausible.
    public static let podsMax = 10_000
    /// Spot bids are rounded to 1/`bidScale` dollars per GPU-hour (a tenth of a cent).
    public static let bidScale = 1000.0
    /// `ProviderError.code` of a body that is not the expected JSON.
    public static let malformedCode = "MalformedResponse"

    /// A driver calling `configuration.endpoint` through `transport`.
    public init(configuration: RunPodConfiguration, transport: any HTTPTransport, clock: any WallClock) {
        self.configuration = configuration
        self.transport = transport
        self.clock = clock
    }

    /// The production transport: libcurl behind request logs with the key redacted and a concurrency bound, with
    /// no retries of its own (a repeated create could make a second pod; callers retry through `provision`, which
    /// looks for the name first).
    public static func transport(
        logger: Logger, clock: any WallClock, random: some RandomNumberGenerator & Sendable
    ) -> RetryingTransport {
        RetryingTransport(
            CurlHTTPClient(), provider: ProviderName.runpod.rawValue, policy: RetryPolicy(attemptsMax: 1),
            logger: logger, clock: clock, random: random)
    }

    // MARK: Provider

    /// Catalog machine types priced from `gpuTypes` (`live`); the catalog's rows and date when the API cannot be
    /// read or live prices are off.
    public func offers() async throws -> OfferList {
        let rows = configuration.catalog.offers(provider: .runpod)
        let newest = rows.compactMap { CatalogDate.millisecondsSinceEpoch($0.asOf) }.max()
        let fromCatalog = OfferList(offers: rows, origin: "catalog", asOf: newest.map(Timestamp.init) ?? clock.now())
        guard configuration.livePrices else { return fromCatalog }
        let now = clock.now()
        let types: [RunPodWire.GPUType]
        do {
            let data: RunPodWire.GPUTypesData = try await call(
                RunPodGraphQL.gpuTypes, variables: [String: String](), doing: "read GPU prices")
            types = data.gpuTypes ?? []
        } catch is CancellationError {
            throw CancellationError()
        } catch {
            return fromCatalog
        }
        let byID = Dictionary(types.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        var priced: [Offer] = []
        for row in rows {
            guard let type = RunPodMachineType(row.machineType), let id = configuration.gpuTypeIDs[type.gpu],
                let gpu = byID[id]
            else { continue }
            let secure = type.cloud == "SECURE"
            guard let perGPU = secure ? gpu.securePrice : gpu.communityPrice, perGPU > 0 else { continue }
            var offer = row
            offer.onDemandPerHour = perGPU * Double(type.gpuCount)
            let spot = (secure ? gpu.secureSpotPrice : gpu.communitySpotPrice).map { $0 * Double(type.gpuCount) }
            offer.spotPerHour = spot.flatMap { $0 > 0 && $0 <= offer.onDemandPerHour ? $0 : nil }
            offer.source = "live"
            offer.asOf = ProviderHTTP.date(now)
            priced.append(offer)
        }
        live = priced
        return OfferList(offers: priced, origin: "live", asOf: now)
    }

    /// The pod of this name if one exists; else a new on-demand pod, or a spot pod bidding the offer's spot price
    /// per GPU.
    public func provision(_ request: InstanceRequest) async throws -> Instance {
        func invalid(_ message: String) -> ProviderError {
            ProviderError(.invalidRequest, provider: name.rawValue, code: "InvalidRequest", message)
        }
        guard request.name.hasPrefix(configuration.namePrefix) else {
            throw invalid("pod name \(request.name) does not start with \(configuration.namePrefix)")
        }
        guard let type = RunPodMachineType(request.machineType) else {
            throw invalid("machine type \(request.machineType) is not a GPU pod type (<n>x_<gpu>_<cloud>)")
        }
        guard let gpuTypeID = configuration.gpuTypeIDs[type.gpu] else {
            throw invalid("no RunPod GPU type is known for \(type.gpu)")
        }
        guard let image = request.image ?? configuration.defaultImage, !image.isEmpty else {
            throw invalid("a pod needs a container image and the request has none")
        }
        if let existing = try await findPod(named: request.name) {
            return instance(existing, request: request)
        }
        var env = request.env
        env[RunPodMapping.ownerEnv] = request.labels[InstanceRequest.ownerLabel] ?? configuration.owner
        env[RunPodMapping.workloadEnv] = request.labels[InstanceRequest.workloadLabel]
        env[RunPodMapping.regionEnv] = request.region
        env[RunPodMapping.machineTypeEnv] = request.machineType
        env[RunPodMapping.spotEnv] = String(request.spot)
        var input = DeployInput(
            name: request.name, imageName: image, gpuTypeId: gpuTypeID, gpuCount: type.gpuCount,
            cloudType: type.cloud, dataCenterId: request.region.isEmpty ? nil : request.region,
            containerDiskInGb: configuration.containerDiskGB,
            minVcpuCount: Int((request.resources.cpuMillis + 999) / 1000),
            minMemoryInGb: Int((request.resources.memoryBytes + (1 << 30) - 1) >> 30),
            env: env.keys.sorted().map { DeployInput.EnvVar(key: $0, value: env[$0]!) },
            dockerArgs: request.command.map(RunPodMapping.dockerArgs))
        let document: String
        if request.spot {
            guard let spot = spotPrice(region: request.region, machineType: request.machineType) else {
                throw invalid("no spot price is known for \(request.machineType) in \(request.region)")
            }
            input.bidPerGpu = (spot / Double(type.gpuCount) * Self.bidScale).rounded() / Self.bidScale
            document = RunPodGraphQL.rentInterruptable
        } else {
            document = RunPodGraphQL.deployOnDemand
        }
        let data: RunPodWire.Created = try await call(
            document, variables: ["input": input], doing: "create pod \(request.name)")
        guard let pod = data.podFindAndDeployOnDemand ?? data.podRentInterruptable else {
            throw ProviderError(
                .transient, provider: name.rawValue, code: Self.malformedCode,
                "create pod \(request.name): the answer names no pod")
        }
        podIDs[request.name] = pod.id
        return instance(pod, request: request)
    }

    /// The pod's state, or nil when RunPod has no pod of this name.
    public func status(name instanceName: String, region: String) async throws -> Instance? {
        if let id = podIDs[instanceName] {
            let data: RunPodWire.PodData = try await call(
                RunPodGraphQL.pod, variables: ["input": ["podId": id]], doing: "read pod \(instanceName)")
            guard let pod = data.pod else {
                podIDs[instanceName] = nil
                return nil
            }
            return RunPodMapping.instance(from: pod, provider: name.rawValue)
        }
        return try await findPod(named: instanceName).map { RunPodMapping.instance(from: $0, provider: name.rawValue) }
    }

    /// Terminates the pod; a pod RunPod does not know (any more) is success.
    public func terminate(name instanceName: String, region: String) async throws {
        var id = podIDs[instanceName]
        if id == nil { id = try await findPod(named: instanceName)?.id }
        guard let id else { return }
        do {
            let _: TerminateData = try await call(
                RunPodGraphQL.terminate, variables: ["input": ["podId": id]], doing: "terminate pod \(instanceName)")
        } catch let e as ProviderError where e.kind == .notFound || terminateSaysGone(e) {
            // Already gone.
        }
        podIDs[instanceName] = nil
    }

    /// Every pod named with the prefix whose `FABRIC_OWNER` (where RunPod returns env) is this Fabric's owner.
    public func list() async throws -> [Instance] {
        let pods = try await allPods()
        return pods.filter(isOwned).map { RunPodMapping.instance(from: $0, provider: name.rawValue) }
    }

    // MARK: Calls

    /// `data` of podTerminate: a scalar.
    private struct TerminateData: Decodable {}

    /// The create input (`PodFindAndDeployOnDemandInput`, `PodRentInterruptableInput`).
    struct DeployInput: Encodable {
        struct EnvVar: Encodable {
            var key: String
            var value: String
        }

        var name: String
        var imageName: String
        var gpuTypeId: String
        var gpuCount: Int
        var cloudType: String
        var dataCenterId: String?
        var containerDiskInGb: Int
        var minVcpuCount: Int
        var minMemoryInGb: Int
        var env: [EnvVar]
        var dockerArgs: String?
        var bidPerGpu: Double?
    }

    /// `{"query": …, "variables": …}`.
    private struct Body<Variables: Encodable>: Encodable {
        var query: String
        var variables: Variables
    }

    /// A terminate error that only says the pod is not there (dstack reads errors on `podTerminate` so).
    private func terminateSaysGone(_ e: ProviderError) -> Bool {
        e.kind == .invalidRequest && e.message.lowercased().contains("pod")
            && RunPodMapping.notFoundPhrases.contains { e.message.lowercased().contains($0) }
    }

    private func isOwned(_ pod: RunPodWire.Pod) -> Bool {
        guard let podName = pod.name, podName.hasPrefix(configuration.namePrefix) else { return false }
        guard pod.env != nil else { return true }  // env not returned: the name decides
        return pod.env(RunPodMapping.ownerEnv) == configuration.owner
    }

    private func allPods() async throws -> [RunPodWire.Pod] {
        let data: RunPodWire.MyselfData = try await call(
            RunPodGraphQL.myPods, variables: [String: String](), doing: "list pods")
        let pods = data.myself?.pods ?? []
        guard pods.count <= Self.podsMax else {
            throw ProviderError(
                .transient, provider: name.rawValue, code: Self.malformedCode,
                "list pods: \(pods.count) pods, more than \(Self.podsMax)")
        }
        return pods
    }

    /// The live pod with this name (not TERMINATED), remembering its ID.
    private func findPod(named podName: String) async throws -> RunPodWire.Pod? {
        let pod = try await allPods().first { $0.name == podName && $0.desiredStatus != "TERMINATED" }
        if let pod { podIDs[podName] = pod.id }
        return pod
    }

    /// The mapped pod, with what a create answer may leave out filled in from the request.
    private func instance(_ pod: RunPodWire.Pod, request: InstanceRequest) -> Instance {
        var i = RunPodMapping.instance(from: pod, provider: name.rawValue)
        if i.region.isEmpty { i.region = request.region }
        if i.machineType.isEmpty { i.machineType = request.machineType }
        if pod.env == nil {
            i.spot = request.spot
            i.labels = request.labels
        }
        return i
    }

    private func spotPrice(region: String, machineType: String) -> Double? {
        let match = { (o: Offer) in o.region == region && o.machineType == machineType }
        return live.first(where: match)?.spotPerHour
            ?? configuration.catalog.offers(provider: .runpod).first(where: match)?.spotPerHour
    }

    /// POSTs one GraphQL document with its variables and returns `data`, or throws the mapped error.
    private func call<Variables: Encodable, Result: Decodable>(
        _ document: String, variables: Variables, doing what: String
    ) async throws -> Result {
        let body = try JSONEncoder().encode(Body(query: document, variables: variables))
        let request = HTTPRequest(
            method: "POST", url: configuration.endpoint,
            headers: [
                ("Content-Type", "application/json"), ("Accept", "application/json"),
                ("Authorization", "Bearer \(configuration.apiKey)"),
            ], body: body, timeout: configuration.requestTimeout, secretHeaders: ["Authorization"])
        let response = try await ProviderHTTP.send(request, over: transport, provider: name.rawValue)
        let envelope = try? JSONDecoder().decode(RunPodWire.Envelope<Result>.self, from: response.body)
        let errors = envelope?.errors.flatMap { $0.isEmpty ? nil : $0 }
        if response.status == 200, errors == nil {
            guard let data = envelope?.data else {
                throw ProviderError(
                    .transient, provider: name.rawValue, code: Self.malformedCode,
                    "\(what): HTTP 200 with a body that is not a GraphQL answer: " + ProviderHTTP.quote(response.body))
            }
            return data
        }
        throw RunPodMapping.error(response, errors: errors, provider: name.rawValue, doing: what, now: clock.now())
    }
}
