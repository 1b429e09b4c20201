// Small POSIX helpers for fabric-monitor. Glibc only (no Foundation) to keep the monitor's RSS tiny.
import Glibc

/// Calls `body` until it stops failing with EINTR.
@inline(__always)
func retryingEINTR<T: BinaryInteger>(_ body: () -> T) -> T {
    while true {
        let r = body()
        if r == -1 && errno == EINTR { continue }
        return r
    }
}

/// The text of an errno value, e.g. "No such file or directory".
func errnoText(_ code: Int32) -> String {
    String(cString: strerror(code))
}

/// Writes all of `bytes` to `fd`; false on error (errno is set).
func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer) -> Bool {
    var offset = 0
    while offset < bytes.count {
        let n = retryingEINTR { write(fd, bytes.baseAddress! + offset, bytes.count - offset) }
        if n <= 0 { return false }
        offset += n
    }
    return true
}

/// Writes all of a string's UTF-8 bytes to `fd`.
@discardableResult
func writeAll(_ fd: Int32, _ text: String) -> Bool {
    var text = text
    return text.withUTF8 { writeAll(fd, UnsafeRawBufferPointer($0)) }
}

/// Reads at most `bytesMax` bytes of a file; nil when it cannot be opened.
func readFile(_ path: String, bytesMax: Int) -> [UInt8]? {
    let fd = retryingEINTR { open(path, O_RDONLY | O_CLOEXEC) }
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var result: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: min(bytesMax, 4096))
    while result.count < bytesMax {
        let want = min(chunk.count, bytesMax - result.count)
        let n = chunk.withUnsafeMutableBytes { buffer in retryingEINTR { read(fd, buffer.baseAddress!, want) } }
        if n <= 0 { break }
        result.append(contentsOf: chunk[0..<n])
    }
    return result
}

/// Replaces `path` with `text` atomically (write `path.tmp`, fsync, rename); false on error.
func writeFileAtomically(_ path: String, _ text: String) -> Bool {
    let tmp = path + ".tmp"
    let fd = retryingEINTR { open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644) }
    guard fd >= 0 else { return false }
    let written = writeAll(fd, text)
    let synced = fsync(fd) == 0
    close(fd)
    guard written, synced, rename(tmp, path) == 0 else {
        unlink(tmp)
        return false
    }
    return true
}

/// Writes a short text into an existing kernel file (cgroup knobs); the errno on failure.
func writeKnob(_ path: String, _ text: String) -> Int32? {
    let fd = retryingEINTR { open(path, O_WRONLY | O_CLOEXEC) }
    guard fd >= 0 else { return errno }
    defer { close(fd) }
    return writeAll(fd, text) ? nil : errno
}

/// Sets O_NONBLOCK on a descriptor.
func setNonBlocking(_ fd: Int32) {
    let flags = fcntl(fd, F_GETFL)
    if flags >= 0 { _ = fcntl(fd, F_SETFL, flags | O_NONBLOCK) }
}

/// Creates a pipe whose ends are close-on-exec (pipe2 is a GNU extension Swift's Glibc does not import; the
/// monitor is single-threaded, so pipe + fcntl cannot race with another spawn).
func cloexecPipe() -> (read: Int32, write: Int32)? {
    var fds: [Int32] = [-1, -1]
    guard pipe(&fds) == 0 else { return nil }
    _ = fcntl(fds[0], F_SETFD, FD_CLOEXEC)
    _ = fcntl(fds[1], F_SETFD, FD_CLOEXEC)
    return (fds[0], fds[1])
}

/// What /proc/PID/stat says about a process.
struct ProcStat {
    /// Field 3: R, S, D, Z, X, ...
    var state: UInt8
    /// Field 5.
    var pgid: Int32
    /// Field 22: clock ticks after boot; with the pid it names one process even across pid reuse.
    var startTime: UInt64
}

/// Reads /proc/PID/stat; nil when the process does not exist.
func procStat(_ pid: Int32) -> ProcStat? {
    guard let bytes = readFile("/proc/\(pid)/stat", bytesMax: 4096),
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

/// Milliseconds since the Unix epoch, from the wall clock.
func wallMillis() -> Int64 {
    var ts = timespec()
    clock_gettime(CLOCK_REALTIME, &ts)
    return Int64(ts.tv_sec) * 1000 + Int64(ts.tv_nsec) / 1_000_000
}

/// RFC 3339 in UTC with milliseconds, e.g. `2026-12-03T18:28:58.123Z`.
func rfc3339(_ ms: Int64) -> String {
    var days = ms >= 0 ? ms / 86_400_000 : (ms - 86_399_999) / 86_400_000
    let msOfDay = ms - days * 86_400_000
    // Civil-from-days (Howard Hinnant).
    days += 719_468
    let era = (days >= 0 ? days : days - 146_096) / 146_097
    let doe = days - era * 146_097
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365
    var y = yoe + era * 400
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
    let mp = (5 * doy + 2) / 153
    let d = doy - (153 * mp + 2) / 5 + 1
    let m = mp < 10 ? mp + 3 : mp - 9
    if m <= 2 { y += 1 }
    func pad(_ v: Int64, _ width: Int) -> String {
        let s = String(v)
        return String(repeating: "0", count: max(0, width - s.count)) + s
    }
    let h = msOfDay / 3_600_000
    let mi = msOfDay / 60_000 % 60
    let s = msOfDay / 1000 % 60
    return "\(pad(y, 4))-\(pad(m, 2))-\(pad(d, 2))T\(pad(h, 2)):\(pad(mi, 2)):\(pad(s, 2)).\(pad(msOfDay % 1000, 3))Z"
}

/// A JSON string literal (quotes included) for `text`.
func jsonString(_ text: String) -> String {
    var out = "\""
    for scalar in text.unicodeScalars {
        switch scalar {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        case _ where scalar.value < 0x20:
            let hex = String(scalar.value, radix: 16)
            out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
        default: out.unicodeScalars.append(scalar)
        }
    }
    return out + "\""
}

/// How a wait status ended: (code, nil) for an exit, (nil, signal) for a signal. The W* macros are not imported.
func decodeWaitStatus(_ status: Int32) -> (code: Int32?, signal: Int32?) {
    let low = status & 0x7f
    if low == 0 { return ((status >> 8) & 0xff, nil) }
    return (nil, low)
}

/// Resolves a symbol that Swift's Glibc module hides (GNU extensions), with the C calling convention.
func gnuSymbol<T>(_ name: String, as type: T.Type) -> T? {
    guard let handle = dlopen(nil, RTLD_NOW), let symbol = dlsym(handle, name) else { return nil }
    return unsafeBitCast(symbol, to: type)
}
