import Testing

@testable import Weaver

/// The descriptor table: names derived from keys, secrets marked, and every value type's parsing and printing.
@Suite struct SettingsSchemaTests {
    /// Every key the brief asks for, in order.
    static let expectedKeys = [
        "server.address", "server.threads", "server.body_bytes_max", "server.connections_max",
        "server.client_connections_max", "data.dir",
        "log.level", "log.format", "database.url", "database.host", "database.port", "database.user",
        "database.password", "database.database", "database.pool_size", "nats.url", "nats.user", "nats.password",
        "nats.token", "nats.tls", "nats.tls_ca_file", "nats.tls_cert_file", "nats.tls_key_file", "cluster.join_token",
        "cluster.machine_nats_url", "cluster.heartbeat_interval", "cluster.suspect_after", "cluster.lost_after",
        "cluster.link_fencing",
        "scheduler.retry_interval",
        "scheduler.offer_unavailable_ttl", "scheduler.batch_window", "node.enabled", "node.name", "node.region",
        "node.cpu", "node.memory",
        "node.price_per_hour", "node.labels", "node.gpu_count", "node.gpu_model", "runtime.stop_grace",
        "runtime.log_bytes_max", "runtime.monitor_path",
        "catalog.file", "providers.k8s.enabled", "providers.k8s.namespace", "providers.k8s.kubeconfig",
        "providers.k8s.endpoint", "providers.runpod.enabled", "providers.runpod.api_key", "providers.runpod.endpoint",
        "providers.coreweave.enabled", "providers.coreweave.kubeconfig", "providers.coreweave.namespace",
        "providers.coreweave.endpoint", "providers.aws.enabled", "providers.aws.access_key_id",
        "providers.aws.secret_access_key", "providers.aws.session_token", "providers.aws.region",
        "providers.aws.regions", "providers.aws.image_id", "providers.aws.endpoint", "providers.gcp.enabled",
        "providers.gcp.project", "providers.gcp.credentials_file", "providers.gcp.zones", "providers.gcp.endpoint",
    ]

    @Test func tableHoldsExactlyTheExpectedKeysInOrder() {
        #expect(SettingsSchema.all.map(\.key) == Self.expectedKeys)
    }

    @Test(arguments: [
        ("server.address", "--server-address", "FABRIC_SERVER_ADDRESS"),
        ("server.body_bytes_max", "--server-body-bytes-max", "FABRIC_SERVER_BODY_BYTES_MAX"),
        ("data.dir", "--data-dir", "FABRIC_DATA_DIR"),
        ("database.pool_size", "--database-pool-size", "FABRIC_DATABASE_POOL_SIZE"),
        (
            "scheduler.offer_unavailable_ttl", "--scheduler-offer-unavailable-ttl",
            "FABRIC_SCHEDULER_OFFER_UNAVAILABLE_TTL"
        ),
        ("node.price_per_hour", "--node-price-per-hour", "FABRIC_NODE_PRICE_PER_HOUR"),
        ("providers.k8s.enabled", "--providers-k8s-enabled", "FABRIC_PROVIDERS_K8S_ENABLED"),
        ("providers.runpod.api_key", "--providers-runpod-api-key", "FABRIC_PROVIDERS_RUNPOD_API_KEY"),
        (
            "providers.aws.secret_access_key", "--providers-aws-secret-access-key",
            "FABRIC_PROVIDERS_AWS_SECRET_ACCESS_KEY"
        ),
        ("providers.gcp.credentials_file", "--providers-gcp-credentials-file", "FABRIC_PROVIDERS_GCP_CREDENTIALS_FILE"),
    ])
    func namesDeriveFromTheKey(key: String, flag: String, env: String) throws {
        let d = try #require(SettingsSchema.descriptor(forKey: key))
        #expect(d.flag == flag)
        #expect(d.environmentName == env)
        #expect(SettingsSchema.descriptor(forFlag: flag)?.key == key)
        #expect(SettingsSchema.descriptor(forEnvironmentName: env)?.key == key)
    }

    @Test(arguments: SettingsSchema.all.map(\.key))
    func everyKeyRoundTripsThroughItsFlagAndEnvironmentName(key: String) throws {
        let d = try #require(SettingsSchema.descriptor(forKey: key))
        let dashed = key.replacingOccurrences(of: ".", with: "-").replacingOccurrences(of: "_", with: "-")
        let underscored = key.uppercased().replacingOccurrences(of: ".", with: "_")
        #expect(d.flag == "--" + dashed)
        #expect(d.environmentName == "FABRIC_" + underscored)
        #expect(SettingsSchema.descriptor(forFlag: d.flag)?.key == key)
        #expect(SettingsSchema.descriptor(forEnvironmentName: d.environmentName)?.key == key)
    }

    @Test(arguments: [
        ("--providers-k-8-s-enabled", "providers.k8s.enabled"),
        ("--providers-k8s-enabled", "providers.k8s.enabled"),
        ("--providers-k8-s-enabled", "providers.k8s.enabled"),
        ("--k8s-enabled", "providers.k8s.enabled"),
        ("--k-8-s-enabled", "providers.k8s.enabled"),
        ("--providers-k-8-s-namespace", "providers.k8s.namespace"),
        ("--server-address", "server.address"),
    ])
    func legacyAndAliasFlagsMatch(flag: String, key: String) {
        #expect(SettingsSchema.descriptor(forFlag: flag)?.key == key)
    }

    @Test(arguments: [
        ("--providers-k-8-s-enabled", "--providers-k8s-enabled"), ("--a-1-b", "--a1b"),
        ("--server-address", "--server-address"),
        ("--x-10-y", "--x10y"),
    ])
    func normalisationDropsDashesNextToDigits(input: String, expected: String) {
        #expect(SettingsSchema.normalizedFlag(input) == expected)
    }

    @Test func secretsAreExactlyTheCredentials() {
        let secrets = SettingsSchema.all.filter(\.isSecret).map(\.key)
        #expect(
            secrets == [
                "database.password", "nats.password", "nats.token", "cluster.join_token", "providers.runpod.api_key",
                "providers.aws.secret_access_key", "providers.aws.session_token",
            ])
        for d in SettingsSchema.all {
            let name = d.key.split(separator: ".").last!
            let looksSecret = ["password", "api_key", "secret", "token"].contains { name.contains($0) }
            #expect(d.isSecret == looksSecret, "\(d.key)")
            #expect(d.defaultText == (d.isSecret ? "(secret)" : d.value(in: .default)))
        }
    }

    @Test(arguments: SettingsSchema.all.map(\.key))
    func defaultsRoundTripThroughTheirOwnParser(key: String) throws {
        let d = try #require(SettingsSchema.descriptor(forKey: key))
        var settings = Settings.default
        try d.apply(.text(d.value(in: .default)), to: &settings)
        #expect(settings == .default)
    }

    @Test func defaultsAreTheDocumentedOnes() {
        let s = Settings.default
        #expect(s.server.address == Settings.HostPort(host: "127.0.0.1", port: 8080))
        #expect(s.server.threads == 4)
        #expect(s.server.bodyBytesMax == 1_048_576)
        #expect(s.server.connectionsMax == 1024)
        #expect(s.data.dir == ".fabric")
        #expect(s.log.level == .info && s.log.format == .text)
        #expect(s.database.port == 5432 && s.database.user == "fabric" && s.database.database == "fabric")
        #expect(s.database.poolSize == 4 && s.database.password.isEmpty && s.database.kind == .sqlite)
        #expect(s.scheduler.retryInterval == .seconds(2))
        #expect(s.scheduler.offerUnavailableTTL == .seconds(600))
        #expect(s.node.enabled && s.node.name == "local" && s.node.region == "local")
        #expect(
            s.node.cpuMillis == nil && s.node.memoryBytes == nil && s.node.pricePerHour == 0 && s.node.labels.isEmpty)
        #expect(s.runtime.stopGrace == .seconds(10) && s.runtime.logBytesMax == 10 << 20)
        #expect(!s.providers.k8s.enabled && s.providers.k8s.namespace == "default")
        #expect(s.providers.runpod.enabled && s.providers.coreweave.enabled && s.providers.aws.enabled)
        #expect(s.providers.gcp.enabled && s.providers.aws.region == "us-east-1")
        #expect(s.providers.coreweave.namespace == "default")
    }

    @Test func databaseKindFollowsURLOrHost() {
        var s = Settings.default
        #expect(s.database.kind == .sqlite)
        s.database.host = "db.internal"
        #expect(s.database.kind == .postgres)
        s.database.host = ""
        s.database.url = "postgres://fabric@db/fabric"
        #expect(s.database.kind == .postgres)
    }

    // MARK: - Value types

    @Test(arguments: [
        ("500ms", Duration.milliseconds(500)), ("10s", .seconds(10)), ("2m", .seconds(120)), ("1h", .seconds(3600)),
        ("1h30m", .seconds(5400)), ("1.5s", .milliseconds(1500)), ("0", .zero), ("250us", .microseconds(250)),
        (" 3s ", .seconds(3)), ("100ns", .nanoseconds(100)),
    ])
    func durationsParse(text: String, expected: Duration) {
        #expect(SettingText.parseDuration(text) == expected)
    }

    @Test(arguments: ["", "10", "abc", "5x", "1.2.3s", "s", "-1s", "10 s", "99999999999h"])
    func badDurationsDoNotParse(text: String) {
        #expect(SettingText.parseDuration(text) == nil)
    }

    @Test(arguments: [
        (Duration.milliseconds(500), "500ms"), (.seconds(10), "10s"), (.seconds(600), "10m"), (.seconds(5400), "1h30m"),
        (.zero, "0s"), (.microseconds(1500), "1500us"), (.seconds(3661), "1h1m1s"),
    ])
    func durationsFormat(duration: Duration, expected: String) {
        #expect(SettingText.formatDuration(duration) == expected)
    }

    @Test(arguments: [("1Mi", 1 << 20), ("1Gi", 1 << 30), ("4096", 4096), ("2Ki", 2048), ("1G", 1_000_000_000)])
    func byteSizesParse(text: String, expected: Int) throws {
        #expect(try SettingCodec<Int>.bytes(1...(1 << 40)).parse(.text(text)) == expected)
    }

    @Test(arguments: [
        (":8080", "", 8080), ("0.0.0.0:80", "0.0.0.0", 80), ("localhost:0", "localhost", 0),
        ("[::1]:9000", "::1", 9000), ("api.example.com:65535", "api.example.com", 65535),
    ])
    func addressesParse(text: String, host: String, port: Int) {
        #expect(SettingText.parseAddress(text) == Settings.HostPort(host: host, port: port))
    }

    @Test(arguments: ["8080", ":65536", ":", "host:", "a b:80", "::1:80", "[::1:80", ":80x", ":-1"])
    func badAddressesDoNotParse(text: String) {
        #expect(SettingText.parseAddress(text) == nil)
    }

    @Test(arguments: [
        ("true", true), ("false", false), ("yes", true), ("no", false), ("1", true), ("0", false), ("TRUE", true),
        ("No", false),
    ])
    func boolsParse(text: String, expected: Bool) {
        #expect(SettingText.parseBool(text) == expected)
    }

    @Test(arguments: ["maybe", "", "2", "on", "y"])
    func badBoolsDoNotParse(text: String) {
        #expect(SettingText.parseBool(text) == nil)
    }

    @Test func listsComeFromCommasOrSequences() throws {
        let codec = SettingCodec<[String]>.list
        #expect(try codec.parse(.text("a, b,,c")) == ["a", "b", "c"])
        #expect(try codec.parse(.list(["x", "y z"])) == ["x", "y z"])
        #expect(try codec.parse(.text("")) == [])
        #expect(codec.render(["a", "b"]) == "a,b")
        #expect(throws: SettingValueError("expected a list, not a map")) { try codec.parse(.map([.init("k", "v")])) }
    }

    @Test func labelsComeFromPairsOrMaps() throws {
        let codec = SettingCodec<[String: String]>.labels
        #expect(try codec.parse(.text("gpu=h100, zone=a,empty=")) == ["gpu": "h100", "zone": "a", "empty": ""])
        #expect(try codec.parse(.map([.init("team", "ml")])) == ["team": "ml"])
        #expect(codec.render(["b": "2", "a": "1"]) == "a=1,b=2")
        #expect(throws: SettingValueError("expected key=value pairs separated by commas")) {
            try codec.parse(.text("gpu"))
        }
        #expect(throws: SettingValueError("label \"a\" is given twice")) { try codec.parse(.text("a=1,a=2")) }
        let bad = #expect(throws: SettingValueError.self) { try codec.parse(.text("bad key=1")) }
        #expect(bad?.reason.hasPrefix("label \"bad key\": label keys are") == true)
    }

    @Test(arguments: [
        ("postgres://fabric:hunter2@db:5432/fabric", "postgres://fabric:****@db:5432/fabric"),
        ("postgresql://fabric@db/fabric", "postgresql://fabric@db/fabric"),
        ("postgres://db/fabric?sslmode=require&password=hunter2", "postgres://db/fabric?sslmode=require&password=****"),
        ("nats://u:p@nats:4222", "nats://u:****@nats:4222"),
        ("tls://nats:4222", "tls://nats:4222"),
        ("not a url", "not a url"),
    ])
    func urlPasswordsAreMasked(url: String, expected: String) {
        #expect(SettingText.redactURL(url) == expected)
    }

    @Test func secretsNeverPrint() {
        let secret = Settings.Secret("hunter2")
        #expect("\(secret)" == "****")
        #expect(String(reflecting: secret) == "Secret(****)")
        var dumped = ""
        dump(secret, to: &dumped)
        #expect(!dumped.contains("hunter2"))
        #expect("\(Settings.Secret(""))" == "")
        #expect(secret.exposedValue == "hunter2")
    }
}
