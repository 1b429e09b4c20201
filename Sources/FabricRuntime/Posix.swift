// The one place FabricRuntime calls C: syscalls wrapped into FabricError, /proc reads, spawning.
import FabricCore
import Glibc

/// Thin, typed wrappers over the POSIX calls the process runtime needs.
enum Posix {
    /// Bytes read at most from /proc files and small records.
    static let smallFileBytesMax = 64 << 10

    /// Calls `body` (a C call returning -1 and setting errno on failure), retrying on EINTR; throws a FabricError
    /// naming `what` otherwise.
    @discardableResult
    static func call(
        _ what: @autoclosure () -> String, code: FabricError.Code = .internalError, file: String = #fileID,
        line: Int = #line, _ body: () -> Int32
    ) throws(FabricError) -> Int32 {
        while true {
            let r = body()
            if r != -1 { return r }
            let e = errno
            if e == EINTR { continue }
            throw FabricError(code, "\(what()): \(errnoText(e))", file: file, line: line)
        }
    }

    /// The text of an errno value.
    static func errnoText(_ code: Int32) -> String { String(cString: strerror(code)) }

    /// Reads at most `bytesMax` bytes from the start of a file; nil when it cannot be opened.
    static func readFile(_ path: String, bytesMax: Int = smallFileBytesMax) -> [UInt8]? {
        let fd = openRegular(path)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        return readUpTo(fd, offset: 0, count: bytesMax)
    }

    /// Opens a regular file for reading without blocking and without following a symlink: a workload owns its
    /// directory and could put a FIFO (which would block the reader forever) or a link to another file there.
    /// Returns -1 for anything but a regular file.
    static func openRegular(_ path: String) -> Int32 {
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOFOLLOW)
        guard fd >= 0 else { return -1 }
        var st = stat()
        guard fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else {
            close(fd)
            return -1
        }
        return fd
    }

    /// Reads up to `count` bytes at `offset` (fewer at end of file).
    static func readUpTo(_ fd: Int32, offset: Int, count: Int) -> [UInt8] {
        guard count > 0 else { return [] }
        var result = [UInt8](repeating: 0, count: count)
        var got = 0
        result.withUnsafeMutableBytes { buffer in
            while got < count {
                let n = pread(fd, buffer.baseAddress! + got, count - got, off_t(offset + got))
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { break }
                got += n
            }
        }
        result.removeLast(count - got)
        return result
    }

    /// The newest `bytesMax` bytes of a file (all of it when smaller); empty when it does not exist.
    static func readTail(_ path: String, bytesMax: Int) -> [UInt8] {
        let fd = openRegular(path)
        guard fd >= 0 else { return [] }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { return [] }
        let size = Int(st.st_size)
        let count = min(size, bytesMax)
        return readUpTo(fd, offset: size - count, count: count)
    }

    /// The size of a file, 0 when it does not exist.
    static func fileSize(_ path: String) -> Int {
        var st = stat()
        return stat(path, &st) == 0 ? Int(st.st_size) : 0
    }

    /// Whether a path exists.
    static func exists(_ path: String) -> Bool { access(path, F_OK) == 0 }

    /// Replaces `path` with `bytes` atomically: write `path.tmp`, fsync, rename.
    static func writeFileAtomically(_ path: String, _ bytes: [UInt8]) throws(FabricError) {
        let tmp = path + ".tmp"
        let fd = try call("cannot create \(tmp)") { open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644) }
        var offset = 0
        do {
            while offset < bytes.count {
                let n = try call("cannot write \(tmp)") {
                    Int32(bytes.withUnsafeBytes { write(fd, $0.baseAddress! + offset, bytes.count - offset) })
                }
                offset += Int(n)
            }
            try call("cannot sync \(tmp)") { fsync(fd) }
        } catch {
            close(fd)
            unlink(tmp)
            throw error
        }
        close(fd)
        try call("cannot rename \(tmp)") { rename(tmp, path) }
    }

    /// Creates a folder and its parents (like `mkdir -p`).
    static func makeDirectories(_ path: String) throws(FabricError) {
        var prefix = ""
        for part in path.split(separator: "/", omittingEmptySubsequences: true) {
            prefix += "/" + part
            if mkdir(prefix, 0o755) != 0 && errno != EEXIST {
                throw FabricError(.internalError, "cannot create folder \(prefix): \(errnoText(errno))")
            }
        }
    }

    /// What /proc/PID/stat says about a process.
    struct ProcStat: Equatable {
        /// Field 3: R, S, D, Z (zombie), X (dead), ...
        var state: UInt8
        /// Field 5.
        var pgid: Int32
        /// Field 22: clock ticks after boot; with the pid it names one process even across pid reuse.
        var startTime: UInt64

        var isDead: Bool { state == UInt8(ascii: "Z") || state == UInt8(ascii: "X") }
    }

    /// Reads /proc/PID/stat; nil when the process does not exist.
    static func procStat(_ pid: Int32) -> ProcStat? {
        guard pid > 0, let bytes = readFile("/proc/\(pid)/stat", bytesMax: 4096),
            let close = bytes.lastIndex(of: UInt8(ascii: ")"))
        else { return nil }
        // Fields after the command name (which may hold spaces and parentheses), starting with field 3.
        let fields = bytes[(close + 1)...].split(separator: UInt8(ascii: " "))
        guard fields.count > 19, let state = fields[0].first,
            let pgid = Int32(String(decoding: fields[2], as: UTF8.self)),
            let start = UInt64(String(decoding: fields[19], as: UTF8.self))
        else { return nil }
        return ProcStat(state: state, pgid: pgid, startTime: start)
    }

    /// Whether the process `pid` that started at `startTime` still runs: it exists (kill 0), is not a zombie, and is
    /// not another process that reused the pid.
    static func isRunning(pid: Int32, startTime: UInt64) -> Bool {
        guard pid > 0, kill(pid, 0) == 0 || errno == EPERM, let stat = procStat(pid) else { return false }
        return !stat.isDead && (startTime == 0 || stat.startTime == startTime)
    }

    /// Reaps `pid` now if it is a zombie child of this process (a no-op for anyone else's process): the background
    /// reaper polls, and a short-lived caller could otherwise exit first and leave the zombie to init.
    static func reapIfZombieChild(_ pid: Int32) {
        guard pid > 0, procStat(pid)?.isDead == true else { return }
        var status: Int32 = 0
        _ = waitpid(pid, &status, WNOHANG)
    }

    /// posix_spawn_file_actions_addclosefrom_np (glibc 2.34+), hidden from Swift's Glibc module as a GNU extension.
    private typealias AddCloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32
    private static let addCloseFrom: AddCloseFrom? = {
        guard let handle = dlopen(nil, RTLD_NOW),
            let symbol = dlsym(handle, "posix_spawn_file_actions_addclosefrom_np")
        else { return nil }
        return unsafeBitCast(symbol, to: AddCloseFrom.self)
    }()

    /// Spawns `path` with `arguments` and exactly `environment`, stdin from /dev/null, stdout and stderr appended to
    /// `outputPath`, every other descriptor closed, default signal dispositions and an empty signal mask.
    static func spawn(
        _ path: String, _ arguments: [String], environment: [String], outputPath: String
    ) throws(FabricError) -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, outputPath, O_WRONLY | O_CREAT | O_APPEND, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        // Everything else the caller has open (sockets, databases) stays out of the child, CLOEXEC or not.
        _ = addCloseFrom?(&actions, 3)

        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        var mask = sigset_t()
        sigemptyset(&mask)
        posix_spawnattr_setsigmask(&attributes, &mask)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for sig in Int32(1)...Int32(31) where sig != SIGKILL && sig != SIGSTOP { sigaddset(&defaults, sig) }
        posix_spawnattr_setsigdefault(&attributes, &defaults)

        let argv = ([path] + arguments).map { strdup($0) } + [nil]
        let envp = environment.map { strdup($0) } + [nil]
        defer {
            for p in argv { free(p) }
            for p in envp { free(p) }
        }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, path, &actions, &attributes, argv, envp)
        guard rc == 0 else {
            throw FabricError(.failedPrecondition, "cannot run \(path): \(errnoText(rc))")
        }
        return pid
    }

    /// Waits for a child without blocking a thread: polls waitpid(WNOHANG) every `interval`, up to `timeout`
    /// (forever when nil). Returns the raw wait status, or nil when the child did not end in time (or is not ours).
    static func reap(_ pid: pid_t, interval: Duration, timeout: Duration? = nil) async -> Int32? {
        let deadline = timeout.map { ContinuousClock.now + $0 }
        var status: Int32 = 0
        while true {
            let r = waitpid(pid, &status, WNOHANG)
            if r == pid { return status }
            if r == -1 && errno != EINTR { return nil }
            if let deadline, ContinuousClock.now >= deadline { return nil }
            try? await Task.sleep(for: interval)
        }
    }
}
