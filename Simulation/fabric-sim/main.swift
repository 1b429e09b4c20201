// fabric-sim: the deterministic fleet simulator (`make sim SEED=N`, `make sim-swarm RUNS=N`).
import FabricSimulation
import Foundation

let options: SimOptions
do {
    switch try SimOptions.parse(Array(CommandLine.arguments.dropFirst())) {
    case .help:
        print(SimOptions.usage)
        exit(0)
    case .run(let o): options = o
    }
} catch {
    FileHandle.standardError.write(Data("fabric-sim: \(error.message)\n".utf8))
    exit(2)
}

// The files asked for must be writable before hours of simulation are spent, and must be two files. Each is emptied
// now: what an earlier run left there must not pass for this run's (--service writes no batches).
var outputs: [(flag: String, device: UInt64, inode: UInt64)] = []
for (flag, path) in [("--log", options.logPath), ("--cost-batches", options.costBatchesPath)] {
    guard let path else { continue }
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
    var st = stat()
    guard fd >= 0, fstat(fd, &st) == 0 else {
        let why = String(cString: strerror(errno))
        FileHandle.standardError.write(Data("fabric-sim: \(flag): cannot write \(path): \(why)\n".utf8))
        exit(2)
    }
    close(fd)
    if let other = outputs.first(where: { $0.device == UInt64(st.st_dev) && $0.inode == UInt64(st.st_ino) }) {
        FileHandle.standardError.write(Data("fabric-sim: \(other.flag) and \(flag) name the same file\n".utf8))
        exit(2)
    }
    outputs.append((flag, UInt64(st.st_dev), UInt64(st.st_ino)))
}

if options.service {
    // Dictionary order must not differ between runs: Swift seeds its hashing per process unless told not to.
    if getenv("SWIFT_DETERMINISTIC_HASHING") == nil {
        setenv("SWIFT_DETERMINISTIC_HASHING", "1", 1)
        let args = CommandLine.arguments.map { strdup($0) } + [nil]
        execv("/proc/self/exe", args)
        FileHandle.standardError.write(Data("fabric-sim: cannot re-execute itself: errno \(errno)\n".utf8))
        exit(2)
    }
    exit(runService(options))
}

let sim = Simulation(options: options, keepLog: options.logPath != nil)
if !options.quiet { print("scenario: \(sim.scenario.description)") }
// Wall time is read only to print the speed; nothing in the run depends on it.
let started = ContinuousClock.now
let violation = sim.run()
let wall = ContinuousClock.now - started
let wallSeconds = Double(wall.components.seconds) + Double(wall.components.attoseconds) / 1e18
for line in sim.summary(wallSeconds: wallSeconds) { print(line) }
var written = writeEventLog(sim.logLines, to: options.logPath)
if let path = options.costBatchesPath {
    let text = sim.costBatchLines.map { $0 + "\n" }.joined()
    if let why = writeThrough(path, Data(text.utf8)) {
        FileHandle.standardError.write(Data("fabric-sim: cannot write the cost batches to \(path): \(why)\n".utf8))
        written = false
    }
}
printEnd(violation, hashLine: sim.hashLine, options: options)
exit(violation != nil ? 1 : written ? 0 : 2)

/// `--service`: production's control plane in the loop (`ServiceSimulation`).
func runService(_ options: SimOptions) -> Int32 {
    var serviceOptions = ServiceSimulation.Options(
        seed: options.seed, nodes: options.nodes, duration: options.duration, restartsPerDay: options.restartsPerDay)
    serviceOptions.linkFencing = options.linkFencing
    if let window = options.batchWindow { serviceOptions.batchWindow = window }
    let sim = ServiceSimulation(options: serviceOptions, keepLog: options.logPath != nil)
    if !options.quiet { print("scenario: \(sim.scenario.description) mode=service") }
    let started = ContinuousClock.now
    let violation = sim.run()
    let wall = ContinuousClock.now - started
    let wallSeconds = Double(wall.components.seconds) + Double(wall.components.attoseconds) / 1e18
    for line in sim.summary(wallSeconds: wallSeconds) { print(line) }
    let written = writeEventLog(sim.logLines, to: options.logPath)
    printEnd(violation, hashLine: sim.hashLine, options: options)
    return violation != nil ? 1 : written ? 0 : 2
}

/// Writes the event log's lines to `path` (when asked for with --log); false when that failed.
func writeEventLog(_ lines: [String], to path: String?) -> Bool {
    guard let path else { return true }
    let text = lines.joined(separator: "\n") + "\n"
    if let why = writeThrough(path, Data(text.utf8)) {
        FileHandle.standardError.write(Data("fabric-sim: cannot write the event log to \(path): \(why)\n".utf8))
        return false
    }
    return true
}

/// Writes `data` to the file at `path` (created, or truncated), through the path: a symlink, a pipe or
/// `/dev/stdout` is written to, not replaced. Returns why it failed, or nil.
func writeThrough(_ path: String, _ data: Data) -> String? {
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
    guard fd >= 0 else { return String(cString: strerror(errno)) }
    var failure: String? = nil
    data.withUnsafeBytes { (buffer: UnsafeRawBufferPointer) in
        var offset = 0
        while offset < buffer.count {
            let n = write(fd, buffer.baseAddress! + offset, buffer.count - offset)
            if n < 0 {
                if errno == EINTR { continue }
                failure = String(cString: strerror(errno))
                return
            }
            offset += n
        }
    }
    if close(fd) != 0, failure == nil { failure = String(cString: strerror(errno)) }
    return failure
}

/// The violation, if any, with how to reproduce it, then the hash line (always last).
func printEnd(_ violation: Violation?, hashLine: String, options: SimOptions) {
    if let violation {
        print("VIOLATION \(violation)")
        print("at simulated ms \(violation.at.millisecondsSinceEpoch - 1_800_000_000_000), seed \(options.seed)")
        print("reproduce: \(options.reproduceCommand)")
    }
    print(hashLine)
}
