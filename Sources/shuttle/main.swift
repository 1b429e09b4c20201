// shuttle: the Fabric node runner. Registers this machine with weaver over NATS, heartbeats, runs the workloads
// weaver assigns under fabric-monitor, and reports every transition.
import FabricActors
import FabricCore
import FabricLog
import Foundation
import Shuttle
import Weaver

/// The settings sections a shuttle reads (a shared config file or environment may hold weaver's too).
let shuttleSections: Set<String> = ["data", "log", "nats", "cluster", "node", "runtime"]
/// weaver's settings within those sections.
let weaverOnlyKeys: Set<String> = ["node.enabled", "cluster.machine_nats_url"]

let settings: Settings
do {
    switch try SettingsLoader.load(
        arguments: Array(CommandLine.arguments.dropFirst()), environment: ProcessInfo.processInfo.environment,
        programName: "shuttle", sections: shuttleSections, excluding: weaverOnlyKeys,
        configExample: ["nats:", "  url: \"nats://127.0.0.1:4222\"", "node:", "  name: n1"])
    {
    case .help(let text):
        print(
            """
            shuttle: the Fabric node runner. It joins weaver over NATS (nats.url) with the cluster's join token,
            offers this machine's CPU, memory and GPUs (detected with nvidia-smi, or node.*), and runs what weaver
            assigns. Workloads live under <data.dir>/nodes/<node.name>; they keep running if shuttle stops, and
            are reported again when it comes back.

            Example: shuttle --nats-url nats://127.0.0.1:4222 --cluster-join-token "$TOKEN" --node-name n1


            """, terminator: "")
        print(text, terminator: "")
        exit(0)
    case .version(let v):
        print(v)
        exit(0)
    case .run(let s):
        settings = s
    }
} catch {
    FileHandle.standardError.write(Data("shuttle: \(error.message)\nRun `shuttle --help` for every setting.\n".utf8))
    exit(SettingsLoader.usageExitCode)
}

func fail(_ message: String, exitCode: Int32 = SettingsLoader.usageExitCode) -> Never {
    FileHandle.standardError.write(Data("shuttle: \(message)\nRun `shuttle --help` for every setting.\n".utf8))
    exit(exitCode)
}

if settings.nats.url.isEmpty { fail("nats.url is required: the NATS server weaver listens on (--nats-url)") }
if let problem = settings.clusterTimingProblem { fail(problem) }
if settings.cluster.joinToken.isEmpty {
    fail("cluster.join_token is required: the token weaver was started with (--cluster-join-token)")
}

signal(SIGPIPE, SIG_IGN)
let logger = Logger(
    component: "shuttle", level: LogLevel(name: settings.log.level.rawValue) ?? .info,
    format: settings.log.format == .json ? .json : .text)

let name = settings.node.name
let nodeDir = ((settings.data.dir as NSString).appendingPathComponent("nodes") as NSString)
    .appendingPathComponent(name)
do {
    try FileManager.default.createDirectory(atPath: nodeDir, withIntermediateDirectories: true)
    try WeaverApp.lockDataDir(nodeDir, holder: "shuttle")
} catch let e as FabricError {
    fail(e.message, exitCode: 1)
} catch {
    fail("cannot create \(nodeDir): \(error.localizedDescription)", exitCode: 1)
}

let config = NodeConfig(
    name: name, region: settings.node.region, cpuMillis: settings.node.cpuMillis,
    memoryBytes: settings.node.memoryBytes, gpuCount: settings.node.gpuCount, gpuModel: settings.node.gpuModel,
    pricePerHour: settings.node.pricePerHour, labels: settings.node.labels, dataDir: nodeDir,
    monitorPath: settings.runtime.monitorPath.isEmpty ? nil : settings.runtime.monitorPath,
    logBytesMax: settings.runtime.logBytesMax, fenced: true, stopGrace: settings.runtime.stopGrace)
let agent = config.makeAgent(now: SystemWallClock().now(), logger: logger.with(component: "node"))
let info = agent.info
logger.info(
    "starting shuttle \(WeaverApp.version)",
    [
        "node": name, "region": info.region, "cpu": Quantity.formatCPU(info.capacity.cpuMillis),
        "memory": Quantity.formatMemory(info.capacity.memoryBytes), "gpus": info.capacity.gpuCount,
        "gpuModel": info.capacity.gpu?.model ?? "", "price": info.pricePerHour, "dataDir": nodeDir,
    ])

// Connect once plainly, so that a refusal (credentials, TLS) is a clear error at once; when no server answers
// yet (NATS starting, or down), keep trying in the background: the runner registers once it is up.
let natsOptions = settings.natsClientOptions(name: "shuttle-\(name)")
let actorsLogger = logger.with(component: "actors")
var connected: NATSActorSystem?
do {
    connected = try await NATSActorSystem.connect(node: name, options: natsOptions, logger: actorsLogger)
} catch {
    let detail = (error as? FabricError)?.message ?? "\(error)"
    let refusal = ["Authorization", "Authentication", "authorization", "TLS", "SSL", "certificate", "handshake"]
    if refusal.contains(where: { detail.contains($0) }) {
        fail(
            "NATS at \(settings.nats.url) refused this shuttle: \(detail) (check nats.user/password/token/tls_*)",
            exitCode: 1)
    }
    logger.warn("NATS is not reachable yet; retrying in the background", ["url": settings.nats.url, "error": detail])
}
let system: NATSActorSystem
if let connected {
    system = connected
} else {
    var retrying = natsOptions
    retrying.retryOnFailedConnect = true
    do {
        system = try await NATSActorSystem.connect(node: name, options: retrying, logger: actorsLogger)
    } catch {
        let detail = (error as? FabricError)?.message ?? "\(error)"
        fail("cannot connect to nats.url \(settings.nats.url): \(detail)", exitCode: 1)
    }
}

let host: NodeHost
do {
    var runnerOptions = ShuttleRunner.Options(
        joinToken: settings.cluster.joinToken.exposedValue,
        session: SeededIDGenerator(seed: UInt64.random(in: 0...UInt64.max)).next(prefix: "session"),
        version: WeaverApp.version, heartbeatInterval: settings.cluster.heartbeatInterval)
    if settings.cluster.linkFencing, let connection = system.connection {
        runnerOptions.linkUp = { connection.isConnected }
    }
    host = try NodeHost(agent: agent, system: system, options: runnerOptions, logger: logger)
} catch {
    fail("cannot serve node \(name): \((error as? FabricError)?.message ?? "\(error)")", exitCode: 1)
}

// Runs until a signal, or until weaver refuses this node (a wrong join token cannot be fixed by retrying).
let signalled = Task {
    await WeaverApp.waitForTerminationSignal()
    logger.info("shutting down; running workloads keep running and are reported at the next start")
    await host.stop()
    await system.shutdown()
    logger.info("stopped")
    exit(0)
}
do {
    try await host.wait()
    await signalled.value  // the runner ended because a signal stopped it: let the shutdown finish
} catch let e as FabricError where e.code == .permissionDenied {
    logger.error("shuttle stopped: weaver refused this node", ["reason": e.message])
    await system.shutdown()
    exit(3)
} catch {
    logger.error("shuttle stopped", ["error": error])
    await system.shutdown()
    exit(1)
}
