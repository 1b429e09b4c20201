import FabricActors
import Foundation
import Testing

@testable import Weaver

/// A YAML file in a temporary folder, removed when the test is done with it.
final class TempConfig {
    let path: String

    init(_ yaml: String) throws {
        path =
            FileManager.default.temporaryDirectory.appendingPathComponent("fabric-settings-\(UUID().uuidString).yaml")
            .path
        try yaml.write(toFile: path, atomically: true, encoding: .utf8)
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }
}

/// Loads and expects `.run`.
func loadSettings(_ arguments: [String] = [], env: [String: String] = [:]) throws -> Settings {
    switch try SettingsLoader.load(arguments: arguments, environment: env) {
    case .run(let settings): return settings
    case let other: throw SettingsTestFailure("expected .run, got \(other)")
    }
}

/// Loads and returns the error, or nil when loading succeeded.
func loadError(_ arguments: [String] = [], env: [String: String] = [:]) -> SettingsError? {
    do {
        _ = try SettingsLoader.load(arguments: arguments, environment: env)
        return nil
    } catch {
        return error
    }
}

struct SettingsTestFailure: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}

@Suite struct SettingsLoaderTests {
    @Test func nothingGivenMeansDefaults() throws {
        #expect(try loadSettings([], env: ["HOME": "/root", "PATH": "/bin"]) == .default)
    }

    // MARK: - Precedence

    enum Place: String, CaseIterable { case file, env, flag }

    @Test(arguments: [
        ([Place.file, .env, .flag], 32), ([.file, .env], 16), ([.file], 8), ([], 4), ([.env], 16),
        ([.file, .flag], 32),
        ([.env, .flag], 32),
    ])
    func flagsBeatEnvironmentBeatsFileBeatsDefault(places: [Place], expected: Int) throws {
        let file = try TempConfig("server:\n  threads: 8\n")
        var env = ["FABRIC_CONFIG": file.path]
        var args: [String] = []
        if !places.contains(.file) { env["FABRIC_CONFIG"] = nil }
        if places.contains(.env) { env["FABRIC_SERVER_THREADS"] = "16" }
        if places.contains(.flag) { args = ["--server-threads", "32"] }
        #expect(try loadSettings(args, env: env).server.threads == expected)
    }

    @Test func eachSourceOverridesOnlyWhatItSets() throws {
        let file = try TempConfig("server:\n  address: \"127.0.0.1:9000\"\n  threads: 8\nlog:\n  level: warn\n")
        let s = try loadSettings(
            ["--config", file.path, "--log-level=debug"], env: ["FABRIC_SERVER_THREADS": "12"])
        #expect(s.server.address == Settings.HostPort(host: "127.0.0.1", port: 9000))
        #expect(s.server.threads == 12)
        #expect(s.log.level == .debug)
        #expect(s.server.connectionsMax == 1024)
    }

    @Test func configFlagWinsOverConfigEnvironment() throws {
        let fromFlag = try TempConfig("node:\n  name: from-flag\n")
        let fromEnv = try TempConfig("node:\n  name: from-env\n")
        #expect(
            try loadSettings(["--config=\(fromFlag.path)"], env: ["FABRIC_CONFIG": fromEnv.path]).node.name
                == "from-flag")
        #expect(try loadSettings([], env: ["FABRIC_CONFIG": fromEnv.path]).node.name == "from-env")
        #expect(try loadSettings(["--config", ""], env: ["FABRIC_CONFIG": fromEnv.path]).node.name == "local")
    }

    // MARK: - Flag forms

    @Test(arguments: [
        (["--server-address", ":9090"], ":9090"), (["--server-address=:9090"], ":9090"),
        (["--server-address", "[::1]:80"], "[::1]:80"), (["--server-address=0.0.0.0:1"], "0.0.0.0:1"),
    ])
    func flagsTakeSeparateOrInlineValues(args: [String], expected: String) throws {
        #expect(try loadSettings(args).server.address.description == expected)
    }

    @Test(arguments: [
        (["--providers-k8s-enabled"], true), (["--providers-k8s-enabled=true"], true),
        (["--providers-k8s-enabled=false"], false), (["--providers-k8s-enabled", "yes"], true),
        (["--providers-k8s-enabled", "0"], false), (["--providers-k8s-enabled=NO"], false),
        (["--providers-k-8-s-enabled"], true), (["--k8s-enabled"], true), (["--k-8-s-enabled"], true),
        (["--k8s-enabled=false"], false), (["--k8s-enabled", "--providers-k-8-s-enabled=0"], false), ([], false),
    ])
    func booleanFlagsAndLegacySpellings(args: [String], expected: Bool) throws {
        #expect(try loadSettings(args).providers.k8s.enabled == expected)
    }

    @Test func bareBooleanIsFollowedByTheNextFlag() throws {
        let s = try loadSettings(["--node-enabled=false", "--providers-k8s-enabled", "--providers-k8s-namespace", "ml"])
        #expect(!s.node.enabled)
        #expect(s.providers.k8s.enabled)
        #expect(s.providers.k8s.namespace == "ml")
    }

    @Test func aBareBooleansFollowingWordIsItsValue() throws {
        let error = try #require(loadError(["--node-enabled", "maybe"]))
        #expect(
            error.message
                == "invalid value \"maybe\" for node.enabled (from flag --node-enabled): "
                + "expected true, false, yes, no, 1 or 0")
    }

    @Test func legacyFlagOverridesEnvironment() throws {
        let s = try loadSettings(
            ["--providers-k-8-s-enabled=false"], env: ["FABRIC_PROVIDERS_K8S_ENABLED": "true"])
        #expect(!s.providers.k8s.enabled)
    }

    @Test func natsCredentialsAndTLSBecomeClientOptions() throws {
        let s = try loadSettings(
            ["--nats-user", "u", "--nats-password", "p", "--nats-tls-ca-file", "/ca.pem"],
            env: ["FABRIC_NATS_URL": "nats://n:4222"])
        let o = s.natsClientOptions(name: "weaver")
        #expect(o.credentials == .userPassword(user: "u", password: "p"))
        #expect(o.tls == NATSOptions.TLS(caFile: "/ca.pem"))
        let t = try loadSettings(["--nats-token", "tok"]).natsClientOptions(name: "weaver")
        #expect(t.credentials == .token("tok"))
        #expect(t.tls == nil)
        #expect(try loadSettings([]).natsClientOptions(name: "weaver").credentials == .none)
    }

    @Test(arguments: [
        (["--node-gpu-count", "17"], "node.gpu_count"), (["--node-gpu-count", "x"], "node.gpu_count"),
        (["--cluster-heartbeat-interval", "10ms"], "cluster.heartbeat_interval"),
        (["--cluster-lost-after", "soon"], "cluster.lost_after"),
    ])
    func badClusterAndNodeValuesNameTheKey(args: [String], key: String) throws {
        let error = try #require(loadError(args))
        #expect(error.message.contains(key), "\(error.message)")
    }

    @Test func lastRepeatedFlagWins() throws {
        #expect(try loadSettings(["--server-threads", "2", "--server-threads=3"]).server.threads == 3)
    }

    @Test func typedValuesFromFlags() throws {
        let s = try loadSettings([
            "--server-body-bytes-max", "2Mi", "--scheduler-retry-interval", "500ms", "--node-cpu", "1500m",
            "--node-memory", "8Gi", "--node-price-per-hour", "2.5", "--node-labels", "gpu=h100,zone=a",
            "--log-format", "json", "--database-url", "postgresql://fabric@db/fabric", "--nats-url", "tls://n:4222",
            "--runtime-stop-grace=1m30s", "--node-gpu-count", "2", "--node-gpu-model", "H100",
            "--cluster-lost-after", "45s",
        ])
        #expect(s.server.bodyBytesMax == 2 << 20)
        #expect(s.scheduler.retryInterval == .milliseconds(500))
        #expect(s.node.cpuMillis == 1500)
        #expect(s.node.memoryBytes == 8 << 30)
        #expect(s.node.pricePerHour == 2.5)
        #expect(s.node.labels == ["gpu": "h100", "zone": "a"])
        #expect(s.node.gpuCount == 2)
        #expect(s.node.gpuModel == "H100")
        #expect(s.cluster.lostAfter == .seconds(45))
        #expect(s.natsClientOptions(name: "x").tls != nil, "tls:// implies TLS")
        #expect(s.log.format == .json)
        #expect(s.database.url == "postgresql://fabric@db/fabric")
        #expect(s.database.kind == .postgres)
        #expect(s.nats.url == "tls://n:4222")
        #expect(s.runtime.stopGrace == .seconds(90))
    }

    // MARK: - Bad values, from each source

    /// A key, a bad value for it, and the reason the message must give.
    static let badValues: [(key: String, value: String, reason: String)] = [
        ("server.threads", "abc", "expected an integer"),
        ("server.threads", "0", "must be between 1 and 256"),
        ("server.threads", "1.5", "expected an integer"),
        ("database.pool_size", "65", "must be between 1 and 64"),
        ("scheduler.retry_interval", "10", "expected a duration like 500ms, 10s, 2m or 1h"),
        ("scheduler.retry_interval", "2d", "expected a duration like 500ms, 10s, 2m or 1h"),
        ("scheduler.retry_interval", "2h", "must be between 10ms and 1h"),
        ("node.enabled", "maybe", "expected true, false, yes, no, 1 or 0"),
        ("log.level", "verbose", "expected one of debug, info, warn, error"),
        ("log.format", "xml", "expected one of text, json"),
        ("server.address", "8080", "expected host:port or :port with a port from 0 to 65535"),
        ("server.address", ":70000", "expected host:port or :port with a port from 0 to 65535"),
        ("database.url", "mysql://db/fabric", "expected a URL starting with postgres:// or postgresql://"),
        ("nats.url", "http://nats:4222", "expected a URL starting with nats:// or tls://"),
        ("nats.url", "nats://h:99999", "expected a port from 1 to 65535 after the host"),
        ("nats.url", "tls://h:0", "expected a port from 1 to 65535 after the host"),
        ("nats.url", "nats://h:42x", "expected a port from 1 to 65535 after the host"),
        ("database.url", "postgresql://h:99999/db", "expected a port from 1 to 65535 after the host"),
        ("database.url", "postgres://a:5432,b:70000/db", "expected a port from 1 to 65535 after the host"),
        ("database.url", "postgres://[::1]:65536/db", "expected a port from 1 to 65535 after the host"),
        (
            "providers.runpod.endpoint", "https://api.runpod.io:123456/v2",
            "expected a port from 1 to 65535 after the host"
        ),
        ("server.body_bytes_max", "lots", "expected a byte size like 10Mi, 1Gi or 1048576"),
        ("server.body_bytes_max", "2Gi", "must be between 1Ki and 1Gi"),
        ("server.body_bytes_max", "0", "must be between 1Ki and 1Gi"),
        ("server.body_bytes_max", "99999999999999999999", "must be between 1Ki and 1Gi"),
        ("node.price_per_hour", "-1", "must be between 0 and 10000"),
        ("node.price_per_hour", "cheap", "expected a number"),
        ("node.cpu", "many", "expected a CPU quantity like 4 or 1500m, at most 1024 cores, or empty to detect"),
        (
            "node.name", "Not_A_Name",
            "expected a name of 1 to 63 lower-case letters, digits or '-', starting and "
                + "ending with a letter or digit"
        ),
        ("data.dir", "", "must not be empty"),
        (
            "providers.gcp.zones", "us-central1-a,,b",
            "expected names separated by commas, each of 1 to 63 lower-case letters, digits or '-'; \"\" is not one"
        ),
        (
            "providers.aws.regions", "us-east-1,US_WEST",
            "expected names separated by commas, each of 1 to 63 lower-case letters, digits or '-'; \"US_WEST\" is "
                + "not one"
        ),
        ("cluster.machine_nats_url", "http://x:4222", "expected a URL starting with nats:// or tls://"),
    ]

    @Test(arguments: badValues.indices)
    func badValueFromAFlagNamesKeyAndFlag(index: Int) throws {
        let (key, value, reason) = Self.badValues[index]
        let d = try #require(SettingsSchema.descriptor(forKey: key))
        let error = try #require(loadError(["\(d.flag)=\(value)"]))
        #expect(error.problems.count == 1)
        #expect(error.message == "invalid value \"\(value)\" for \(key) (from flag \(d.flag)): \(reason)")
        #expect(error.problems.first?.key == key)
        #expect(error.problems.first?.source == .flag(name: d.flag))
    }

    @Test(arguments: badValues.indices)
    func badValueFromTheEnvironmentNamesKeyAndVariable(index: Int) throws {
        let (key, value, reason) = Self.badValues[index]
        let d = try #require(SettingsSchema.descriptor(forKey: key))
        let error = try #require(loadError(env: [d.environmentName: value]))
        #expect(
            error.message == "invalid value \"\(value)\" for \(key) (from environment \(d.environmentName)): \(reason)")
        #expect(error.problems.first?.source == .environment(name: d.environmentName))
    }

    @Test(arguments: badValues.indices)
    func badValueFromTheConfigFileNamesKeyFileAndLine(index: Int) throws {
        let (key, value, reason) = Self.badValues[index]
        let parts = key.split(separator: ".")
        // "# comment" on line 1 so the key sits on line 3 (two-level keys) or 4 (three-level keys).
        var yaml = "# settings under test\n"
        for (depth, part) in parts.dropLast().enumerated() {
            yaml += String(repeating: "  ", count: depth) + "\(part):\n"
        }
        yaml += String(repeating: "  ", count: parts.count - 1) + "\(parts.last!): \"\(value)\"\n"
        let file = try TempConfig(yaml)
        let error = try #require(loadError(["--config", file.path]))
        let line = parts.count + 1
        #expect(
            error.message
                == "invalid value \"\(value)\" for \(key) (from config file \(file.path) line \(line)): \(reason)")
        #expect(error.problems.first?.source == .configFile(path: file.path, line: line, column: 2 * parts.count - 1))
    }

    @Test func allProblemsAreReportedFileThenEnvironmentThenFlags() throws {
        let file = try TempConfig("server:\n  threads: none\n")
        let error = try #require(
            loadError(
                ["--log-level", "loud", "--config", file.path], env: ["FABRIC_SERVER_ADDRESS": "nowhere"]))
        #expect(error.problems.map(\.key) == ["server.threads", "server.address", "log.level"])
        #expect(error.problems.map(\.code) == [.invalidValue, .invalidValue, .invalidValue])
        #expect(error.message.split(separator: "\n").count == 3)
    }

    @Test func aSecretsBadValueIsNeverQuoted() throws {
        let long = String(repeating: "s3cr3t", count: 1000)
        let error = try #require(loadError(env: ["FABRIC_DATABASE_PASSWORD": long]))
        #expect(
            error.message
                == "invalid value for database.password (from environment FABRIC_DATABASE_PASSWORD): "
                + "must be at most 4096 characters"
        )
        #expect(!error.message.contains("s3cr3t"))
    }

    @Test func aBadURLsPasswordIsMaskedInTheMessage() throws {
        let error = try #require(loadError(["--database-url", "mysql://fabric:hunter2@db/fabric"]))
        #expect(
            error.message
                == "invalid value \"mysql://fabric:****@db/fabric\" for database.url (from flag --database-url): "
                + "expected a URL starting with postgres:// or postgresql://")
    }

    @Test func aURLWithABadPortIsRejectedWithItsPasswordMasked() throws {
        let error = try #require(loadError(env: ["FABRIC_DATABASE_URL": "postgres://fabric:hunter2@db:99999/fabric"]))
        #expect(
            error.message
                == "invalid value \"postgres://fabric:****@db:99999/fabric\" for database.url (from environment "
                + "FABRIC_DATABASE_URL): expected a port from 1 to 65535 after the host")
        #expect(error.problems.map(\.key) == ["database.url"])
        #expect(!error.message.contains("hunter2"))
    }

    @Test(arguments: [
        ("nats.url", "nats://n:4222"), ("nats.url", "nats://n"), ("nats.url", "tls://u:p:w@n:65535"),
        ("nats.url", "nats://[::1]:4222"), ("nats.url", "nats://[::1]"), ("database.url", "postgresql:///fabric"),
        ("database.url", "postgres://a:5432,b,[::1]:5433/db?port=99999"), ("database.url", "postgres://db:1/x#y:0"),
        ("providers.aws.endpoint", "http://127.0.0.1:5000"),
    ])
    func urlsWithGoodOrNoPortsPass(key: String, value: String) throws {
        let d = try #require(SettingsSchema.descriptor(forKey: key))
        let s = try loadSettings(["\(d.flag)=\(value)"])
        #expect(s.nats.url == (key == "nats.url" ? value : ""))
        #expect(s.database.url == (key == "database.url" ? value : ""))
        #expect(s.providers.aws.endpoint == (key == "providers.aws.endpoint" ? value : ""))
    }

    @Test(arguments: [["--server-address"], ["--server-address", "--log-level", "debug"]])
    func missingValueNamesKeyAndFlag(args: [String]) throws {
        let error = try #require(loadError(args))
        #expect(
            error.problems.first?.message
                == "missing value for server.address (from flag --server-address): expected a value (address)")
        #expect(error.problems.first?.code == .missingValue)
    }

    @Test func strayArgumentsAreRejected() throws {
        let error = try #require(loadError(["serve"]))
        #expect(error.message == "unexpected argument \"serve\" (from command line); settings are given as --flags")
        let dash = try #require(loadError(["-v"]))
        #expect(dash.message == "unknown flag \"-v\" (from command line); flags start with --, see --help")
    }

    // MARK: - Unknown names

    @Test func unknownFlagSuggestsTheClosest() throws {
        let error = try #require(loadError(["--server-adress", ":1"]))
        #expect(error.message == "unknown flag \"--server-adress\" (from command line); did you mean --server-address?")
        #expect(error.problems.first?.code == .unknownSetting)
        #expect(error.problems.count == 1)
    }

    @Test func unknownFlagWithNothingCloseHasNoSuggestion() throws {
        let error = try #require(loadError(["--frobnicate"]))
        #expect(error.message == "unknown flag \"--frobnicate\" (from command line)")
    }

    @Test func unknownEnvironmentVariableSuggestsTheClosest() throws {
        let error = try #require(loadError(env: ["FABRIC_SERVER_ADRESS": ":1"]))
        #expect(
            error.message
                == "unknown setting \"FABRIC_SERVER_ADRESS\" (from environment); did you mean FABRIC_SERVER_ADDRESS?")
        #expect(error.problems.first?.source == .environment(name: "FABRIC_SERVER_ADRESS"))
    }

    @Test func configAndTestVariablesAndOtherPrefixesAreNotSettings() throws {
        let env = ["FABRIC_TEST_DATABASE_URL": "postgres://x", "FABRIC_CONFIG": "", "FABRICATE": "1", "HOME": "/"]
        #expect(try loadSettings(env: env) == .default)
    }

    @Test func unknownConfigKeySuggestsTheClosestWithFileAndLine() throws {
        let file = try TempConfig("server:\n  threads: 2\n  adress: \":1\"\n")
        let error = try #require(loadError(["--config", file.path]))
        #expect(
            error.message
                == "unknown setting \"server.adress\" (from config file \(file.path) line 3); "
                + "did you mean server.address?"
        )
        #expect(error.problems.first?.key == "server.adress")
    }

    @Test func unknownConfigSectionSuggestsTheSection() throws {
        let file = try TempConfig("providers:\n  k8:\n    enabled: true\n")
        let error = try #require(loadError(["--config", file.path]))
        #expect(
            error.message
                == "unknown setting \"providers.k8\" (from config file \(file.path) line 2); "
                + "did you mean providers.k8s?"
        )
    }

    // MARK: - Config file

    @Test func yamlSyntaxErrorNamesFileLineAndColumn() throws {
        let file = try TempConfig("server:\n  address: \":8080\"\n  threads: [1, 2\nlog:\n  level: info\n")
        let error = try #require(loadError(["--config", file.path]))
        let problem = try #require(error.problems.first)
        #expect(problem.code == .configFileSyntax)
        #expect(problem.message.hasPrefix("invalid YAML in config file \(file.path) line 4 column 4: "))
        #expect(problem.source == .configFile(path: file.path, line: 4, column: 4))
    }

    @Test func yamlMappingErrorNamesTheLine() throws {
        let file = try TempConfig("log:\n  level: info\n  format: a: b\n")
        let error = try #require(loadError(env: ["FABRIC_CONFIG": file.path]))
        #expect(
            error.message
                == "invalid YAML in config file \(file.path) line 3 column 12: "
                + "mapping values are not allowed in this context"
        )
    }

    @Test func missingConfigFileNamesWhereItsPathCameFrom() throws {
        let flag = try #require(loadError(["--config", "/nonexistent/fabric.yaml"]))
        #expect(
            flag.message
                == "cannot read config file /nonexistent/fabric.yaml (from flag --config): No such file or directory")
        let env = try #require(loadError(env: ["FABRIC_CONFIG": "/nonexistent/fabric.yaml"]))
        #expect(
            env.message
                == "cannot read config file /nonexistent/fabric.yaml (from environment FABRIC_CONFIG): "
                + "No such file or directory"
        )
        let dir = try #require(loadError(["--config", "/tmp"]))
        #expect(dir.message == "cannot read config file /tmp (from flag --config): not a regular file")
    }

    @Test(arguments: ["", "# only a comment\n", "---\n", "providers:\n  k8s:\n"])
    func emptyConfigFilesChangeNothing(yaml: String) throws {
        let file = try TempConfig(yaml)
        #expect(try loadSettings(["--config", file.path]) == .default)
    }

    @Test func dottedKeysWorkInTheConfigFileToo() throws {
        let file = try TempConfig("server.threads: 6\nproviders.k8s:\n  enabled: yes\n")
        let s = try loadSettings(["--config", file.path])
        #expect(s.server.threads == 6)
        #expect(s.providers.k8s.enabled)
    }

    @Test(arguments: [
        ("server: 5\n", "invalid value for server (from config file PATH line 1): expected a map of settings"),
        ("- a\n- b\n", "invalid value for the config file (from config file PATH line 1): expected a map of settings"),
        (
            "server:\n  threads: [1, 2]\n",
            "invalid value for server.threads (from config file PATH line 2): expected a single value, not a list"
        ),
        (
            "server:\n  threads: 1\n  threads: 2\n",
            "duplicate setting \"server.threads\" (from config file PATH line 3); first set on line 2"
        ),
        (
            "node:\n  labels: [a, b]\n",
            "invalid value for node.labels (from config file PATH line 2): expected a map of labels, not a list"
        ),
        (
            "node:\n  labels:\n    a: {b: c}\n",
            "invalid value for node.labels (from config file PATH line 2): nested lists and maps are not allowed here"
        ),
        (
            "a: &x 1\nb: *x\n",
            "invalid YAML in config file PATH line 2 column 4: aliases (*name) are not supported in the config file"
        ),
        (
            "a: 1\n---\nb: 2\n",
            "invalid YAML in config file PATH line 2 column 1: expected one YAML document, found a second"
        ),
    ])
    func malformedConfigFilesAreExplained(yaml: String, expected: String) throws {
        let file = try TempConfig(yaml)
        let error = try #require(loadError(["--config", file.path]))
        #expect(error.message == expected.replacingOccurrences(of: "PATH", with: file.path))
    }

    @Test func everySectionIsReadFromANestedFile() throws {
        let file = try TempConfig(
            """
            # Every setting, nested.
            server:
              address: "127.0.0.1:9999"
              threads: 16
              body_bytes_max: 4Mi
              connections_max: 2048
              client_connections_max: 64
            data:
              dir: /var/lib/fabric
            log:
              level: warn
              format: json
            database:
              url: "postgres://fabric:pw@db:5432/fabric"
              host: db.internal
              port: 6543
              user: weaver
              password: "db-secret"
              database: fabric_prod
              pool_size: 16
            nats:
              url: "nats://nats:4222"
              user: fabric
              password: "nats-secret"
              token: "nats-token"
              tls: true
              tls_ca_file: /etc/fabric/nats-ca.pem
              tls_cert_file: /etc/fabric/nats-cert.pem
              tls_key_file: /etc/fabric/nats-key.pem
            cluster:
              join_token: "join-secret"
              machine_nats_url: "nats://weaver.example.com:4222"
              link_fencing: true
              heartbeat_interval: 500ms
              suspect_after: 3s
              lost_after: 9s
            scheduler:
              retry_interval: 750ms
              offer_unavailable_ttl: 1h
              batch_window: 0s
            node:
              enabled: false
              name: edge-1
              region: eu-west-1
              cpu: "1500m"
              memory: 16Gi
              price_per_hour: 0.75
              labels:
                gpu: h100
                zone: a
              gpu_count: 2
              gpu_model: H100
            runtime:
              stop_grace: 30s
              log_bytes_max: 20Mi
              monitor_path: /usr/local/bin/fabric-monitor
            catalog:
              file: /etc/fabric/catalog.json
            providers:
              k8s:
                enabled: true
                namespace: ml
                kubeconfig: /etc/fabric/kubeconfig
                endpoint: "https://k8s.internal:6443"
              runpod:
                enabled: no
                api_key: "rp-secret"
                endpoint: "http://127.0.0.1:7001"
              coreweave:
                enabled: 0
                kubeconfig: /etc/fabric/cw.yaml
                namespace: tenant-a
                endpoint: "https://cw.internal"
              aws:
                enabled: false
                access_key_id: AKIAEXAMPLE
                secret_access_key: "aws-secret"
                session_token: "aws-session"
                region: eu-central-1
                regions: "us-east-1,us-west-2"
                image_id: ami-0abc
                endpoint: "http://127.0.0.1:5000"
              gcp:
                enabled: false
                project: my-project
                credentials_file: /etc/fabric/gcp.json
                zones: "europe-west4-a,europe-west4-b"
                endpoint: "http://127.0.0.1:7002"

            """)
        let s = try loadSettings(["--config", file.path])
        #expect(s.server.address == Settings.HostPort(host: "127.0.0.1", port: 9999))
        #expect(s.server.threads == 16)
        #expect(s.server.bodyBytesMax == 4 << 20)
        #expect(s.server.connectionsMax == 2048)
        #expect(s.server.clientConnectionsMax == 64)
        #expect(s.data.dir == "/var/lib/fabric")
        #expect(s.log.level == .warn)
        #expect(s.log.format == .json)
        #expect(s.database.url == "postgres://fabric:pw@db:5432/fabric")
        #expect(s.database.host == "db.internal")
        #expect(s.database.port == 6543)
        #expect(s.database.user == "weaver")
        #expect(s.database.password == "db-secret")
        #expect(s.database.database == "fabric_prod")
        #expect(s.database.poolSize == 16)
        #expect(s.database.kind == .postgres)
        #expect(s.nats.url == "nats://nats:4222")
        #expect(s.nats.user == "fabric")
        #expect(s.nats.password.exposedValue == "nats-secret")
        #expect(s.nats.token.exposedValue == "nats-token")
        #expect(s.nats.tls)
        #expect(s.nats.tlsCAFile == "/etc/fabric/nats-ca.pem")
        #expect(s.nats.tlsCertFile == "/etc/fabric/nats-cert.pem")
        #expect(s.nats.tlsKeyFile == "/etc/fabric/nats-key.pem")
        #expect(s.cluster.joinToken.exposedValue == "join-secret")
        #expect(s.cluster.heartbeatInterval == .milliseconds(500))
        #expect(s.cluster.suspectAfter == .seconds(3))
        #expect(s.cluster.lostAfter == .seconds(9))
        #expect(s.clusterTiming.lostAfter == .seconds(9))
        #expect(s.scheduler.retryInterval == .milliseconds(750))
        #expect(s.scheduler.offerUnavailableTTL == .seconds(3600))
        #expect(s.scheduler.batchWindow == .zero)
        #expect(!s.node.enabled)
        #expect(s.node.name == "edge-1")
        #expect(s.node.region == "eu-west-1")
        #expect(s.node.cpuMillis == 1500)
        #expect(s.node.memoryBytes == 16 << 30)
        #expect(s.node.pricePerHour == 0.75)
        #expect(s.node.labels == ["gpu": "h100", "zone": "a"])
        #expect(s.node.gpuCount == 2)
        #expect(s.node.gpuModel == "H100")
        #expect(s.runtime.stopGrace == .seconds(30))
        #expect(s.runtime.logBytesMax == 20 << 20)
        #expect(s.runtime.monitorPath == "/usr/local/bin/fabric-monitor")
        #expect(s.catalog.file == "/etc/fabric/catalog.json")
        #expect(s.providers.k8s.enabled)
        #expect(s.providers.k8s.namespace == "ml")
        #expect(s.providers.k8s.kubeconfig == "/etc/fabric/kubeconfig")
        #expect(s.providers.k8s.endpoint == "https://k8s.internal:6443")
        #expect(!s.providers.runpod.enabled)
        #expect(s.providers.runpod.apiKey.exposedValue == "rp-secret")
        #expect(s.providers.runpod.endpoint == "http://127.0.0.1:7001")
        #expect(!s.providers.coreweave.enabled)
        #expect(s.providers.coreweave.kubeconfig == "/etc/fabric/cw.yaml")
        #expect(s.providers.coreweave.namespace == "tenant-a")
        #expect(s.providers.coreweave.endpoint == "https://cw.internal")
        #expect(!s.providers.aws.enabled)
        #expect(s.providers.aws.accessKeyID == "AKIAEXAMPLE")
        #expect(s.providers.aws.secretAccessKey.exposedValue == "aws-secret")
        #expect(s.providers.aws.region == "eu-central-1")
        #expect(s.providers.aws.endpoint == "http://127.0.0.1:5000")
        #expect(!s.providers.gcp.enabled)
        #expect(s.providers.gcp.project == "my-project")
        #expect(s.providers.gcp.credentialsFile == "/etc/fabric/gcp.json")
        #expect(s.providers.gcp.endpoint == "http://127.0.0.1:7002")
        #expect(s.providers.gcp.zones == "europe-west4-a,europe-west4-b")
        #expect(s.providers.aws.regions == "us-east-1,us-west-2")
        #expect(s.providers.aws.imageID == "ami-0abc")
        #expect(s.providers.aws.sessionToken.exposedValue == "aws-session")
        #expect(s.cluster.machineNATSURL == "nats://weaver.example.com:4222")
        #expect(s.cluster.linkFencing)
        // Every setting was given, and differs from its default.
        for d in SettingsSchema.all {
            #expect(d.value(in: s) != d.value(in: .default), "\(d.key) kept its default")
        }
    }

    // MARK: - Help and version

    @Test(arguments: [["--help"], ["-h"], ["--server-threads", "abc", "--help"], ["--bogus", "-h"]])
    func helpWinsOverEverythingElse(args: [String]) throws {
        guard case .help(let text) = try SettingsLoader.load(arguments: args, environment: ["FABRIC_BAD": "1"]) else {
            Issue.record("expected help")
            return
        }
        #expect(text.hasPrefix("Usage: weaver "))
    }

    @Test func versionPrintsTheVersion() throws {
        #expect(
            try SettingsLoader.load(arguments: ["--version"], environment: [:], version: "1.2.3")
                == .version("weaver 1.2.3"))
    }

    @Test func helpListsEverySettingsFlagEnvironmentTypeAndDefault() throws {
        let text = SettingsHelp.text()
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        for d in SettingsSchema.all {
            let line = try #require(lines.first { $0.hasPrefix("  \(d.flag) <") }, "\(d.key)")
            #expect(line.contains("<\(d.typeName)>"))
            #expect(line.contains(" \(d.environmentName) "))
            let shown = d.isSecret ? "(secret)" : (d.defaultText.isEmpty ? "\"\"" : d.defaultText)
            #expect(line.hasSuffix("default \(shown)"), "\(line)")
            let index = try #require(lines.firstIndex(of: line))
            #expect(
                lines[index + 1] == "      " + d.summary || lines[index + 1].hasPrefix("      " + d.summary + " Also"))
        }
        for section in ["server:", "data:", "log:", "database:", "providers.k8s:", "providers.gcp:", "general:"] {
            #expect(lines.contains(section))
        }
        #expect(text.contains("--config <path>"))
        #expect(text.contains("FABRIC_CONFIG"))
        #expect(text.contains("Also --k8s-enabled."))
        #expect(text.contains("--server-threads <int 1..256>"))
        #expect(lines.allSatisfy { $0.count <= 120 }, "help lines fit 120 columns")
    }

    /// A program that reads some sections (shuttle): the others, and the keys it excludes, are refused as flags,
    /// ignored from the environment, and left out of its help, which shows its own config example.
    @Test func aProgramReadsOnlyItsSectionsLessItsExclusions() throws {
        func load(_ args: [String], _ env: [String: String] = [:]) throws -> SettingsLoadResult {
            try SettingsLoader.load(
                arguments: args, environment: env, programName: "runner", sections: ["node", "log"],
                excluding: ["node.enabled"], configExample: ["node:", "  name: n1"])
        }
        guard case .run(let s) = try load(["--node-name", "n7"], ["FABRIC_NODE_ENABLED": "false"]) else {
            Issue.record("expected settings")
            return
        }
        #expect(s.node.name == "n7")
        #expect(s.node.enabled == true)  // the environment's value for an excluded key is not read
        for flag in ["--node-enabled=false", "--server-threads=2"] {
            do {
                _ = try load([flag])
                Issue.record("accepted \(flag)")
            } catch {
                #expect("\(error)".contains("which runner does not read"), "\(error)")
            }
        }
        guard case .help(let text) = try load(["--help"]) else {
            Issue.record("expected help")
            return
        }
        #expect(text.contains("--node-name") && !text.contains("--node-enabled") && !text.contains("--server-"))
        #expect(text.contains("  node:\n    name: n1\n") && !text.contains("providers:"))
    }

    @Test func helpNeverShowsASecretEvenWhenSet() throws {
        let file = try TempConfig("database:\n  password: file-secret\n")
        let env = [
            "FABRIC_CONFIG": file.path, "FABRIC_PROVIDERS_RUNPOD_API_KEY": "env-secret",
            "FABRIC_PROVIDERS_AWS_SECRET_ACCESS_KEY": "env-aws-secret",
        ]
        let result = try SettingsLoader.load(
            arguments: ["--database-password", "flag-secret", "--help"], environment: env)
        guard case .help(let text) = result else {
            Issue.record("expected help")
            return
        }
        for secret in ["file-secret", "env-secret", "env-aws-secret", "flag-secret"] {
            #expect(!text.contains(secret))
        }
        #expect(
            text.components(separatedBy: "default (secret)").count - 1
                == SettingsSchema.all.filter(\.isSecret).count)
        #expect(SettingsSchema.all.filter(\.isSecret).count == 7)
    }

    // MARK: - Redaction

    @Test func redactedDescriptionHidesSecretsAndURLPasswords() throws {
        let s = try loadSettings(
            [
                "--database-password", "hunter2", "--providers-aws-secret-access-key=aws-s3cret",
                "--database-url", "postgres://fabric:urlpass@db/fabric",
            ], env: ["FABRIC_NODE_LABELS": "gpu=h100"])
        let text = s.redactedDescription()
        let lines = text.split(separator: "\n").map(String.init)
        #expect(lines.count == SettingsSchema.all.count)
        #expect(lines.contains("database.password=****"))
        #expect(lines.contains("providers.aws.secret_access_key=****"))
        #expect(lines.contains("providers.runpod.api_key="))
        #expect(lines.contains("database.url=postgres://fabric:****@db/fabric"))
        #expect(lines.contains("server.address=127.0.0.1:8080"))
        #expect(lines.contains("scheduler.offer_unavailable_ttl=10m"))
        #expect(lines.contains("node.labels=gpu=h100"))
        var dumped = ""
        dump(s, to: &dumped)
        var dumpedPart = ""
        dump(s.database, to: &dumpedPart)
        for rendering in [text, "\(s)", String(reflecting: s), dumped, "\(s.database.password)", dumpedPart] {
            #expect(!rendering.contains("hunter2"))
            #expect(!rendering.contains("aws-s3cret"))
        }
        for rendering in [text, "\(s)", String(reflecting: s), dumped] {
            #expect(!rendering.contains("urlpass"))
        }
        #expect(s.database.password.exposedValue == "hunter2")
    }
}
