// The typed settings of weaver. Each field is bound to one key in `SettingsSchema.all`, which derives its flag,
// environment variable, YAML path and help line; the defaults below are the only place defaults are written.

/// Everything weaver can be configured with. `Settings.default` holds the defaults; `SettingsLoader` overlays the
/// config file, the environment and the flags.
public struct Settings: Sendable, Equatable {
    public var server = Server()
    public var data = DataStorage()
    public var log = Log()
    public var database = Database()
    public var nats = NATS()
    public var cluster = Cluster()
    public var scheduler = Scheduler()
    public var node = Node()
    public var runtime = Runtime()
    public var catalog = Catalog()
    public var providers = Providers()

    /// The settings weaver runs with when nothing is configured.
    public static let `default` = Settings()

    public init() {}

    /// The HTTP API server.
    public struct Server: Sendable, Equatable {
        /// Where the API listens (`server.address`).
        public var address = HostPort(host: "127.0.0.1", port: 8080)
        /// Threads that serve requests (`server.threads`).
        public var threads = 4
        /// The largest request body accepted (`server.body_bytes_max`).
        public var bodyBytesMax = 1 << 20
        /// Open connections at most (`server.connections_max`).
        public var connectionsMax = 1024
        /// Open connections from one client address at most, 0 for no limit (`server.client_connections_max`).
        public var clientConnectionsMax = 256
    }

    /// Where state lives on disk.
    public struct DataStorage: Sendable, Equatable {
        /// The folder for the SQLite file and workload logs (`data.dir`).
        public var dir = ".fabric"
    }

    /// Logging.
    public struct Log: Sendable, Equatable {
        public var level = LogLevel.info
        public var format = LogFormat.text
    }

    /// The state store: SQLite under `data.dir` unless a PostgreSQL URL or host is given.
    public struct Database: Sendable, Equatable {
        /// A `postgres://` or `postgresql://` URL; wins over host/port/user/password/database when set.
        public var url = ""
        public var host = ""
        public var port = 5432
        public var user = "fabric"
        public var password: Secret = ""
        public var database = "fabric"
        /// Connections in the PostgreSQL pool (`database.pool_size`).
        public var poolSize = 4

        /// PostgreSQL when a URL or host is set, else the embedded SQLite store.
        public var kind: DatabaseKind { url.isEmpty && host.isEmpty ? .sqlite : .postgres }
    }

    /// The NATS server that carries events and node calls; empty URL means one process (in-process actors).
    public struct NATS: Sendable, Equatable {
        public var url = ""
        /// User and password, when the server requires them (`nats.user`, `nats.password`).
        public var user = ""
        public var password: Secret = ""
        /// Token, when the server requires one (`nats.token`); used when no user is set.
        public var token: Secret = ""
        /// TLS: on when `tls` is set, the URL is `tls://`, or any file below is named.
        public var tls = false
        public var tlsCAFile = ""
        public var tlsCertFile = ""
        public var tlsKeyFile = ""
    }

    /// How nodes join weaver and how long they may stay silent.
    public struct Cluster: Sendable, Equatable {
        /// The secret every shuttle presents to join (`cluster.join_token`); required with `nats.url`.
        public var joinToken: Secret = ""
        /// How often nodes heartbeat (`cluster.heartbeat_interval`).
        public var heartbeatInterval: Duration = .seconds(2)
        /// Silence after which a node gets no new work (`cluster.suspect_after`).
        public var suspectAfter: Duration = .seconds(6)
        /// Silence after which a node is lost and its workloads are rescheduled (`cluster.lost_after`).
        public var lostAfter: Duration = .seconds(15)
        /// The NATS URL new cloud machines join with (`cluster.machine_nats_url`); empty means `nats.url`.
        public var machineNATSURL = ""
        /// Whether a shuttle stops its workloads when its own NATS link stays down for `lostAfter / 2`
        /// (`cluster.link_fencing`): then nothing runs twice when a partition cuts one node off, at the price of
        /// stopping everything during a NATS outage that long. Off by default.
        public var linkFencing = false
    }

    /// The placement loop.
    public struct Scheduler: Sendable, Equatable {
        /// How long a workload waits before placement is retried (`scheduler.retry_interval`).
        public var retryInterval: Duration = .seconds(2)
        /// How long an offer that failed to launch stays out of placement (`scheduler.offer_unavailable_ttl`).
        public var offerUnavailableTTL: Duration = .seconds(10 * 60)
        /// How long workloads that need a new machine wait for others to share one with (`scheduler.batch_window`).
        public var batchWindow: Duration = .seconds(2)
    }

    /// The node embedded in weaver.
    public struct Node: Sendable, Equatable {
        /// Whether weaver runs an embedded local node.
        public var enabled = true
        public var name = "local"
        public var region = "local"
        /// CPU offered in millicores; nil means detect (`node.cpu`).
        public var cpuMillis: Int64? = nil
        /// Memory offered in bytes; nil means detect (`node.memory`).
        public var memoryBytes: Int64? = nil
        public var pricePerHour = 0.0
        public var labels: [String: String] = [:]
        /// GPUs offered; nil means detect with nvidia-smi (`node.gpu_count`).
        public var gpuCount: Int? = nil
        /// GPU model offered (H100, A100); empty means the detected one (`node.gpu_model`).
        public var gpuModel = ""
    }

    /// Running workloads on the local node.
    public struct Runtime: Sendable, Equatable {
        /// How long a stopping workload gets between SIGTERM and SIGKILL (`runtime.stop_grace`).
        public var stopGrace: Duration = .seconds(10)
        /// Workload log bytes kept per workload (`runtime.log_bytes_max`).
        public var logBytesMax = 10 << 20
        /// Path of the fabric-monitor binary; empty means next to the weaver binary.
        public var monitorPath = ""
    }

    /// The offer catalog.
    public struct Catalog: Sendable, Equatable {
        /// A catalog file to use instead of the bundled one; empty means the bundled catalog.
        public var file = ""
    }

    /// The cloud providers weaver may place workloads on.
    public struct Providers: Sendable, Equatable {
        public var k8s = K8s()
        public var runpod = RunPod()
        public var coreweave = CoreWeave()
        public var aws = AWS()
        public var gcp = GCP()
    }

    /// A Kubernetes cluster reached through a kubeconfig.
    public struct K8s: Sendable, Equatable {
        public var enabled = false
        public var namespace = "default"
        public var kubeconfig = ""
        public var endpoint = ""
    }

    /// RunPod.
    public struct RunPod: Sendable, Equatable {
        public var enabled = true
        public var apiKey: Secret = ""
        public var endpoint = ""
    }

    /// CoreWeave (Kubernetes).
    public struct CoreWeave: Sendable, Equatable {
        public var enabled = true
        public var kubeconfig = ""
        public var namespace = "default"
        public var endpoint = ""
    }

    /// Amazon EC2.
    public struct AWS: Sendable, Equatable {
        public var enabled = true
        public var accessKeyID = ""
        public var secretAccessKey: Secret = ""
        public var sessionToken: Secret = ""
        public var region = "us-east-1"
        /// More regions to provision in, comma-separated, besides `region`.
        public var regions = ""
        /// The machine image new instances boot (it starts shuttle from the user data).
        public var imageID = ""
        public var endpoint = ""
    }

    /// Google Compute Engine.
    public struct GCP: Sendable, Equatable {
        public var enabled = true
        public var project = ""
        public var credentialsFile = ""
        /// Zones to provision in, comma-separated (a capacity error in one tries the next of its region).
        public var zones = "us-central1-a"
        public var endpoint = ""
    }

    /// Which state store `database` selects.
    public enum DatabaseKind: String, Sendable, Equatable {
        case sqlite, postgres
    }

    /// How much weaver logs.
    public enum LogLevel: String, Sendable, Equatable, CaseIterable {
        case debug, info, warn, error
    }

    /// How log lines are written.
    public enum LogFormat: String, Sendable, Equatable, CaseIterable {
        case text, json
    }

    /// A `host:port` to listen on or dial; an empty host means every interface.
    public struct HostPort: Sendable, Hashable, CustomStringConvertible {
        public var host: String
        public var port: Int

        public init(host: String, port: Int) {
            self.host = host
            self.port = port
        }

        /// `host:port`, with IPv6 hosts in brackets: `:8080`, `127.0.0.1:80`, `[::1]:8080`.
        public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
    }

    /// A credential that never prints: `description`, `debugDescription` and reflection show `****` (or nothing
    /// when empty). Read it with `exposedValue` where it is sent, and nowhere else.
    public struct Secret: Sendable, Hashable, ExpressibleByStringLiteral, CustomStringConvertible,
        CustomDebugStringConvertible, CustomReflectable
    {
        /// The credential itself.
        public let exposedValue: String

        public init(_ value: String) { exposedValue = value }
        public init(stringLiteral value: String) { exposedValue = value }

        /// Whether no credential is set.
        public var isEmpty: Bool { exposedValue.isEmpty }

        /// `****` when set, empty when not.
        public var description: String { isEmpty ? "" : Self.mask }
        public var debugDescription: String { isEmpty ? "Secret(unset)" : "Secret(\(Self.mask))" }
        public var customMirror: Mirror { Mirror(self, children: [(label: String?, value: Any)]()) }

        /// What stands in for a set secret.
        public static let mask = "****"
    }
}

extension Settings: CustomStringConvertible, CustomReflectable {
    /// `key=value` lines, one per setting in schema order, with secrets (and passwords inside URLs) as `****`:
    /// safe for the startup log.
    public func redactedDescription() -> String {
        SettingsSchema.all.map { "\($0.key)=\($0.redactedValue(in: self))" }.joined(separator: "\n")
    }

    public var description: String { redactedDescription() }

    /// Reflection (`dump`) shows the redacted values too, never the fields themselves.
    public var customMirror: Mirror {
        Mirror(self, children: SettingsSchema.all.map { (label: $0.key, value: $0.redactedValue(in: self) as Any) })
    }
}
