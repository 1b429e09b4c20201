// The supervision loop: spawn the workload, copy its output, record how it ended.
//
//   start ─► setsid, close inherited fds, ignore HUP/PIPE/TERM/INT, subreaper
//         ─► chdir(workdir) ─► cgroups ─► posix_spawnp ──fail──► exit.json {code 126|127, error}
//                                              │ oom_score_adj -1000 (the monitor only)
//                                              │
//                                              ▼
//                                        state.json ─► poll(pipes, SIGCHLD self-pipe) ─► output.log (rotating)
//                                              │
//                                 workload exits (waitpid)
//                                              ▼
//             SIGKILL what is left of its group ─► drain pipes ─► rmdir cgroups ─► exit.json {code|signal}
import Glibc

/// Bytes read from a pipe at a time.
let readChunkBytes = 64 << 10
/// How long the monitor waits for the rest of the workload's process group to die after the workload exited.
let groupDrainMillisMax: Int32 = 2000
/// Poll step while waiting for the group to die.
let groupDrainStepMillis: Int32 = 10
/// PR_SET_CHILD_SUBREAPER from <linux/prctl.h>: orphaned grandchildren are reparented to the monitor, which reaps
/// them (PID 1 may not).
let prSetChildSubreaper: Int32 = 36
/// The monitor's own OOM score adjustment (OOM_SCORE_ADJ_MIN: never chosen by the OOM killer). Needs root.
let monitorOOMScoreAdj = -1000
/// Exit code for a program that was not found (as shells use it).
let exitCodeNotFound: Int32 = 127
/// Exit code for a program that was found but could not be run, or a bad working directory.
let exitCodeCannotRun: Int32 = 126

/// The write end of the SIGCHLD self-pipe; only the signal handler and setup touch it.
nonisolated(unsafe) var childSignalWriteFD: Int32 = -1

/// Appends timestamped lines to `DIR/monitor.log`.
struct MonitorLog {
    var fd: Int32

    /// Writes one line: `<RFC 3339 time> <text>`.
    func note(_ text: String) {
        guard fd >= 0 else { return }
        writeAll(fd, "\(rfc3339(wallMillis())) \(text)\n")
    }
}

/// The combined, size-bounded output log: `output.log`, rotated to `output.log.1` (one kept) at `bytesMax`.
struct OutputLog {
    var path: String
    var bytesMax: Int
    var fd: Int32 = -1
    var size = 0

    init(path: String, bytesMax: Int) {
        self.path = path
        self.bytesMax = bytesMax
        open()
    }

    private mutating func open() {
        fd = retryingEINTR { Glibc.open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644) }
        size = fd >= 0 ? Int(max(0, lseek(fd, 0, SEEK_END))) : 0
    }

    /// Appends `bytes`, rotating first when they would not fit, so each file stays at most `bytesMax`.
    mutating func append(_ bytes: UnsafeRawBufferPointer) {
        var rest = bytes
        while !rest.isEmpty {
            if size >= bytesMax || (size > 0 && size + rest.count > bytesMax) { rotate() }
            let n = min(rest.count, bytesMax - size)
            if fd >= 0 { _ = writeAll(fd, UnsafeRawBufferPointer(rebasing: rest[0..<n])) }
            size += n
            rest = UnsafeRawBufferPointer(rebasing: rest[n...])
        }
    }

    private mutating func rotate() {
        if fd >= 0 { Glibc.close(fd) }
        _ = rename(path, path + ".1")
        open()
        size = 0
    }

    mutating func close() {
        if fd >= 0 { Glibc.close(fd) }
        fd = -1
    }
}

/// Runs the whole monitor; returns its own exit code (0 once exit.json is written).
func runMonitor(_ options: Options) -> Int32 {
    // Detach from the caller's session and process group, so weaver's signals and exit do not reach us.
    _ = setsid()
    closefrom(3)
    ensureStandardDescriptors()
    for sig in [SIGHUP, SIGPIPE, SIGTERM, SIGINT] { signal(sig, SIG_IGN) }
    typealias Prctl = @convention(c) (Int32, UInt, UInt, UInt, UInt) -> Int32
    // prctl is variadic in C; with integer arguments the fixed-argument call is ABI-compatible on x86-64 and arm64.
    let subreaper = gnuSymbol("prctl", as: Prctl.self).map { $0(prSetChildSubreaper, 1, 0, 0, 0) == 0 } ?? false

    let dir = options.dir
    let logFD = retryingEINTR { open(dir + "/monitor.log", O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644) }
    guard logFD >= 0 else {
        writeAll(2, "fabric-monitor: cannot open \(dir)/monitor.log: \(errnoText(errno))\n")
        return 1
    }
    let log = MonitorLog(fd: logFD)
    log.note(
        "monitor pid=\(getpid()) program=\(options.program[0]) args=\(options.program.count - 1)"
            + " log-bytes-max=\(options.logBytesMax) subreaper=\(subreaper)")

    func fail(_ code: Int32, _ message: String) -> Int32 {
        log.note("cannot start: \(message)")
        let json = "{\"code\":\(code),\"error\":\(jsonString(message)),\"finishedAtMs\":\(wallMillis())}\n"
        guard writeFileAtomically(dir + "/exit.json", json) else {
            log.note("cannot write exit.json: \(errnoText(errno))")
            return 1
        }
        return 0
    }

    if let workdir = options.workdir, chdir(workdir) != 0 {
        return fail(exitCodeCannotRun, "working directory \"\(workdir)\" is not usable: \(errnoText(errno))")
    }

    // SIGCHLD wakes the poll loop through a self-pipe.
    guard let wake = cloexecPipe(), let out = cloexecPipe(), let err = cloexecPipe() else {
        return fail(exitCodeCannotRun, "cannot create pipes: \(errnoText(errno))")
    }
    setNonBlocking(wake.read)
    setNonBlocking(wake.write)
    childSignalWriteFD = wake.write
    signal(SIGCHLD) { _ in
        let saved = errno
        var byte: UInt8 = 0
        _ = write(childSignalWriteFD, &byte, 1)
        errno = saved
    }

    var groups: [ControllerGroup] = []
    if options.memoryBytes != nil || options.cpuMillis != nil {
        let name = options.cgroupName ?? "monitor-\(getpid())"
        if let bytes = options.memoryBytes,
            let g = enterCgroup(controller: "memory", name: name, knobs: memoryKnobs(bytes: bytes), log: log)
        {
            groups.append(g)
        }
        if let millis = options.cpuMillis,
            let g = enterCgroup(controller: "cpu", name: name, knobs: cpuKnobs(millis: millis), log: log)
        {
            groups.append(g)
        }
    }
    func leaveCgroups() {
        for i in groups.indices { leaveCgroup(&groups[i], log: log) }
    }

    let spawned = spawnWorkload(options.program, stdout: out.write, stderr: err.write)
    close(out.write)
    close(err.write)
    let pid: pid_t
    switch spawned {
    case .failure(let e):
        close(out.read)
        close(err.read)
        leaveCgroups()
        return fail(e.code, e.message)
    case .success(let p): pid = p
    }
    // Now that the workload has its own copy of our OOM score, make the monitor the OOM killer's last choice: in
    // the workload's memory cgroup, a workload of many small processes would otherwise lose its monitor first.
    if let error = writeKnob("/proc/self/oom_score_adj", String(monitorOOMScoreAdj)) {
        log.note("cannot set oom_score_adj=\(monitorOOMScoreAdj): \(errnoText(error))")
    }
    // posix_spawn returns after the child's exec (glibc uses CLONE_VFORK), so its group and stat are in place.
    let childStat = procStat(pid)
    let pgid = childStat?.pgid ?? pid
    let state = """
        {"monitorPid":\(getpid()),"monitorStartTime":\(procStat(getpid())?.startTime ?? 0),\
        "pid":\(pid),"pgid":\(pgid),"startTime":\(childStat?.startTime ?? 0),\
        "startedAtMs":\(wallMillis()),"program":\(jsonString(options.program[0]))}

        """
    if !writeFileAtomically(dir + "/state.json", state) {
        log.note("cannot write state.json: \(errnoText(errno))")
    }
    log.note("started pid=\(pid) pgid=\(pgid)")

    var output = OutputLog(path: dir + "/output.log", bytesMax: options.logBytesMax)
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: readChunkBytes, alignment: 16)
    defer { buffer.deallocate() }

    /// Copies one read from `fd` into the output log.
    func pump(_ fd: Int32) -> PumpResult {
        let n = retryingEINTR { read(fd, buffer.baseAddress!, buffer.count) }
        if n > 0 {
            output.append(UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
            return .copied
        }
        return n < 0 && errno == EAGAIN ? .wouldBlock : .ended
    }

    var status: Int32?
    /// Reaps every exited child (grandchildren too, as subreaper); remembers the workload's status.
    func reapAll() {
        var st: Int32 = 0
        while true {
            let p = retryingEINTR { waitpid(-1, &st, WNOHANG) }
            if p <= 0 { return }
            if p == pid { status = st }
        }
    }

    var fds = [
        pollfd(fd: wake.read, events: Int16(POLLIN), revents: 0),
        pollfd(fd: out.read, events: Int16(POLLIN), revents: 0),
        pollfd(fd: err.read, events: Int16(POLLIN), revents: 0),
    ]
    var fence = Fence(options: options)
    while status == nil {
        let ready = retryingEINTR { poll(&fds, nfds_t(fds.count), fence.pollMillis) }
        if ready < 0 {
            log.note("poll failed: \(errnoText(errno))")
            break
        }
        for i in 1..<fds.count where fds[i].fd >= 0 && fds[i].revents != 0 {
            if pump(fds[i].fd) == .ended {
                close(fds[i].fd)
                fds[i].fd = -1
            }
        }
        if fds[0].revents != 0 {
            var sink = [UInt8](repeating: 0, count: 64)
            while read(wake.read, &sink, sink.count) > 0 {}
            reapAll()
        }
        if status == nil { fence.check(pgid: pgid, log: log) }
    }
    if status == nil {
        // The loop broke on an error: wait for the workload the plain way.
        var st: Int32 = 0
        if retryingEINTR({ waitpid(pid, &st, 0) }) == pid { status = st }
    }

    // The workload is gone; so is its group: kill what it left behind and reap it.
    if kill(-pgid, 0) == 0 {
        log.note("killing processes left in group \(pgid)")
        _ = kill(-pgid, SIGKILL)
        var waited: Int32 = 0
        while waited < groupDrainMillisMax {
            reapAll()
            if kill(-pgid, 0) != 0 { break }
            _ = poll(nil, 0, groupDrainStepMillis)
            waited += groupDrainStepMillis
        }
    }
    for i in 1..<fds.count where fds[i].fd >= 0 {
        setNonBlocking(fds[i].fd)
        while pump(fds[i].fd) == .copied {}
        close(fds[i].fd)
    }
    output.close()
    let (code, sig) = decodeWaitStatus(status ?? SIGKILL)
    log.note("workload pid=\(pid) ended " + (code.map { "code=\($0)" } ?? "signal=\(sig ?? SIGKILL)"))
    // Clean up before the record: once exit.json exists, nothing of the attempt is left but its files.
    leaveCgroups()
    reapAll()
    var ending = code.map { "\"code\":\($0)" } ?? "\"signal\":\(sig ?? SIGKILL)"
    if fence.fencedAt != nil { ending += ",\"fenced\":true" }
    if !writeFileAtomically(dir + "/exit.json", "{\(ending),\"finishedAtMs\":\(wallMillis())}\n") {
        log.note("cannot write exit.json: \(errnoText(errno))")
        return 1
    }
    return 0
}

/// Lease fencing: the node runner renews a lease file; when it stops doing so (it died or hangs), the workload is
/// stopped before the control plane declares the node lost and starts it elsewhere.
struct Fence {
    /// How often the lease is read.
    static let checkMillis: Int32 = 250
    let path: String?
    let timeoutMillis: Int64
    let graceMillis: Int64
    /// The newest renewal seen (the monitor's start counts as one).
    var lastRenewal = monotonicMillis()
    var fencedAt: Int64?
    var killed = false

    init(options: Options) {
        path = options.leaseFile
        timeoutMillis = options.leaseTimeoutMillis
        graceMillis = options.fenceGraceMillis
    }

    /// The poll timeout: wake up to read the lease, or sleep until something happens.
    var pollMillis: Int32 { path == nil || killed ? -1 : Self.checkMillis }

    mutating func check(pgid: pid_t, log: MonitorLog) {
        guard let path, !killed else { return }
        let now = monotonicMillis()
        if let f = fencedAt {
            if now - f >= graceMillis {
                log.note("fence: grace over, SIGKILL to group \(pgid)")
                _ = kill(-pgid, SIGKILL)
                killed = true
            }
            return
        }
        if let bytes = readFile(path, bytesMax: 64),
            let stamp = Int64(String(decoding: bytes, as: UTF8.self).filter { !$0.isWhitespace })
        {
            lastRenewal = max(lastRenewal, stamp)
        }
        guard now - lastRenewal > timeoutMillis else { return }
        log.note("fence: lease \(path) not renewed for \(now - lastRenewal) ms; SIGTERM to group \(pgid)")
        _ = kill(-pgid, SIGTERM)
        fencedAt = now
        if graceMillis == 0 {
            _ = kill(-pgid, SIGKILL)
            killed = true
        }
    }
}

/// `CLOCK_MONOTONIC` in milliseconds (the clock the node runner stamps the lease with).
func monotonicMillis() -> Int64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Int64(ts.tv_sec) * 1000 + Int64(ts.tv_nsec) / 1_000_000
}

/// What one read from a workload pipe did.
enum PumpResult { case copied, wouldBlock, ended }

/// Makes sure fds 0, 1 and 2 are open, so pipes never land on them.
func ensureStandardDescriptors() {
    while true {
        let fd = open("/dev/null", O_RDWR)
        if fd < 0 { return }
        if fd > 2 {
            close(fd)
            return
        }
    }
}

/// Why the workload could not be spawned, as an exit code and a message for exit.json.
struct SpawnFailure: Error {
    var code: Int32
    var message: String
}

/// Spawns `argv` (PATH lookup) in its own process group, stdin from /dev/null, stdout and stderr into the pipes,
/// with default signal dispositions and an empty signal mask.
func spawnWorkload(_ argv: [String], stdout: Int32, stderr: Int32) -> Result<pid_t, SpawnFailure> {
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
    posix_spawn_file_actions_adddup2(&actions, stdout, 1)
    posix_spawn_file_actions_adddup2(&actions, stderr, 2)

    var attributes = posix_spawnattr_t()
    posix_spawnattr_init(&attributes)
    defer { posix_spawnattr_destroy(&attributes) }
    posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
    posix_spawnattr_setpgroup(&attributes, 0)
    var mask = sigset_t()
    sigemptyset(&mask)
    posix_spawnattr_setsigmask(&attributes, &mask)
    var defaults = sigset_t()
    sigemptyset(&defaults)
    for sig in Int32(1)...Int32(31) where sig != SIGKILL && sig != SIGSTOP { sigaddset(&defaults, sig) }
    posix_spawnattr_setsigdefault(&attributes, &defaults)

    let cArgs = argv.map { strdup($0) } + [nil]
    defer { for p in cArgs { free(p) } }
    var pid: pid_t = 0
    let rc = posix_spawnp(&pid, argv[0], &actions, &attributes, cArgs, environ)
    if rc == 0 { return .success(pid) }
    let program = argv[0]
    switch rc {
    case ENOENT where program.contains("/"):
        return .failure(SpawnFailure(code: exitCodeNotFound, message: "program \"\(program)\" not found"))
    case ENOENT:
        let path = getenv("PATH").map { String(cString: $0) } ?? "(unset)"
        return .failure(
            SpawnFailure(code: exitCodeNotFound, message: "program \"\(program)\" not found in PATH \(path)"))
    case EACCES, EPERM:
        return .failure(
            SpawnFailure(
                code: exitCodeCannotRun, message: "program \"\(program)\" is not executable (permission denied)"))
    case ENOEXEC:
        return .failure(
            SpawnFailure(code: exitCodeCannotRun, message: "program \"\(program)\" is not in an executable format"))
    default:
        return .failure(SpawnFailure(code: exitCodeCannotRun, message: "cannot run \"\(program)\": \(errnoText(rc))"))
    }
}
