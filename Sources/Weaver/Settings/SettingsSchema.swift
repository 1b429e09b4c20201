// The one table of settings. Flags, environment variables, config-file keys, help and the redacted dump are all
// derived from it; `Settings` holds the typed values and the defaults.

/// One setting: its key, value type, description, and the field of `Settings` it sets.
///
/// Names derive from the key: `providers.aws.secret_access_key` is the flag `--providers-aws-secret-access-key`,
/// the environment variable `FABRIC_PROVIDERS_AWS_SECRET_ACCESS_KEY` and, in the config file,
/// `providers: {aws: {secret_access_key: ...}}`.
public struct SettingDescriptor: Sendable {
    /// Dotted lower-case key: `server.body_bytes_max`.
    public let key: String
    /// The value type as help shows it: `int 1..256`, `duration`.
    public let typeName: String
    /// One line for help.
    public let summary: String
    /// Whether the value is a credential: never printed, never quoted in errors.
    public let isSecret: Bool
    /// Whether a bare flag means true.
    public let isBool: Bool
    /// Extra flag names, without `--` (`k8s-enabled`).
    public let flagAliases: [String]
    let assign: @Sendable (inout Settings, RawSettingValue) throws(SettingValueError) -> Void
    let render: @Sendable (Settings) -> String
    let redact: @Sendable (Settings) -> String
    let echo: @Sendable (String) -> String?

    /// Binds `key` to the field at `path`, parsed and printed by `codec`.
    init<Value>(
        _ key: String, _ path: WritableKeyPath<Settings, Value> & Sendable, _ codec: SettingCodec<Value>,
        _ summary: String, aliases: [String] = []
    ) {
        self.key = key
        self.typeName = codec.typeName
        self.summary = summary
        self.isSecret = codec.isSecret
        self.isBool = codec.isBool
        self.flagAliases = aliases
        self.assign = { (settings: inout Settings, raw: RawSettingValue) throws(SettingValueError) in
            settings[keyPath: path] = try codec.parse(raw)
        }
        self.render = { codec.render($0[keyPath: path]) }
        self.redact = { codec.redacted($0[keyPath: path]) }
        self.echo = { codec.echo($0) }
    }

    /// `--server-body-bytes-max`.
    public var flag: String { "--" + String(key.map { $0 == "." || $0 == "_" ? "-" : $0 }) }

    /// `FABRIC_SERVER_BODY_BYTES_MAX`.
    public var environmentName: String {
        SettingsSchema.environmentPrefix + String(key.uppercased().map { $0 == "." ? "_" : $0 })
    }

    /// Whether the key's top-level section is one of `sections`.
    public func isIn(_ sections: Set<String>) -> Bool {
        sections.contains(String(key.prefix { $0 != "." }))
    }

    /// Whether a program that reads `sections` (nil: every one) less the keys in `excluding` reads this setting.
    public func isRead(sections: Set<String>?, excluding: Set<String>) -> Bool {
        (sections.map(isIn) ?? true) && !excluding.contains(key)
    }

    /// The key without its last part: `server`, `providers.k8s`.
    public var section: String {
        key.lastIndex(of: ".").map { String(key[..<$0]) } ?? ""
    }

    /// The default as help shows it; `(secret)` for secrets whatever the default.
    public var defaultText: String { isSecret ? "(secret)" : render(.default) }

    /// The value in `settings` as a flag would spell it (secrets included: do not log this).
    public func value(in settings: Settings) -> String { render(settings) }

    /// The value in `settings` for logs: secrets as `****` when set.
    public func redactedValue(in settings: Settings) -> String { redact(settings) }

    /// Parses `raw` and stores it in `settings`.
    public func apply(_ raw: RawSettingValue, to settings: inout Settings) throws(SettingValueError) {
        try assign(&settings, raw)
    }
}

/// The table of every setting weaver has, and the lookups derived from it.
public enum SettingsSchema {
    /// Prefix of every environment variable.
    public static let environmentPrefix = "FABRIC_"
    /// The flag and variable naming the config file; not a setting itself (the file cannot name another file).
    public static let configFlag = "--config"
    public static let configEnvironmentName = "FABRIC_CONFIG"
    /// Environment variables with this prefix belong to the tests and are not settings.
    public static let testEnvironmentPrefix = "FABRIC_TEST_"

    typealias S = Settings

    /// Every setting, grouped by section in the order help prints them.
    public static let all: [SettingDescriptor] = [
        .init("server.address", \S.server.address, .address, "Address the HTTP API listens on, host:port or :port."),
        .init(
            "server.threads", \S.server.threads, .int(SettingsLimits.serverThreads), "Threads serving HTTP requests."),
        .init(
            "server.body_bytes_max", \S.server.bodyBytesMax, .bytes(SettingsLimits.serverBodyBytes),
            "Largest request body accepted."),
        .init(
            "server.connections_max", \S.server.connectionsMax, .int(SettingsLimits.serverConnections),
            "Most open HTTP connections."),
        .init(
            "server.client_connections_max", \S.server.clientConnectionsMax,
            .int(SettingsLimits.serverClientConnections),
            "Most open HTTP connections from one client address (0: no limit), so one client cannot hold them all."),

        .init(
            "data.dir", \S.data.dir, .path(allowsEmpty: false),
            "Folder for local state: workload logs, and weaver's SQLite file."),

        .init("log.level", \S.log.level, .choice, "Least severe log level written."),
        .init("log.format", \S.log.format, .choice, "Log line format."),

        .init(
            "database.url", \S.database.url, .url(schemes: ["postgres", "postgresql"]),
            "PostgreSQL URL; when set it wins over host, port, user, password and database."),
        .init("database.host", \S.database.host, .string(), "PostgreSQL host; empty (and no URL) means SQLite."),
        .init("database.port", \S.database.port, .int(SettingsLimits.databasePort), "PostgreSQL port."),
        .init("database.user", \S.database.user, .string(allowsEmpty: false), "PostgreSQL user."),
        .init("database.password", \S.database.password, .secret, "PostgreSQL password."),
        .init("database.database", \S.database.database, .string(allowsEmpty: false), "PostgreSQL database name."),
        .init(
            "database.pool_size", \S.database.poolSize, .int(SettingsLimits.databasePoolSize),
            "PostgreSQL connections kept open."),

        .init(
            "nats.url", \S.nats.url, .url(schemes: ["nats", "tls"]),
            "NATS server URL (nats://host:4222); weaver without one runs single-process (shuttle needs one)."),
        .init("nats.user", \S.nats.user, .string(), "NATS user, with nats.password."),
        .init("nats.password", \S.nats.password, .secret, "NATS password."),
        .init("nats.token", \S.nats.token, .secret, "NATS token, when no user is set."),
        .init("nats.tls", \S.nats.tls, .bool, "Use TLS to NATS (also on for tls:// URLs or any TLS file)."),
        .init("nats.tls_ca_file", \S.nats.tlsCAFile, .path(), "PEM CAs trusted for the NATS server; empty: system."),
        .init("nats.tls_cert_file", \S.nats.tlsCertFile, .path(), "PEM client certificate for mutual TLS."),
        .init("nats.tls_key_file", \S.nats.tlsKeyFile, .path(), "PEM key of the client certificate."),

        .init(
            "cluster.join_token", \S.cluster.joinToken, .secret,
            "Secret shuttles present to join; required with nats.url."),
        .init(
            "cluster.machine_nats_url", \S.cluster.machineNATSURL, .url(schemes: ["nats", "tls"]),
            "NATS URL new cloud machines join with (reachable from them); empty means nats.url."),
        .init(
            "cluster.heartbeat_interval", \S.cluster.heartbeatInterval,
            .duration(SettingsLimits.clusterHeartbeatInterval), "How often nodes heartbeat."),
        .init(
            "cluster.suspect_after", \S.cluster.suspectAfter, .duration(SettingsLimits.clusterSilence),
            "Silence after which a node gets no new work."),
        .init(
            "cluster.lost_after", \S.cluster.lostAfter, .duration(SettingsLimits.clusterSilence),
            "Silence after which a node is lost and its workloads are rescheduled."),
        .init(
            "cluster.link_fencing", \S.cluster.linkFencing, .bool,
            "Shuttle stops its workloads after lost_after/2 without NATS (a NATS outage then stops them too)."),

        .init(
            "scheduler.retry_interval", \S.scheduler.retryInterval,
            .duration(SettingsLimits.schedulerRetryInterval), "Wait before retrying to place a pending workload."),
        .init(
            "scheduler.offer_unavailable_ttl", \S.scheduler.offerUnavailableTTL,
            .duration(SettingsLimits.schedulerOfferUnavailableTTL),
            "How long an offer that failed to launch is left out of placement."),
        .init(
            "scheduler.batch_window", \S.scheduler.batchWindow, .duration(SettingsLimits.schedulerBatchWindow),
            "How long workloads needing a new machine wait to be planned together (0s: each pass plans its own)."),

        .init("node.enabled", \S.node.enabled, .bool, "Run the embedded local node."),
        .init("node.name", \S.node.name, .name(), "Name of the node (weaver's embedded one, or this shuttle)."),
        .init("node.region", \S.node.region, .name(), "Region the node reports."),
        .init("node.cpu", \S.node.cpuMillis, .cpu, "CPU the node offers (4, 1500m); empty means detect."),
        .init("node.memory", \S.node.memoryBytes, .memory, "Memory the node offers (64Gi); empty means detect."),
        .init(
            "node.price_per_hour", \S.node.pricePerHour, .number(SettingsLimits.nodePricePerHour),
            "Price per hour the node's offer carries, non-negative."),
        .init("node.labels", \S.node.labels, .labels, "Labels on the node, k=v,k2=v2 (a map in the config file)."),
        .init(
            "node.gpu_count", \S.node.gpuCount, .optionalInt(SettingsLimits.nodeGPUCount),
            "GPUs the node offers; empty means detect with nvidia-smi."),
        .init("node.gpu_model", \S.node.gpuModel, .string(), "GPU model the node offers; empty means detected."),

        .init(
            "runtime.stop_grace", \S.runtime.stopGrace, .duration(SettingsLimits.runtimeStopGrace),
            "Time between SIGTERM and SIGKILL when stopping a workload."),
        .init(
            "runtime.log_bytes_max", \S.runtime.logBytesMax, .bytes(SettingsLimits.runtimeLogBytes),
            "Log bytes kept per workload."),
        .init(
            "runtime.monitor_path", \S.runtime.monitorPath, .path(),
            "fabric-monitor binary; empty means next to this program's binary."),

        .init("catalog.file", \S.catalog.file, .path(), "Offer catalog file; empty means the bundled catalog."),

        .init(
            "providers.k8s.enabled", \S.providers.k8s.enabled, .bool, "Place workloads on a Kubernetes cluster.",
            aliases: ["k8s-enabled"]),
        .init("providers.k8s.namespace", \S.providers.k8s.namespace, .name(), "Kubernetes namespace for workloads."),
        .init(
            "providers.k8s.kubeconfig", \S.providers.k8s.kubeconfig, .path(),
            "Kubeconfig file; empty means the in-cluster service account."),
        .init(
            "providers.k8s.endpoint", \S.providers.k8s.endpoint, .url(schemes: ["http", "https"]),
            "Kubernetes API server URL, overriding the kubeconfig."),

        .init("providers.runpod.enabled", \S.providers.runpod.enabled, .bool, "Place workloads on RunPod."),
        .init("providers.runpod.api_key", \S.providers.runpod.apiKey, .secret, "RunPod API key."),
        .init(
            "providers.runpod.endpoint", \S.providers.runpod.endpoint, .url(schemes: ["http", "https"]),
            "RunPod API URL; empty means the public API."),

        .init("providers.coreweave.enabled", \S.providers.coreweave.enabled, .bool, "Place workloads on CoreWeave."),
        .init(
            "providers.coreweave.kubeconfig", \S.providers.coreweave.kubeconfig, .path(),
            "CoreWeave kubeconfig file."),
        .init(
            "providers.coreweave.namespace", \S.providers.coreweave.namespace, .name(),
            "CoreWeave namespace for workloads."),
        .init(
            "providers.coreweave.endpoint", \S.providers.coreweave.endpoint, .url(schemes: ["http", "https"]),
            "CoreWeave API server URL, overriding the kubeconfig."),

        .init("providers.aws.enabled", \S.providers.aws.enabled, .bool, "Place workloads on AWS EC2."),
        .init("providers.aws.access_key_id", \S.providers.aws.accessKeyID, .string(), "AWS access key ID."),
        .init(
            "providers.aws.secret_access_key", \S.providers.aws.secretAccessKey, .secret, "AWS secret access key."),
        .init(
            "providers.aws.session_token", \S.providers.aws.sessionToken, .secret,
            "AWS session token, for temporary credentials."),
        .init("providers.aws.region", \S.providers.aws.region, .name(), "AWS region."),
        .init(
            "providers.aws.regions", \S.providers.aws.regions, .nameList(),
            "More AWS regions to provision in, comma-separated."),
        .init(
            "providers.aws.image_id", \S.providers.aws.imageID, .string(),
            "AMI new instances boot; it must start shuttle from the user data."),
        .init(
            "providers.aws.endpoint", \S.providers.aws.endpoint, .url(schemes: ["http", "https"]),
            "EC2 API URL; empty means the regional AWS endpoint."),

        .init("providers.gcp.enabled", \S.providers.gcp.enabled, .bool, "Place workloads on Google Compute Engine."),
        .init("providers.gcp.project", \S.providers.gcp.project, .string(), "GCP project ID."),
        .init(
            "providers.gcp.credentials_file", \S.providers.gcp.credentialsFile, .path(),
            "GCP service account JSON key file."),
        .init(
            "providers.gcp.zones", \S.providers.gcp.zones, .nameList(),
            "Compute Engine zones to provision in, comma-separated."),
        .init(
            "providers.gcp.endpoint", \S.providers.gcp.endpoint, .url(schemes: ["http", "https"]),
            "Compute Engine API URL; empty means the public API."),
    ]

    /// Setting by key.
    static let byKey: [String: SettingDescriptor] = Dictionary(uniqueKeysWithValues: all.map { ($0.key, $0) })

    /// Setting by environment variable name.
    static let byEnvironmentName: [String: SettingDescriptor] = Dictionary(
        uniqueKeysWithValues: all.map { ($0.environmentName, $0) })

    /// Setting by normalised flag name (see `normalizedFlag`), aliases included.
    static let byFlag: [String: SettingDescriptor] = {
        var table: [String: SettingDescriptor] = [:]
        for descriptor in all {
            for name in [descriptor.flag] + descriptor.flagAliases.map({ "--" + $0 }) {
                let previous = table.updateValue(descriptor, forKey: normalizedFlag(name))
                precondition(previous == nil, "two settings share the flag \(name)")
            }
        }
        return table
    }()

    /// Every key prefix that is a section (`providers`, `providers.k8s`): config-file maps that hold settings.
    static let sections: Set<String> = {
        var sections: Set<String> = []
        for descriptor in all {
            var section = descriptor.section
            while !section.isEmpty {
                sections.insert(section)
                section = section.lastIndex(of: ".").map { String(section[..<$0]) } ?? ""
            }
        }
        return sections
    }()

    /// The setting a flag names, matching legacy spellings and aliases; `name` includes the leading `--`.
    public static func descriptor(forFlag name: String) -> SettingDescriptor? { byFlag[normalizedFlag(name)] }

    /// The setting an environment variable names.
    public static func descriptor(forEnvironmentName name: String) -> SettingDescriptor? {
        byEnvironmentName[name]
    }

    /// The setting with `key`.
    public static func descriptor(forKey key: String) -> SettingDescriptor? { byKey[key] }

    /// Drops dashes next to a digit, so the legacy `--providers-k-8-s-enabled` matches `--providers-k8s-enabled`.
    static func normalizedFlag(_ name: String) -> String {
        let chars = Array(name)
        var out = ""
        out.reserveCapacity(chars.count)
        for (i, c) in chars.enumerated() {
            if c == "-", i > 1 {
                let digitBefore = chars[i - 1].isASCII && chars[i - 1].isNumber
                let digitAfter = i + 1 < chars.count && chars[i + 1].isASCII && chars[i + 1].isNumber
                if digitBefore || digitAfter { continue }
            }
            out.append(c)
        }
        return out
    }
}
