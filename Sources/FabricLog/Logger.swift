import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// Log levels, least to most severe.
public enum LogLevel: Int, Sendable, Comparable, CaseIterable {
    case debug, info, warn, error

    public var name: String {
        switch self {
        case .debug: "debug"
        case .info: "info"
        case .warn: "warn"
        case .error: "error"
        }
    }

    public init?(name: String) {
        guard let l = LogLevel.allCases.first(where: { $0.name == name.lowercased() }) else { return nil }
        self = l
    }

    public static func < (a: LogLevel, b: LogLevel) -> Bool { a.rawValue < b.rawValue }
}

/// Where log lines go. The default writes whole lines to stderr; tests capture them.
public protocol LogSink: Sendable {
    func write(_ line: String)
}

/// Writes each line with one write(2) call, so concurrent lines never interleave.
public struct StderrSink: LogSink {
    public init() {}
    public func write(_ line: String) {
        var l = line
        l.append("\n")
        l.withUTF8 { b in _ = Glibc.write(2, b.baseAddress, b.count) }
    }
}

/// Keeps lines in memory (tests).
public final class MemorySink: LogSink {
    private let storage = Mutex<[String]>([])
    public init() {}
    public func write(_ line: String) { storage.withLock { $0.append(line) } }
    public var lines: [String] { storage.withLock { $0 } }
}

/// A small structured logger: `ts level component message key=value ...` as text, or one JSON object per line.
///
/// Never pass secrets or payloads as fields. Values with spaces are quoted.
public struct Logger: Sendable {
    public enum Format: String, Sendable { case text, json }

    public let component: String
    public let level: LogLevel
    public let format: Format
    let sink: any LogSink
    let clock: @Sendable () -> Int64

    public init(
        component: String, level: LogLevel = .info, format: Format = .text, sink: any LogSink = StderrSink(),
        clock: @escaping @Sendable () -> Int64 = Logger.systemMillis
    ) {
        self.component = component
        self.level = level
        self.format = format
        self.sink = sink
        self.clock = clock
    }

    /// The same logger for another component.
    public func with(component: String) -> Logger {
        Logger(component: component, level: level, format: format, sink: sink, clock: clock)
    }

    public func debug(_ message: @autoclosure () -> String, _ fields: KeyValuePairs<String, Any> = [:]) {
        log(.debug, message(), fields)
    }
    public func info(_ message: @autoclosure () -> String, _ fields: KeyValuePairs<String, Any> = [:]) {
        log(.info, message(), fields)
    }
    public func warn(_ message: @autoclosure () -> String, _ fields: KeyValuePairs<String, Any> = [:]) {
        log(.warn, message(), fields)
    }
    public func error(_ message: @autoclosure () -> String, _ fields: KeyValuePairs<String, Any> = [:]) {
        log(.error, message(), fields)
    }

    public func log(_ l: LogLevel, _ message: @autoclosure () -> String, _ fields: KeyValuePairs<String, Any>) {
        guard l >= level else { return }
        let ts = RFC3339Millis.format(clock())
        switch format {
        case .text:
            var line = "\(ts) \(l.name.uppercased()) \(component): \(message())"
            for (k, v) in fields { line += " \(k)=\(Self.quote(String(describing: v)))" }
            sink.write(line)
        case .json:
            var line =
                "{\"ts\":\"\(ts)\",\"level\":\"\(l.name)\",\"component\":\(Self.json(component)),\"msg\":\(Self.json(message()))"
            for (k, v) in fields { line += ",\(Self.json(k)):\(Self.json(String(describing: v)))" }
            line += "}"
            sink.write(line)
        }
    }

    static func quote(_ s: String) -> String {
        if !s.isEmpty && !s.contains(where: { $0 == " " || $0 == "\"" || $0 == "=" || $0.isNewline }) { return s }
        return json(s)
    }

    static func json(_ s: String) -> String {
        var out = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if u.value < 0x20 {
                    let hex = String(u.value, radix: 16)
                    out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                } else {
                    out.unicodeScalars.append(u)
                }
            }
        }
        return out + "\""
    }

    /// Milliseconds since the epoch from the system clock (the logger's only clock read, for timestamps).
    public static let systemMillis: @Sendable () -> Int64 = {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Int64(ts.tv_sec) * 1000 + Int64(ts.tv_nsec) / 1_000_000
    }
}

/// RFC 3339 formatting for log timestamps (UTC, milliseconds), without Foundation.
enum RFC3339Millis {
    static func format(_ ms: Int64) -> String {
        var t = time_t(ms / 1000)
        var tmv = tm()
        gmtime_r(&t, &tmv)
        func p(_ v: Int32, _ w: Int) -> String {
            let s = String(v)
            return String(repeating: "0", count: max(0, w - s.count)) + s
        }
        return
            "\(p(tmv.tm_year + 1900, 4))-\(p(tmv.tm_mon + 1, 2))-\(p(tmv.tm_mday, 2))T\(p(tmv.tm_hour, 2)):\(p(tmv.tm_min, 2)):\(p(tmv.tm_sec, 2)).\(p(Int32(ms % 1000), 3))Z"
    }
}
