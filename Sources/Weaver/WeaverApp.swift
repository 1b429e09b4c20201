import FabricActors
import FabricCore
import FabricHTTP
import FabricLog
import FabricProviders
import FabricRuntime
import FabricStore
import Foundation
import Shuttle

#if canImport(Glibc)
    import Glibc
#endif

/// The real wall clock (the shell's one source of time for timestamps).
public struct SystemWallClock: WallClock {
    public init() {}
    public func now() -> Timestamp {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Timestamp(millisecondsSinceEpoch: Int64(ts.tv_sec) * 1000 + Int64(ts.tv_nsec) / 1_000_000)
    }
}

/// The composed control plane: store, workload service with its local node, provider catalog and HTTP API.
///
/// `main` and the tests build it the same way, from `Settings`.
public final class WeaverApp: Sendable {
    public static let version = SettingsLoader.defaultVersion

    public let settings: Settings
    public let service: WorkloadService
    public let store: any StateStore
    public let server: HTTPServer
    public let router: Router
    let logger: Logger
    /// The actor system nodes reach weaver on, the control-plane actor, and the embedded node (if any).
    public let cluster: Cluster
    /// Reads live offers from the provider drivers now and then (nil without drivers).
    let offersRefresh: Task<Void, Never>?

    /// What keeps the node protocol alive.
    public struct Cluster: Sendable {
        public let system: FabricActorSystem
        public let control: ControlPlane
        public let embedded: NodeHost?
    }

    init(
        settings: Settings, service: WorkloadService, store: any StateStore, server: HTTPServer, router: Router,
        logger: Logger, cluster: Cluster, offersRefresh: Task<Void, Never>? = nil
    ) {
        self.cluster = cluster
        self.offersRefresh = offersRefresh
        self.settings = settings
        self.service = service
        self.store = store
        self.server = server
        self.router = router
        self.logger = logger
    }

    /// Opens the store (running migrations), loads the catalog, registers the local node and recovers every
    /// unfinished workload. Does not listen yet: `run()` does.
    public static func build(
        settings: Settings, logger: Logger, clock: any WallClock = SystemWallClock(), ids: (any IDGenerator)? = nil
    ) async throws -> WeaverApp {
        Crypto.keepStateUntilExit()
        // Settings that cannot work together are refused before anything is created on disk.
        if !settings.nats.url.isEmpty, settings.clusterJoinToken.isEmpty {
            throw FabricError(
                .invalidArgument, "cluster.join_token must be set when nats.url is set: shuttles present it to join",
                field: "cluster.join_token")
        }
        let dataDir = settings.data.dir
        do {
            try FileManager.default.createDirectory(atPath: dataDir, withIntermediateDirectories: true)
        } catch {
            throw FabricError(
                .failedPrecondition, "cannot create data.dir \(dataDir): \(error.localizedDescription)",
                field: "data.dir")
        }
        if !settings.database.url.isEmpty {
            do { try PostgresStore.checkConninfo(settings.database.url, field: "database.url") } catch {
                throw FabricError(.invalidArgument, "database.url: \(error.message)", field: "database.url")
            }
        }
        if let problem = settings.clusterTimingProblem {
            throw FabricError(.invalidArgument, problem, field: "cluster.suspect_after")
        }
        try lockDataDir(dataDir)
        // Settings that name files (catalog, credentials, kubeconfigs) are checked before the store opens.
        let catalog: OfferCatalog
        do { catalog = try OfferCatalog.active(file: settings.catalog.file) } catch {
            throw FabricError(.invalidArgument, "catalog.file: \(error.message)", field: "catalog.file")
        }
        let drivers = try providerDrivers(
            settings.providers, catalog: catalog, clock: clock, logger: logger.with(component: "providers"))
        let store: any StateStore
        let storeKind: String
        switch settings.database.kind {
        case .sqlite:
            let path = (dataDir as NSString).appendingPathComponent("fabric.db")
            store = try await SQLiteStore(path: path)
            storeKind = "sqlite"
            logger.info("store open", ["kind": "sqlite", "path": path])
        case .postgres:
            store = try await openPostgres(settings.database)
            storeKind = "postgres"
            logger.info("store open", ["kind": "postgres", "database": settings.database.redactedTarget])
        }

        let providers = ProviderService(
            catalog: catalog, entries: providerEntries(settings.providers), clock: clock, drivers: drivers)

        var options = WorkloadServiceOptions()
        options.retryInterval = settings.scheduler.retryInterval
        options.stopGrace = settings.runtime.stopGrace
        options.persistLanes = max(4, settings.database.poolSize)  // pipelines writes; SQLite still has one writer
        let idGenerator = ids ?? SeededIDGenerator(seed: UInt64.random(in: 0...UInt64.max))
        options.nodeTiming = settings.clusterTiming
        options.joinToken = settings.clusterJoinToken
        options.crashAfterProvision = ProcessInfo.processInfo.environment["WEAVER_FAULT_CRASH_AFTER_PROVISION"] == "1"
        options.offerUnavailableFor = settings.scheduler.offerUnavailableTTL
        options.machineBatchWindow = settings.scheduler.batchWindow
        let machineNATS = settings.cluster.machineNATSURL.isEmpty ? settings.nats.url : settings.cluster.machineNATSURL
        if !machineNATS.isEmpty {
            options.machineBootstrap = machineBootstrap(
                natsURL: machineNATS, joinToken: settings.clusterJoinToken)
        }

        // The actor system nodes reach weaver on: NATS when nats.url is set, else in-process.
        let network = LoopbackNetwork()
        let system: FabricActorSystem
        var events: (any EventPublisher)? = nil
        var linkUp: @Sendable () -> Bool = { true }
        if !settings.nats.url.isEmpty {
            guard !settings.clusterJoinToken.isEmpty else {
                throw FabricError(
                    .invalidArgument,
                    "cluster.join_token must be set when nats.url is set: shuttles present it to join",
                    field: "cluster.join_token")
            }
            let nats: NATSActorSystem
            do {
                nats = try await NATSActorSystem.connect(
                    node: NodeProtocolLimits.controlPlaneNode, options: settings.natsClientOptions(name: "weaver"),
                    logger: logger.with(component: "actors"))
            } catch {
                let detail = (error as? FabricError)?.message ?? "\(error)"
                throw FabricError(.unavailable, "cannot connect to nats.url: \(detail)", field: "nats.url")
            }
            system = nats
            if let connection = nats.connection {
                events = NATSEventPublisher(connection: connection, logger: logger.with(component: "events"))
                linkUp = { connection.isConnected }
                logger.info(
                    "nodes join over NATS; events published",
                    [
                        "workloadSubjects": NATSEventPublisher.subjectPrefix + "<id>",
                        "nodeSubjects": NATSEventPublisher.nodeSubjectPrefix + "<id>",
                    ])
            }
        } else {
            system = try LocalActorSystem(node: NodeProtocolLimits.controlPlaneNode, network: network)
        }
        let service = WorkloadService(
            store: store, clock: clock, ids: idGenerator, logger: logger.with(component: "workloads"),
            options: options, offerView: { providers.offerView }, events: events, linkUp: linkUp, providers: drivers,
            providerCalls: providers.calls)
        let control = try ControlPlane.serve(registry: service, on: system)
        try await system.flush()
        // The drivers' offers (their regions, live prices) before the first placement; bounded, then in the background.
        if !drivers.isEmpty {
            let first = Task { await refreshOffersOnce(providers, logger: logger.with(component: "providers")) }
            _ = try? await WeaverAPI.withDeadline(firstOffersReadMax) { await first.value }
        }
        try await service.start()

        var embedded: NodeHost? = nil
        if settings.node.enabled {
            let config = NodeConfig(
                name: settings.node.name, region: settings.node.region, cpuMillis: settings.node.cpuMillis,
                memoryBytes: settings.node.memoryBytes, gpuCount: settings.node.gpuCount,
                gpuModel: settings.node.gpuModel, pricePerHour: settings.node.pricePerHour,
                labels: settings.node.labels, dataDir: dataDir,
                monitorPath: settings.runtime.monitorPath.isEmpty ? nil : settings.runtime.monitorPath,
                logBytesMax: settings.runtime.logBytesMax)
            let nodeLogger = logger.with(component: "node")
            let agent = config.makeAgent(now: clock.now(), logger: nodeLogger)
            let nodeSystem: FabricActorSystem
            if settings.nats.url.isEmpty {
                nodeSystem = try LocalActorSystem(node: config.name, network: network)
            } else {
                nodeSystem = try await NATSActorSystem.connect(
                    node: config.name, options: settings.natsClientOptions(name: "weaver-node-\(config.name)"),
                    logger: nodeLogger)
            }
            let host = try NodeHost(
                agent: agent, system: nodeSystem,
                options: ShuttleRunner.Options(
                    joinToken: settings.clusterJoinToken, session: idGenerator.next(prefix: "session"),
                    version: version, heartbeatInterval: settings.clusterTiming.heartbeatInterval),
                logger: nodeLogger)
            try await nodeSystem.flush()
            guard await host.waitUntilRegistered(timeout: .seconds(30)) else {
                throw FabricError(.unavailable, "the embedded node \(config.name) did not register within 30 s")
            }
            embedded = host
        }

        let api = WeaverAPI(
            service: service, providers: providers, store: store, storeKind: storeKind, clock: clock,
            startedAt: clock.now(), version: version)
        let router = api.router()
        let access = logger.with(component: "http")
        let server = HTTPServer(
            settings: HTTPServerSettings(
                address: settings.server.address.description, threadCount: settings.server.threads,
                bodyBytesMax: settings.server.bodyBytesMax, connectionsMax: settings.server.connectionsMax,
                connectionsPerClientMax: settings.server.clientConnectionsMax),
            responder: router,
            accessLog: { e in
                access.debug(
                    "\(e.method) \(e.path)",
                    ["status": e.status, "ms": Double(e.duration.components.attoseconds / 1_000_000_000_000) / 1000])
            })
        return WeaverApp(
            settings: settings, service: service, store: store, server: server, router: router, logger: logger,
            cluster: Cluster(system: system, control: control, embedded: embedded),
            offersRefresh: refreshOffers(providers, logger: logger.with(component: "providers")))
    }

    /// Serves until SIGINT or SIGTERM, then stops accepting, finishes in-flight requests, flushes the store.
    /// Workloads keep running under their monitors and are adopted at the next start.
    public func run() async throws {
        try server.start()
        logger.info("weaver listening", ["address": settings.server.address.description, "port": server.port])
        await Self.waitForTerminationSignal()
        logger.info("shutting down; running workloads keep running and are adopted at the next start")
        await server.shutdown()
        offersRefresh?.cancel()
        await cluster.embedded?.stop()
        await service.shutdown()
        await cluster.embedded?.system.shutdown()
        await cluster.system.shutdown()
        await store.close()
        logger.info("stopped")
    }

    /// The drivers of the enabled providers that have credentials: workloads may be placed on their offers.
    /// Providers without credentials stay catalog-only (dry runs).
    static func providerDrivers(
        _ p: Settings.Providers, catalog: OfferCatalog, clock: any WallClock, logger: Logger
    ) throws -> [any Provider] {
        var drivers: [any Provider] = []
        // Kubernetes clusters (k8s, coreweave): a kubeconfig, or the in-cluster service account for k8s.
        func kubernetes(
            _ name: ProviderName, kubeconfig: String, namespace: String, endpoint: String, key: String
        ) throws -> KubernetesConnection {
            do {
                return try KubernetesConnection.fromSettings(
                    kubeconfig: kubeconfig, namespace: namespace, endpoint: endpoint)
            } catch {
                throw FabricError(.invalidArgument, "\(key): \(error.message)", field: key)
            }
        }
        if p.k8s.enabled {
            let c = try kubernetes(
                .k8s, kubeconfig: p.k8s.kubeconfig, namespace: p.k8s.namespace, endpoint: p.k8s.endpoint,
                key: "providers.k8s.kubeconfig")
            let transport = KubernetesDriver.transport(
                for: c, provider: .k8s, logger: logger.with(component: "k8s"), clock: clock,
                random: SystemRandomNumberGenerator())
            drivers.append(
                KubernetesDriver(
                    configuration: KubernetesConfiguration(connection: c, namespace: p.k8s.namespace),
                    transport: transport, clock: clock))
        }
        if p.coreweave.enabled, !p.coreweave.kubeconfig.isEmpty {
            let c = try kubernetes(
                .coreweave, kubeconfig: p.coreweave.kubeconfig, namespace: p.coreweave.namespace,
                endpoint: p.coreweave.endpoint, key: "providers.coreweave.kubeconfig")
            let transport = KubernetesDriver.transport(
                for: c, provider: .coreweave, logger: logger.with(component: "coreweave"), clock: clock,
                random: SystemRandomNumberGenerator())
            drivers.append(
                KubernetesDriver.coreWeave(
                    connection: c, transport: transport, clock: clock, namespace: p.coreweave.namespace,
                    catalog: catalog))
        }
        if p.runpod.enabled, !p.runpod.apiKey.exposedValue.isEmpty {
            let configuration =
                p.runpod.endpoint.isEmpty
                ? RunPodConfiguration(apiKey: p.runpod.apiKey.exposedValue, catalog: catalog)
                : RunPodConfiguration(
                    apiKey: p.runpod.apiKey.exposedValue, endpoint: p.runpod.endpoint, catalog: catalog)
            drivers.append(
                RunPodDriver(
                    configuration: configuration,
                    transport: RunPodDriver.transport(
                        logger: logger.with(component: "runpod"), clock: clock, random: SystemRandomNumberGenerator()),
                    clock: clock))
        }
        if p.aws.enabled, !p.aws.accessKeyID.isEmpty, !p.aws.secretAccessKey.exposedValue.isEmpty {
            guard !p.aws.imageID.isEmpty else {
                throw FabricError(
                    .invalidArgument,
                    "providers.aws.image_id must name the AMI new machines boot (one with shuttle) when AWS "
                        + "credentials are set", field: "providers.aws.image_id")
            }
            var regions = [p.aws.region]
            for r in p.aws.regions.split(separator: ",").map(String.init) where !regions.contains(r) {
                regions.append(r)
            }
            let token = p.aws.sessionToken.exposedValue
            let settings = AWSSettings(
                credentials: AWSCredentials(
                    accessKeyID: p.aws.accessKeyID, secretAccessKey: p.aws.secretAccessKey.exposedValue,
                    sessionToken: token.isEmpty ? nil : token),
                regions: regions, endpoint: p.aws.endpoint, imageID: p.aws.imageID)
            drivers.append(
                EC2Provider(
                    settings: settings, catalog: catalog, logger: logger.with(component: "aws"), clock: clock,
                    random: SystemRandomNumberGenerator()))
        }
        if p.gcp.enabled, !p.gcp.credentialsFile.isEmpty {
            let key: Data
            do {
                key = try SmallFile.read(
                    p.gcp.credentialsFile, what: "service account key", bytesMax: credentialsFileBytesMax,
                    field: "providers.gcp.credentials_file")
            } catch {
                throw FabricError(
                    .invalidArgument, "providers.gcp.credentials_file: \(error.message)",
                    field: "providers.gcp.credentials_file")
            }
            let zones = p.gcp.zones.split(separator: ",").map(String.init)
            do {
                drivers.append(
                    try GCEProvider(
                        settings: GCPSettings(
                            serviceAccountKeyJSON: key, project: p.gcp.project, zones: zones, endpoint: p.gcp.endpoint),
                        catalog: catalog, logger: logger.with(component: "gcp"), clock: clock,
                        random: SystemRandomNumberGenerator()))
            } catch {
                throw FabricError(
                    .invalidArgument, "providers.gcp.credentials_file: not a usable service account key: \(error)",
                    field: "providers.gcp.credentials_file")
            }
        }
        return drivers
    }

    /// The largest credentials file weaver reads.
    static let credentialsFileBytesMax = 64 << 10

    /// The boot script of a new cloud machine: starts shuttle (which the machine's image must have) joined to this
    /// weaver under the instance name. The join token travels in the provider's user data / metadata.
    static func machineBootstrap(natsURL: String, joinToken: String) -> @Sendable (String) -> String {
        { name in
            """
            #!/bin/sh
            # Fabric: join this machine to weaver as node \(name).
            export FABRIC_CLUSTER_JOIN_TOKEN=\(shellQuoted(joinToken))
            exec shuttle --nats-url \(shellQuoted(natsURL)) --node-name \(shellQuoted(name)) --data-dir /var/lib/fabric

            """
        }
    }

    /// `s` in single quotes for sh.
    static func shellQuoted(_ s: String) -> String {
        "'" + s.replacingOccurrences(of: "'", with: "'\\''") + "'"
    }

    /// How long weaver waits at start for the drivers' first offers.
    static let firstOffersReadMax: Duration = .seconds(10)

    /// How often live offers are read from the drivers.
    static let offersRefreshInterval: Duration = .seconds(600)

    /// Reads live offers now and then, logging what fails (the previous offers stay in use).
    static func refreshOffers(_ providers: ProviderService, logger: Logger) -> Task<Void, Never>? {
        guard !providers.drivers.isEmpty else { return nil }
        return Task {
            while !Task.isCancelled {
                try? await Task.sleep(for: offersRefreshInterval)
                await refreshOffersOnce(providers, logger: logger)
            }
        }
    }

    /// One read of every driver's offers, failures logged (the previous offers, or the catalog, stay in use).
    static func refreshOffersOnce(_ providers: ProviderService, logger: Logger) async {
        for (name, error) in await providers.refreshOffers() {
            logger.warn("offers not read; keeping the last ones", ["provider": name.rawValue, "error": "\(error)"])
        }
    }

    static func providerEntries(_ p: Settings.Providers) -> [ProviderService.Entry] {
        [
            .init(name: .k8s, enabled: p.k8s.enabled, hasCredentials: !p.k8s.kubeconfig.isEmpty),
            .init(name: .runpod, enabled: p.runpod.enabled, hasCredentials: !p.runpod.apiKey.exposedValue.isEmpty),
            .init(name: .coreweave, enabled: p.coreweave.enabled, hasCredentials: !p.coreweave.kubeconfig.isEmpty),
            .init(
                name: .aws, enabled: p.aws.enabled,
                hasCredentials: !p.aws.accessKeyID.isEmpty && !p.aws.secretAccessKey.exposedValue.isEmpty),
            .init(name: .gcp, enabled: p.gcp.enabled, hasCredentials: !p.gcp.credentialsFile.isEmpty),
        ]
    }

    /// Returns at the first SIGINT or SIGTERM (both are ignored from the first call on).
    public static func waitForTerminationSignal() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let once = SignalOnce(c)
            for sig in [SIGINT, SIGTERM] {
                signal(sig, SIG_IGN)
                let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
                source.setEventHandler { once.fire() }
                source.resume()
                once.keep(source)
            }
        }
    }
}

/// Resumes a continuation on the first signal only.
final class SignalOnce: @unchecked Sendable {
    private let lock = NSLock()
    private var continuation: CheckedContinuation<Void, Never>?
    private var sources: [any DispatchSourceSignal] = []

    init(_ c: CheckedContinuation<Void, Never>) { continuation = c }

    func keep(_ s: any DispatchSourceSignal) {
        lock.lock()
        sources.append(s)
        lock.unlock()
    }

    func fire() {
        lock.lock()
        let c = continuation
        continuation = nil
        lock.unlock()
        c?.resume()
    }
}

extension WeaverApp {
    /// Connects to PostgreSQL from `database.url`, or from host/port/user/password/database.
    static func openPostgres(_ db: Settings.Database) async throws -> PostgresStore {
        if !db.url.isEmpty { return try await PostgresStore(url: db.url, poolSize: db.poolSize) }
        let password = db.password.exposedValue
        return try await PostgresStore(
            host: db.host, port: db.port, user: db.user, password: password.isEmpty ? nil : password,
            database: db.database, poolSize: db.poolSize)
    }
}

extension Settings {
    /// Heartbeat timing of the node lifecycle.
    public var clusterTiming: NodeLifecycle.Timing {
        NodeLifecycle.Timing(
            heartbeatInterval: cluster.heartbeatInterval, suspectAfter: cluster.suspectAfter,
            lostAfter: cluster.lostAfter)
    }
    /// Why the cluster timings cannot work (a heartbeat must come before suspicion, suspicion before loss).
    public var clusterTimingProblem: String? {
        if cluster.heartbeatInterval >= cluster.suspectAfter {
            return
                "cluster.heartbeat_interval (\(SettingText.formatDuration(cluster.heartbeatInterval))) must be shorter than cluster.suspect_after "
                + "(\(SettingText.formatDuration(cluster.suspectAfter)))"
        }
        if cluster.suspectAfter >= cluster.lostAfter {
            return
                "cluster.suspect_after (\(SettingText.formatDuration(cluster.suspectAfter))) must be shorter than cluster.lost_after "
                + "(\(SettingText.formatDuration(cluster.lostAfter)))"
        }
        return nil
    }
    /// The token nodes present to join.
    public var clusterJoinToken: String { cluster.joinToken.exposedValue }
    /// How weaver (and its embedded node) or a shuttle connect to NATS.
    public func natsClientOptions(name: String) -> NATSOptions {
        var o = NATSOptions(urls: [nats.url], name: name)
        if !nats.user.isEmpty {
            o.credentials = .userPassword(user: nats.user, password: nats.password.exposedValue)
        } else if !nats.token.isEmpty {
            o.credentials = .token(nats.token.exposedValue)
        }
        if nats.tls || nats.url.hasPrefix("tls://") || !nats.tlsCAFile.isEmpty || !nats.tlsCertFile.isEmpty {
            o.tls = NATSOptions.TLS(
                caFile: nats.tlsCAFile.isEmpty ? nil : nats.tlsCAFile,
                certificateFile: nats.tlsCertFile.isEmpty ? nil : nats.tlsCertFile,
                keyFile: nats.tlsKeyFile.isEmpty ? nil : nats.tlsKeyFile)
        }
        return o
    }
}

extension Settings.Database {
    /// Where the database is, for logs: the URL with its password masked, or user@host:port/database.
    var redactedTarget: String {
        url.isEmpty ? "\(user)@\(host):\(port)/\(database)" : SettingText.redactURL(url)
    }
}

extension WeaverApp {
    /// Takes an exclusive lock on `data.dir` for the life of the process, so two weavers never share one
    /// (they would both count the same node's capacity and run its workloads).
    public static func lockDataDir(_ dir: String, holder: String = "weaver") throws {
        let path = (dir as NSString).appendingPathComponent("\(holder).lock")
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else {
            throw FabricError(
                .failedPrecondition, "cannot open \(path): \(String(cString: strerror(errno)))", field: "data.dir")
        }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            close(fd)
            throw FabricError(
                .failedPrecondition, "another \(holder) is using data.dir \(dir) (\(path) is locked)", field: "data.dir"
            )
        }
        // Kept open (and locked) until the process exits.
        let pid = "\(getpid())\n"
        _ = ftruncate(fd, 0)
        _ = pid.withCString { write(fd, $0, strlen($0)) }
    }
}
