import FabricCore
import Foundation
import Glibc

/// What this host offers to workloads: CPUs, memory and NVIDIA GPUs.
public enum RuntimeCapacity {
    /// How long `nvidia-smi` may take before it is killed.
    public static let nvidiaSMITimeout: Duration = .seconds(10)
    /// The most bytes of `nvidia-smi` output read.
    public static let nvidiaSMIOutputBytesMax = 64 << 10
    /// Where `nvidia-smi` is looked for when it is not on PATH.
    public static let nvidiaSMIFallbackPaths = ["/usr/bin/nvidia-smi", "/usr/local/nvidia/bin/nvidia-smi"]
    /// Size in bytes of glibc's cpu_set_t (1024 CPUs).
    static let cpuSetBytes = 128

    /// One GPU as `nvidia-smi` reports it.
    public struct DetectedGPU: Sendable, Hashable {
        /// The name as reported, e.g. "NVIDIA H200".
        public var name: String
        /// The canonical model (GPUModel.canonical), e.g. "H200".
        public var model: String
        public var memoryBytes: Int64

        public init(name: String, model: String, memoryBytes: Int64) {
            self.name = name
            self.model = model
            self.memoryBytes = memoryBytes
        }
    }

    /// CPUs (as millicores), total memory and GPUs of this host. With GPUs of several models, `gpu.model` is the
    /// most common one (the first listed on a tie) and `gpu.count` counts only GPUs of that model.
    public static func detect() -> Resources {
        summarize(cpuCount: cpuCount(), memoryBytes: memoryBytes() ?? 0, gpus: detectGPUs())
    }

    /// Builds the capacity from its measured parts (pure).
    public static func summarize(cpuCount: Int, memoryBytes: Int64, gpus: [DetectedGPU]) -> Resources {
        var resources = Resources(cpuMillis: Int64(cpuCount) * 1000, memoryBytes: memoryBytes)
        var counts: [String: Int] = [:]
        for gpu in gpus { counts[gpu.model, default: 0] += 1 }
        var best: (model: String, count: Int)?
        for gpu in gpus where counts[gpu.model]! > (best?.count ?? 0) { best = (gpu.model, counts[gpu.model]!) }
        if let best { resources.gpu = GPUSpec(count: best.count, model: best.model) }
        return resources
    }

    /// CPUs this process may run on (sched_getaffinity), else the online CPUs (sysconf).
    public static func cpuCount() -> Int {
        typealias GetAffinity = @convention(c) (pid_t, Int, UnsafeMutableRawPointer) -> Int32
        if let handle = dlopen(nil, RTLD_NOW), let symbol = dlsym(handle, "sched_getaffinity") {
            let getAffinity = unsafeBitCast(symbol, to: GetAffinity.self)
            var set = [UInt8](repeating: 0, count: cpuSetBytes)
            let rc = set.withUnsafeMutableBytes { getAffinity(0, cpuSetBytes, $0.baseAddress!) }
            if rc == 0 {
                let count = set.reduce(0) { $0 + $1.nonzeroBitCount }
                if count > 0 { return count }
            }
        }
        return max(1, sysconf(Int32(_SC_NPROCESSORS_ONLN)))
    }

    /// Total memory from /proc/meminfo.
    public static func memoryBytes() -> Int64? {
        guard let bytes = Posix.readFile("/proc/meminfo") else { return nil }
        return parseMemTotal(String(decoding: bytes, as: UTF8.self))
    }

    /// The `MemTotal:` line of /proc/meminfo in bytes (pure).
    public static func parseMemTotal(_ meminfo: String) -> Int64? {
        for line in meminfo.split(separator: "\n") where line.hasPrefix("MemTotal:") {
            let parts = line.split(separator: " ")
            guard parts.count >= 2, let kib = Int64(parts[1]) else { return nil }
            return kib * 1024
        }
        return nil
    }

    /// GPUs from `nvidia-smi --query-gpu=name,memory.total --format=csv,noheader`; empty without that binary.
    public static func detectGPUs() -> [DetectedGPU] {
        guard let smi = findNvidiaSMI(),
            let output = runBounded(smi, ["--query-gpu=name,memory.total", "--format=csv,noheader"])
        else { return [] }
        return parseNvidiaSMI(output)
    }

    /// Parses `nvidia-smi --query-gpu=name,memory.total --format=csv,noheader` (pure): one `NAME, N MiB` per line.
    public static func parseNvidiaSMI(_ csv: String) -> [DetectedGPU] {
        csv.split(whereSeparator: \.isNewline).compactMap { line in
            let fields = line.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
            guard fields.count >= 2, !fields[0].isEmpty else { return nil }
            let memory = fields[1].split(separator: " ")
            var bytes: Int64 = 0
            if let value = memory.first.flatMap({ Int64($0) }) {
                switch memory.dropFirst().first?.lowercased() {
                case "kib": bytes = value << 10
                case "gib": bytes = value << 30
                case "b": bytes = value
                default: bytes = value << 20  // nvidia-smi reports MiB
                }
            }
            return DetectedGPU(name: fields[0], model: GPUModel.canonical(fields[0]), memoryBytes: bytes)
        }
    }

    static func findNvidiaSMI() -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? ""
        let candidates = path.split(separator: ":").map { "\($0)/nvidia-smi" } + nvidiaSMIFallbackPaths
        return candidates.first { access($0, X_OK) == 0 }
    }

    /// Runs a program with its output in a temporary file (no pipe to leak into concurrent spawns); kills it after
    /// `nvidiaSMITimeout`. Returns its output when it exited with 0.
    static func runBounded(_ program: String, _ arguments: [String]) -> String? {
        var template = Array((NSTemporaryDirectory() + "/fabric-capacity-XXXXXX").utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard fd >= 0 else { return nil }
        close(fd)
        let outputPath = String(decoding: template.dropLast().map { UInt8(bitPattern: $0) }, as: UTF8.self)
        defer { unlink(outputPath) }
        let env = ProcessInfo.processInfo.environment.map { "\($0.key)=\($0.value)" }
        guard let pid = try? Posix.spawn(program, arguments, environment: env, outputPath: outputPath) else {
            return nil
        }
        let deadline = ContinuousClock.now + nvidiaSMITimeout
        var status: Int32 = 0
        while true {
            let r = waitpid(pid, &status, WNOHANG)
            if r == pid { break }
            if r == -1 && errno != EINTR { return nil }
            if ContinuousClock.now >= deadline {
                kill(pid, SIGKILL)
                while waitpid(pid, &status, 0) == -1 && errno == EINTR {}
                return nil
            }
            usleep(10_000)
        }
        guard status == 0, let bytes = Posix.readFile(outputPath, bytesMax: nvidiaSMIOutputBytesMax) else {
            return nil
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
