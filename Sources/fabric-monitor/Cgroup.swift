// cgroup v1 limits for one workload: the monitor moves itself in before spawning, so the workload inherits them.
import Glibc

/// Where cgroup v1 controllers are mounted.
let cgroupMountRoot = "/sys/fs/cgroup"
/// The folder, under the monitor's own cgroup, that holds one cgroup per workload attempt.
let cgroupFabricFolder = "fabric"
/// CFS period for CPU limits; quota = millicores * period / 1000.
let cpuPeriodMicros: Int64 = 100_000
/// The kernel's smallest accepted CFS quota.
let cpuQuotaMicrosMin: Int64 = 1000
/// How often creating `fabric/<name>` is tried when a concurrent cleanup removes `fabric` in between.
let cgroupCreateAttempts = 3
/// Longest cgroup name accepted (one path component).
let cgroupNameLengthMax = 200

/// One controller's cgroup for this workload, created by the monitor and removed when the workload has ended.
struct ControllerGroup {
    var controller: String
    /// The cgroup the monitor came from, to move back into before removing `path`.
    var parent: String
    var path: String
}

/// Whether `name` is safe as one cgroup path component.
func isValidCgroupName(_ name: String) -> Bool {
    guard !name.isEmpty, name.utf8.count <= cgroupNameLengthMax, name.first != "." else { return false }
    return name.utf8.allSatisfy { c in
        (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a) || c == 0x2d || c == 0x2e
            || c == 0x5f
    }
}

/// The monitor's current cgroup path for a v1 controller, from /proc/self/cgroup ("4:memory:/a/b" -> "/a/b").
func ownCgroupPath(controller: String) -> String? {
    guard let bytes = readFile("/proc/self/cgroup", bytesMax: 64 << 10) else { return nil }
    for line in bytes.split(separator: UInt8(ascii: "\n")) {
        let parts = line.split(separator: UInt8(ascii: ":"), maxSplits: 2, omittingEmptySubsequences: false)
        guard parts.count == 3 else { continue }
        let controllers = parts[1].split(separator: UInt8(ascii: ",")).map { String(decoding: $0, as: UTF8.self) }
        if controllers.contains(controller) { return String(decoding: parts[2], as: UTF8.self) }
    }
    return nil
}

/// Creates `<mount>/<controller>/<own cgroup>/fabric/<name>`, writes `knobs` in order and moves the monitor in.
/// Returns nil (after noting why and undoing what it made) when the hierarchy is missing or not writable.
func enterCgroup(controller: String, name: String, knobs: [(String, String)], log: MonitorLog) -> ControllerGroup? {
    let mount = "\(cgroupMountRoot)/\(controller)"
    var st = stat()
    guard stat(mount, &st) == 0, st.st_mode & S_IFMT == S_IFDIR else {
        log.note("cgroup \(controller): \(mount) is not mounted; running without a \(controller) limit")
        return nil
    }
    let own = ownCgroupPath(controller: controller) ?? "/"
    let parent = own == "/" ? mount : mount + own
    let fabric = parent + "/" + cgroupFabricFolder
    let path = fabric + "/" + name
    // Another monitor may remove an empty `fabric` folder between our two mkdirs: then create it again.
    var created = false
    for _ in 0..<cgroupCreateAttempts {
        if mkdir(fabric, 0o755) != 0 && errno != EEXIST { break }
        if mkdir(path, 0o755) == 0 || errno == EEXIST {
            created = true
            break
        }
        if errno != ENOENT { break }
    }
    guard created else {
        log.note("cgroup \(controller): cannot create \(path): \(errnoText(errno)); running without a limit")
        return nil
    }
    var group = ControllerGroup(controller: controller, parent: parent, path: path)
    for (knob, value) in knobs {
        if let error = writeKnob(path + "/" + knob, value) {
            // memsw exists only with swap accounting; everything else is required.
            if knob.hasPrefix("memory.memsw.") { continue }
            log.note(
                "cgroup \(controller): cannot write \(knob)=\(value): \(errnoText(error)); running without a limit")
            leaveCgroup(&group, log: log)
            return nil
        }
    }
    if let error = writeKnob(path + "/cgroup.procs", String(getpid())) {
        log.note("cgroup \(controller): cannot move into \(path): \(errnoText(error)); running without a limit")
        leaveCgroup(&group, log: log)
        return nil
    }
    log.note("cgroup \(controller): entered \(path) " + knobs.map { "\($0.0)=\($0.1)" }.joined(separator: " "))
    return group
}

/// Moves the monitor back to where it came from and removes the workload's cgroup.
func leaveCgroup(_ group: inout ControllerGroup, log: MonitorLog) {
    killCgroupMembers(group, log: log)
    _ = writeKnob(group.parent + "/cgroup.procs", String(getpid()))
    if rmdir(group.path) != 0 && errno != ENOENT {
        log.note("cgroup \(group.controller): cannot remove \(group.path): \(errnoText(errno))")
        return
    }
    // Remove the shared `fabric` folder too when this was its last workload (EBUSY otherwise), so that no empty
    // cgroup is left behind to block the removal of the cgroup the monitor was started in.
    _ = rmdir(group.parent + "/" + cgroupFabricFolder)
}

/// The knobs for a memory limit: the limit itself, then (where swap accounting exists) the same for memory+swap.
func memoryKnobs(bytes: Int64) -> [(String, String)] {
    [("memory.limit_in_bytes", String(bytes)), ("memory.memsw.limit_in_bytes", String(bytes))]
}

/// The knobs for a CPU limit in millicores.
func cpuKnobs(millis: Int64) -> [(String, String)] {
    let quota = max(cpuQuotaMicrosMin, millis * cpuPeriodMicros / 1000)
    return [("cpu.cfs_period_us", String(cpuPeriodMicros)), ("cpu.cfs_quota_us", String(quota))]
}

/// Rounds (of 10 ms) spent waiting for the cgroup's leftover processes to die.
let cgroupDrainRoundsMax = 100

/// Kills every process still in the workload's cgroup but the monitor: descendants that left the workload's
/// process group (`setsid`, double fork) are still members, so none of them outlives its workload.
func killCgroupMembers(_ group: ControllerGroup, log: MonitorLog) {
    let me = getpid()
    for round in 0..<cgroupDrainRoundsMax {
        guard let bytes = readFile(group.path + "/cgroup.procs", bytesMax: 1 << 20) else { return }
        let others = String(decoding: bytes, as: UTF8.self).split(separator: "\n").compactMap { Int32($0) }
            .filter { $0 != me }
        if others.isEmpty { return }
        if round == 0 { log.note("killing \(others.count) processes left in cgroup \(group.path)") }
        for pid in others { _ = kill(pid, SIGKILL) }
        _ = poll(nil, 0, 10)
        while waitpid(-1, nil, WNOHANG) > 0 {}  // the monitor is their subreaper: zombies stay members until reaped
    }
    log.note("cgroup \(group.path): processes still present after SIGKILL")
}
