// Command line of fabric-monitor.
import Glibc

/// The smallest accepted `--log-bytes-max`.
let logBytesMaxMin = 1024
/// The usage line, printed on a bad command line.
let usage = """
    usage: fabric-monitor --dir DIR --log-bytes-max N [--cgroup-memory-bytes B] [--cgroup-cpu-millis M] \
    [--cgroup-name NAME] [--workdir W] [--lease-file F --lease-timeout-ms T --fence-grace-ms G] -- program args...
    """

/// What the monitor was asked to do.
struct Options {
    /// Absolute path of the attempt's folder (state.json, exit.json, monitor.log, output.log).
    var dir: String
    var logBytesMax: Int
    var memoryBytes: Int64?
    var cpuMillis: Int64?
    var cgroupName: String?
    var workdir: String?
    /// The node's lease file: when its monotonic-ms stamp is older than `leaseTimeoutMillis`, the workload is
    /// fenced (SIGTERM to its group, SIGKILL `fenceGraceMillis` later).
    var leaseFile: String?
    var leaseTimeoutMillis: Int64 = 0
    var fenceGraceMillis: Int64 = 0
    var program: [String]

    /// Parses `arguments` (without the program name); the error text on a bad command line.
    static func parse(_ arguments: [String]) -> Result<Options, UsageError> {
        var dir: String?
        var logBytesMax: Int?
        var options = Options(dir: "", logBytesMax: 0, program: [])
        var rest = arguments[...]
        while let flag = rest.popFirst() {
            if flag == "--" {
                options.program = Array(rest)
                break
            }
            guard let value = rest.popFirst() else { return .failure(UsageError("\(flag) needs a value")) }
            switch flag {
            case "--dir": dir = value
            case "--log-bytes-max": logBytesMax = Int(value)
            case "--cgroup-memory-bytes":
                guard let v = Int64(value), v > 0 else { return .failure(UsageError("bad \(flag) \(value)")) }
                options.memoryBytes = v
            case "--cgroup-cpu-millis":
                guard let v = Int64(value), v > 0 else { return .failure(UsageError("bad \(flag) \(value)")) }
                options.cpuMillis = v
            case "--cgroup-name":
                guard isValidCgroupName(value) else { return .failure(UsageError("bad \(flag) \(value)")) }
                options.cgroupName = value
            case "--workdir": options.workdir = value
            case "--lease-file": options.leaseFile = value
            case "--lease-timeout-ms":
                guard let v = Int64(value), v > 0 else { return .failure(UsageError("bad \(flag) \(value)")) }
                options.leaseTimeoutMillis = v
            case "--fence-grace-ms":
                guard let v = Int64(value), v >= 0 else { return .failure(UsageError("bad \(flag) \(value)")) }
                options.fenceGraceMillis = v
            default: return .failure(UsageError("unknown flag \(flag)"))
            }
        }
        guard let dir, !dir.isEmpty else { return .failure(UsageError("--dir is required")) }
        guard let logBytesMax, logBytesMax >= logBytesMaxMin else {
            return .failure(UsageError("--log-bytes-max is required and at least \(logBytesMaxMin)"))
        }
        if options.leaseFile != nil && options.leaseTimeoutMillis == 0 {
            return .failure(UsageError("--lease-file needs --lease-timeout-ms"))
        }
        guard let first = options.program.first, !first.isEmpty else {
            return .failure(UsageError("no program after --"))
        }
        options.dir = absolute(dir)
        options.leaseFile = options.leaseFile.map(absolute)
        options.logBytesMax = logBytesMax
        return .success(options)
    }

    /// `path` made absolute against the current directory (the monitor changes directory before spawning).
    static func absolute(_ path: String) -> String {
        if path.hasPrefix("/") { return path }
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        guard getcwd(&buffer, buffer.count) != nil else { return path }
        let cwd = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return (cwd == "/" ? "" : cwd) + "/" + path
    }
}

/// A bad command line.
struct UsageError: Error {
    var message: String
    init(_ message: String) { self.message = message }
}
