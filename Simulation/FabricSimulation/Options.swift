import Weaver

/// The schedulers a run can place with: the production one, its brute-force reference, and two deliberately
/// broken variants the invariants must catch.
public enum SchedulerVariant: String, Sendable, CaseIterable {
    /// `PlacementIndex`, what weaver places with.
    case index
    /// `PlacementStack.select` over the whole snapshot for every decision (slow, the reference).
    case reference
    /// Broken on purpose: GPU count is checked but the GPU model is ignored.
    case brokenGPUType = "broken-gpu-type"
    /// Broken on purpose: a node that joins (a new machine with its reserved workload) or comes back from suspect
    /// or lost is re-added with nothing allocated, forgetting the work held there (double booking).
    case brokenDoubleBook = "broken-double-book"
}

/// `fabric-sim`'s command line, parsed by hand (the toolchain has no argument parser).
public struct SimOptions: Sendable, Equatable {
    /// Bounds on what a command line may ask for.
    public static let nodesMax = 20_000
    public static let durationMax: Duration = .seconds(7 * 86_400)
    public static let durationMin: Duration = .seconds(60)
    /// What `--service` allows (production's full stack per node).
    public static let serviceNodes = 5...500
    public static let serviceDurationMax: Duration = .seconds(6 * 3600)

    public var seed: UInt64
    /// Overrides the fleet size the seed picks.
    public var nodes: Int? = nil
    /// Overrides the fault phase's length the seed picks.
    public var duration: Duration? = nil
    public var scheduler: SchedulerVariant = .index
    /// Prints only the summary and the hash, not progress.
    public var quiet = false
    /// Writes every event-log line to this file too.
    public var logPath: String? = nil
    /// Plans the workloads that need new machines together (`BatchPlanner`), once per scheduling pass; off gives
    /// each its own machine at once.
    public var batch = true
    /// Writes each batch as a JSON line for `scripts/cost-bound` (the lower bound).
    public var costBatchesPath: String? = nil
    /// Overrides the controller-restart rate the seed picks (restarts per simulated day, fault phase only).
    public var restartsPerDay: Double? = nil
    /// Runs production's control plane (WorkloadService, actors, node agents) on the deterministic executor instead
    /// of the simulator's controller (`ServiceSimulation`; smaller fleets, see --help).
    public var service = false
    /// `--service` only: whether shuttles fence their workloads when their link stays down (`cluster.link_fencing`).
    /// Off shows what the invariants catch without it: a partitioned node's work running twice.
    public var linkFencing = true
    /// `--service` only: weaver's `scheduler.batch_window` (how long workloads needing a new machine wait to share);
    /// nil is weaver's default.
    public var batchWindow: Duration? = nil

    public init(seed: UInt64, nodes: Int? = nil, duration: Duration? = nil, scheduler: SchedulerVariant = .index) {
        self.seed = seed
        self.nodes = nodes
        self.duration = duration
        self.scheduler = scheduler
    }

    public static let usage = """
        usage: fabric-sim --seed N [--nodes N] [--duration 1d|6h|30m|90s] [--scheduler VARIANT] [--batch on|off]
                          [--restarts-per-day R] [--cost-batches FILE] [--log FILE] [--service]
                          [--link-fencing on|off] [--batch-window 2s|0s] [--quiet] [--help]

        Runs the deterministic fleet simulation: the seed picks the fleet (10 to 10,000 nodes from the bundled
        catalog), the workload mix, arrivals and fault rates. A fault phase of --duration is followed by a
        liveness phase without faults in which everything must converge. Invariants are checked after every
        event; a violation prints `reproduce: make sim SEED=N` and exits with status 1. The last line is
        `event-log sha256=<hex>`: the same seed always gives the same hash.

          --seed N          the seed (required), 0 to 2^64-1
          --nodes N         fleet size, 1 to \(nodesMax) (default: drawn from the seed)
          --duration D      fault phase length, 1m to 7d, e.g. 90s, 30m, 6h, 1h30m, 1d (default: drawn from the seed)
          --scheduler V     index (default), reference (brute force), broken-gpu-type, broken-double-book
                            (not with --service, where weaver's own scheduler places)
          --batch on|off    on (default): workloads that need new machines are planned together once per
                            scheduling pass (BatchPlanner, several may share a machine); off: one machine each, at once
                            (not with --service: see --batch-window)
          --restarts-per-day R
                            controller restarts per simulated day in the fault phase (default: drawn from the seed)
          --cost-batches FILE
                            write every batch as a JSON line for scripts/cost-bound (the lower bound; with
                            --service the file is left empty)
          --log FILE        also write the event log to FILE
          --service         run weaver's own control plane instead of the simulator's controller: WorkloadService,
                            the ControlPlane/ShuttleNode actors, NodeAgent and ShuttleRunner, unchanged, on a
                            deterministic executor, with a virtual clock, an in-memory store, a faulty loopback
                            network, simulated clouds and container runtimes (5 to 500 nodes, fault phase at most 6h;
                            default 5 to 60 nodes and 1 to 3 hours drawn from the seed)
          --link-fencing on|off
                            with --service: shuttles stop their work when their link stays down (on, default);
                            off shows the invariants catching a partitioned node's work running twice
          --batch-window D  with --service: weaver's scheduler.batch_window (default 2s; 0s plans what one
                            scheduling pass judged), to compare machines and dollars billed
          --quiet           print only the summary and the hash
          --help            this text
        """

    /// What parsing returns: options to run with, or a request for the usage text.
    public enum Parsed: Equatable, Sendable {
        case run(SimOptions)
        case help
    }

    /// Parses the arguments after the program name.
    public static func parse(_ args: [String]) throws(SimError) -> Parsed {
        var seed: UInt64? = nil
        var o = SimOptions(seed: 0)
        var i = 0
        func value(_ name: String) throws(SimError) -> String {
            i += 1
            guard i < args.count, !args[i].hasPrefix("--") else { throw SimError(.usage, "\(name) needs a value") }
            return args[i]
        }
        while i < args.count {
            let a = args[i]
            switch a {
            case "--seed":
                let v = try value(a)
                guard let s = UInt64(v) else {
                    throw SimError(.usage, "--seed takes a whole number from 0 to 2^64-1, got \"\(v)\"")
                }
                seed = s
            case "--nodes":
                let v = try value(a)
                guard let n = Int(v), (1...nodesMax).contains(n) else {
                    throw SimError(.usage, "--nodes takes a whole number from 1 to \(nodesMax), got \"\(v)\"")
                }
                o.nodes = n
            case "--duration":
                let v = try value(a)
                guard let d = parseDuration(v) else {
                    throw SimError(
                        .usage,
                        "--duration takes numbers with units (ms, s, m, h, d), e.g. 6h, 1d or 1h30m, got \"\(v)\"")
                }
                guard d >= durationMin, d <= durationMax else {
                    throw SimError(.usage, "--duration must be from 1m to 7d, got \"\(v)\"")
                }
                o.duration = d
            case "--scheduler":
                let v = try value(a)
                guard let s = SchedulerVariant(rawValue: v) else {
                    let names = SchedulerVariant.allCases.map(\.rawValue).joined(separator: ", ")
                    throw SimError(.usage, "--scheduler takes one of \(names), got \"\(v)\"")
                }
                o.scheduler = s
            case "--batch":
                let v = try value(a)
                guard v == "on" || v == "off" else { throw SimError(.usage, "--batch takes on or off, got \"\(v)\"") }
                o.batch = v == "on"
            case "--restarts-per-day":
                let v = try value(a)
                guard let r = Double(v), r >= 0, r <= 10_000 else {
                    throw SimError(.usage, "--restarts-per-day takes a number from 0 to 10000, got \"\(v)\"")
                }
                o.restartsPerDay = r
            case "--cost-batches": o.costBatchesPath = try value(a)
            case "--log": o.logPath = try value(a)
            case "--service": o.service = true
            case "--link-fencing":
                let v = try value(a)
                guard v == "on" || v == "off" else {
                    throw SimError(.usage, "--link-fencing takes on or off, got \"\(v)\"")
                }
                o.linkFencing = v == "on"
            case "--batch-window":
                let v = try value(a)
                guard let d = DurationText.parse(v), d >= .zero, d <= .seconds(300) else {
                    throw SimError(.usage, "--batch-window takes 0s to 300s (e.g. 2s, 500ms, 1m), got \"\(v)\"")
                }
                o.batchWindow = d
            case "--quiet", "-q": o.quiet = true
            case "--help", "-h": return .help
            default: throw SimError(.usage, "unknown option \"\(a)\" (see --help)")
            }
            i += 1
        }
        guard let seed else { throw SimError(.usage, "--seed N is required (see --help)") }
        o.seed = seed
        if o.service {
            if let n = o.nodes, !(serviceNodes).contains(n) {
                throw SimError(
                    .usage,
                    "--nodes with --service takes \(serviceNodes.lowerBound) to \(serviceNodes.upperBound), got \(n)")
            }
            if let d = o.duration, d > serviceDurationMax {
                throw SimError(.usage, "--duration with --service is at most 6h, got \(d.components.seconds)s")
            }
            // Weaver's own scheduler places, and it plans machines by scheduler.batch_window: these choose the
            // simulator's controller, which does not run here (--cost-batches is left empty: no batches of its own).
            if o.scheduler != .index { throw SimError(.usage, "--scheduler applies only without --service") }
            if !o.batch { throw SimError(.usage, "--batch applies only without --service (see --batch-window)") }
        } else if !o.linkFencing {
            throw SimError(.usage, "--link-fencing applies only with --service")
        } else if o.batchWindow != nil {
            throw SimError(.usage, "--batch-window applies only with --service")
        }
        if let log = o.logPath, log == o.costBatchesPath {
            throw SimError(.usage, "--log and --cost-batches name the same file \"\(log)\"")
        }
        return .run(o)
    }

    /// Weaver's duration syntax (`90s`, `30m`, `6h`, `1h30m`, `500ms`) or whole days (`1d`, `7d`).
    public static func parseDuration(_ text: String) -> Duration? {
        if text.hasSuffix("d"), let days = Int64(text.dropLast()), days >= 0, days <= 1_000 {
            return .seconds(days * 86_400)
        }
        return DurationText.parse(text)
    }
}

/// An error of the simulator, with a code and a message a person reads.
public struct SimError: Error, Equatable, CustomStringConvertible {
    public enum Code: String, Sendable { case usage }
    public var code: Code
    public var message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }
}

extension SimOptions {
    /// The command that runs this exact simulation again.
    public var reproduceCommand: String {
        var extra: [String] = []
        if let nodes { extra.append("--nodes \(nodes)") }
        if let duration { extra.append("--duration \(DurationText.format(duration))") }
        if scheduler != .index { extra.append("--scheduler \(scheduler.rawValue)") }
        if !batch { extra.append("--batch off") }
        if let restartsPerDay { extra.append("--restarts-per-day \(restartsPerDay)") }
        if service { extra.append("--service") }
        if !linkFencing { extra.append("--link-fencing off") }
        if let batchWindow { extra.append("--batch-window \(DurationText.format(batchWindow))") }
        return "make sim SEED=\(seed)" + (extra.isEmpty ? "" : " SIM_ARGS=\"\(extra.joined(separator: " "))\"")
    }
}
