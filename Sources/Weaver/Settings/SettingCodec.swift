// The value types settings can have: how each is parsed from a flag, an environment variable or the config file,
// checked against its limits, and printed back for help and logs.
import FabricCore

/// A value as one source spelled it: flags and the environment give text; the config file may also give a
/// sequence or a map of plain values.
public enum RawSettingValue: Sendable, Equatable {
    case text(String)
    case list([String])
    case map([KeyValue])

    /// One entry of a map value, in the order written.
    public struct KeyValue: Sendable, Equatable {
        public var key: String
        public var value: String

        public init(_ key: String, _ value: String) {
            self.key = key
            self.value = value
        }
    }
}

/// Why a raw value does not fit its setting: the part of the message after the colon (`expected an integer`).
public struct SettingValueError: Error, Sendable, Equatable {
    public var reason: String

    public init(_ reason: String) { self.reason = reason }
}

/// Named limits on settings and on the config file.
public enum SettingsLimits {
    public static let stringLengthMax = 4096
    public static let pathLengthMax = 4096
    public static let urlLengthMax = 2048
    public static let hostLengthMax = 253
    public static let dnsLabelLengthMax = 63
    public static let listEntriesMax = 256
    /// Longest input an error message quotes; longer input is cut with `...`.
    public static let echoedValueLengthMax = 80
    public static let configFileBytesMax = 1 << 20
    /// Deepest nesting of maps and sequences the config file may have.
    public static let yamlDepthMax = 32
    /// Most problems one `SettingsError` reports.
    public static let problemsMax = 20

    public static let serverThreads = 1...256
    public static let serverBodyBytes = (1 << 10)...(1 << 30)
    public static let serverConnections = 1...1_000_000
    public static let serverClientConnections = 0...1_000_000
    public static let databasePort = 1...65535
    public static let databasePoolSize = 1...64
    public static let schedulerRetryInterval = Duration.milliseconds(10)...Duration.seconds(3600)
    public static let schedulerOfferUnavailableTTL = Duration.seconds(1)...Duration.seconds(7 * 24 * 3600)
    public static let schedulerBatchWindow = Duration.zero...Duration.seconds(300)
    public static let runtimeStopGrace = Duration.zero...Duration.seconds(3600)
    public static let runtimeLogBytes = (1 << 10)...(64 << 30)
    public static let nodePricePerHour = 0.0...Limits.pricePerHourMax
    public static let nodeGPUCount = 0...Limits.gpuCountMax
    public static let clusterHeartbeatInterval = Duration.milliseconds(100)...Duration.seconds(60)
    public static let clusterSilence = Duration.seconds(1)...Duration.seconds(3600)
}

/// How one type of setting value is parsed, checked and printed.
struct SettingCodec<Value: Sendable>: Sendable {
    /// The type as help shows it: `int 1..256`, `duration`, `debug|info|warn|error`.
    let typeName: String
    /// Whether the value is a credential: never printed, never quoted in errors.
    let isSecret: Bool
    /// Whether a bare flag (`--node-enabled`) means true.
    let isBool: Bool
    let parseRaw: @Sendable (RawSettingValue) throws(SettingValueError) -> Value
    let renderValue: @Sendable (Value) -> String
    let redactText: @Sendable (String) -> String

    init(
        typeName: String, isSecret: Bool = false, isBool: Bool = false,
        parse: @escaping @Sendable (RawSettingValue) throws(SettingValueError) -> Value,
        render: @escaping @Sendable (Value) -> String,
        redact: @escaping @Sendable (String) -> String = { $0 }
    ) {
        self.typeName = typeName
        self.isSecret = isSecret
        self.isBool = isBool
        self.parseRaw = parse
        self.renderValue = render
        self.redactText = redact
    }

    /// Parses and checks a raw value.
    func parse(_ raw: RawSettingValue) throws(SettingValueError) -> Value { try parseRaw(raw) }

    /// The value as a user would write it in a flag; parsing it gives the value back.
    func render(_ value: Value) -> String { renderValue(value) }

    /// The value for logs: secrets as `****` when set, passwords inside URLs masked.
    func redacted(_ value: Value) -> String {
        let text = renderValue(value)
        if isSecret { return text.isEmpty ? "" : Settings.Secret.mask }
        return redactText(text)
    }

    /// The input as an error message may quote it: nil for secrets, URL passwords masked, long input cut.
    func echo(_ input: String) -> String? {
        if isSecret { return nil }
        let text = redactText(input)
        let max = SettingsLimits.echoedValueLengthMax
        return text.count <= max ? text : String(text.prefix(max)) + "..."
    }

    /// A codec for values written as one piece of text.
    static func scalar(
        _ typeName: String, isSecret: Bool = false, isBool: Bool = false,
        redact: @escaping @Sendable (String) -> String = { $0 },
        parse: @escaping @Sendable (String) throws(SettingValueError) -> Value,
        render: @escaping @Sendable (Value) -> String
    ) -> Self {
        Self(
            typeName: typeName, isSecret: isSecret, isBool: isBool,
            parse: { (raw: RawSettingValue) throws(SettingValueError) -> Value in
                switch raw {
                case .text(let text): return try parse(text)
                case .list: throw SettingValueError("expected a single value, not a list")
                case .map: throw SettingValueError("expected a single value, not a map")
                }
            }, render: render, redact: redact)
    }
}

// MARK: - Text-like values

extension SettingCodec where Value == String {
    /// Free text up to `SettingsLimits.stringLengthMax` characters.
    static func string(allowsEmpty: Bool = true) -> Self {
        .scalar(
            "string",
            parse: { (text: String) throws(SettingValueError) -> String in
                try SettingText.checkLength(text, max: SettingsLimits.stringLengthMax, allowsEmpty: allowsEmpty)
                return text
            }, render: { $0 })
    }

    /// A DNS-1123 label (`local`, `us-east-1`, `default`).
    static func name(allowsEmpty: Bool = false) -> Self {
        .scalar(
            "name",
            parse: { (text: String) throws(SettingValueError) -> String in
                if text.isEmpty, allowsEmpty { return text }
                guard SettingText.isDNSLabel(text) else {
                    throw SettingValueError(
                        "expected a name of 1 to \(SettingsLimits.dnsLabelLengthMax) lower-case letters, "
                            + "digits or '-', starting and ending with a letter or digit")
                }
                return text
            }, render: { $0 })
    }

    /// DNS-1123 labels separated by commas (`us-east-1,us-west-2`), or empty; at most
    /// `SettingsLimits.listEntriesMax` of them.
    static func nameList() -> Self {
        .scalar(
            "names",
            parse: { (text: String) throws(SettingValueError) -> String in
                if text.isEmpty { return text }
                let names = text.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
                guard names.count <= SettingsLimits.listEntriesMax else {
                    throw SettingValueError("expected at most \(SettingsLimits.listEntriesMax) names")
                }
                for n in names where !SettingText.isDNSLabel(n) {
                    throw SettingValueError(
                        "expected names separated by commas, each of 1 to \(SettingsLimits.dnsLabelLengthMax) "
                            + "lower-case letters, digits or '-'; \"\(n)\" is not one")
                }
                return text
            }, render: { $0 })
    }

    /// A file or folder path.
    static func path(allowsEmpty: Bool = true) -> Self {
        .scalar(
            "path",
            parse: { (text: String) throws(SettingValueError) -> String in
                try SettingText.checkLength(text, max: SettingsLimits.pathLengthMax, allowsEmpty: allowsEmpty)
                guard !text.contains("\0") else { throw SettingValueError("a path cannot contain a NUL character") }
                return text
            }, render: { $0 })
    }

    /// A URL with one of `schemes` (`["postgres", "postgresql"]`), or empty for unset. Passwords in it are masked
    /// in logs and errors.
    static func url(schemes: [String]) -> Self {
        let prefixes = schemes.map { "\($0)://" }
        let expected = "expected a URL starting with " + SettingText.orList(prefixes)
        return .scalar(
            "url " + prefixes.joined(separator: "|"), redact: SettingText.redactURL,
            parse: { (text: String) throws(SettingValueError) -> String in
                if text.isEmpty { return text }
                guard let prefix = prefixes.first(where: { text.lowercased().hasPrefix($0) }),
                    text.count > prefix.count, text.count <= SettingsLimits.urlLengthMax,
                    !text.contains(where: { $0.isWhitespace })
                else { throw SettingValueError(expected) }
                if let problem = SettingText.urlPortProblem(text.dropFirst(prefix.count)) {
                    throw SettingValueError(problem)
                }
                return text
            }, render: { $0 })
    }
}

extension SettingCodec where Value == Settings.Secret {
    /// A credential: any text, never printed.
    static var secret: Self {
        .scalar(
            "secret", isSecret: true,
            parse: { (text: String) throws(SettingValueError) -> Settings.Secret in
                try SettingText.checkLength(text, max: SettingsLimits.stringLengthMax, allowsEmpty: true)
                return Settings.Secret(text)
            }, render: { $0.exposedValue })
    }
}

extension SettingCodec where Value == Settings.HostPort {
    /// `host:port` or `:port`, port 0...65535; IPv6 hosts in brackets.
    static var address: Self {
        .scalar(
            "address",
            parse: { (text: String) throws(SettingValueError) -> Settings.HostPort in
                guard let address = SettingText.parseAddress(text) else {
                    throw SettingValueError("expected host:port or :port with a port from 0 to 65535")
                }
                return address
            }, render: { $0.description })
    }
}

// MARK: - Numbers

extension SettingCodec where Value == Int {
    /// A decimal integer in `range`.
    static func int(_ range: ClosedRange<Int>) -> Self {
        .scalar(
            "int \(range.lowerBound)..\(range.upperBound)",
            parse: { (text: String) throws(SettingValueError) -> Int in
                guard let value = Int(SettingText.trimmed(text)) else { throw SettingValueError("expected an integer") }
                guard range.contains(value) else {
                    throw SettingValueError("must be between \(range.lowerBound) and \(range.upperBound)")
                }
                return value
            }, render: { String($0) })
    }

    /// A byte size in `range`: `10Mi`, `1Gi`, `1G` or plain bytes.
    static func bytes(_ range: ClosedRange<Int>) -> Self {
        .scalar(
            "bytes",
            parse: { (text: String) throws(SettingValueError) -> Int in
                let low = Quantity.formatMemory(Int64(range.lowerBound))
                let high = Quantity.formatMemory(Int64(range.upperBound))
                let bytes: Int64
                do { bytes = try Quantity.parseMemory(text, field: "", minimum: 1) } catch {
                    // Zero, negative or too large for any byte count: well-formed, but out of range.
                    if Quantity.isDecimal(text.trimmingCharacters(in: .whitespaces)) {
                        throw SettingValueError("must be between \(low) and \(high)")
                    }
                    throw SettingValueError("expected a byte size like 10Mi, 1Gi or 1048576")
                }
                guard bytes <= Int64(range.upperBound), range.contains(Int(bytes)) else {
                    throw SettingValueError("must be between \(low) and \(high)")
                }
                return Int(bytes)
            }, render: { Quantity.formatMemory(Int64($0)) })
    }
}

extension SettingCodec where Value == Int? {
    /// A decimal integer in `range`, or empty for "detect".
    static func optionalInt(_ range: ClosedRange<Int>) -> Self {
        .scalar(
            "int \(range.lowerBound)..\(range.upperBound) or empty",
            parse: { (text: String) throws(SettingValueError) -> Int? in
                let t = SettingText.trimmed(text)
                if t.isEmpty { return nil }
                guard let value = Int(t) else { throw SettingValueError("expected an integer, or empty to detect") }
                guard range.contains(value) else {
                    throw SettingValueError("must be between \(range.lowerBound) and \(range.upperBound)")
                }
                return value
            }, render: { $0.map(String.init) ?? "" })
    }
}

extension SettingCodec where Value == Double {
    /// A finite decimal number in `range` (`0`, `2.5`).
    static func number(_ range: ClosedRange<Double>) -> Self {
        .scalar(
            "number",
            parse: { (text: String) throws(SettingValueError) -> Double in
                let t = SettingText.trimmed(text)
                guard !t.isEmpty, t.allSatisfy({ "0123456789.+-eE".contains($0) }), let value = Double(t),
                    value.isFinite
                else { throw SettingValueError("expected a number") }
                guard range.contains(value) else {
                    let low = SettingText.number(range.lowerBound)
                    let high = SettingText.number(range.upperBound)
                    throw SettingValueError("must be between \(low) and \(high)")
                }
                return value
            }, render: { SettingText.number($0) })
    }
}

extension SettingCodec where Value == Duration {
    /// A duration in `range`: `500ms`, `10s`, `2m`, `1h`, `1h30m`.
    static func duration(_ range: ClosedRange<Duration>) -> Self {
        .scalar(
            "duration \(SettingText.formatDuration(range.lowerBound))..\(SettingText.formatDuration(range.upperBound))",
            parse: { (text: String) throws(SettingValueError) -> Duration in
                guard let value = SettingText.parseDuration(text) else {
                    throw SettingValueError("expected a duration like 500ms, 10s, 2m or 1h")
                }
                guard range.contains(value) else {
                    let low = SettingText.formatDuration(range.lowerBound)
                    let high = SettingText.formatDuration(range.upperBound)
                    throw SettingValueError("must be between \(low) and \(high)")
                }
                return value
            }, render: SettingText.formatDuration)
    }
}

extension SettingCodec where Value == Int64? {
    /// A CPU quantity in millicores (`4`, `1500m`), or empty for "detect".
    static var cpu: Self {
        .scalar(
            "cpu",
            parse: { (text: String) throws(SettingValueError) -> Int64? in
                if text.isEmpty { return nil }
                do { return try Quantity.parseCPU(text, field: "") } catch {
                    throw SettingValueError(
                        "expected a CPU quantity like 4 or 1500m, at most \(Limits.cpuMillisMax / 1000) cores, "
                            + "or empty to detect")
                }
            }, render: { $0.map(Quantity.formatCPU) ?? "" })
    }

    /// A memory size in bytes (`512Mi`, `64Gi`), or empty for "detect".
    static var memory: Self {
        .scalar(
            "bytes",
            parse: { (text: String) throws(SettingValueError) -> Int64? in
                if text.isEmpty { return nil }
                do { return try Quantity.parseMemory(text, field: "") } catch {
                    throw SettingValueError("expected a byte size like 512Mi or 64Gi, at most 64Ti, or empty to detect")
                }
            }, render: { $0.map(Quantity.formatMemory) ?? "" })
    }
}

// MARK: - Booleans and choices

extension SettingCodec where Value == Bool {
    /// `true`/`false`, `yes`/`no`, `1`/`0`, in any case; a bare flag means true.
    static var bool: Self {
        .scalar(
            "bool", isBool: true,
            parse: { (text: String) throws(SettingValueError) -> Bool in
                guard let value = SettingText.parseBool(text) else {
                    throw SettingValueError("expected true, false, yes, no, 1 or 0")
                }
                return value
            }, render: { $0 ? "true" : "false" })
    }
}

extension SettingCodec where Value: RawRepresentable & CaseIterable, Value.RawValue == String {
    /// One of the cases of `Value`, by raw value, in any case.
    static var choice: Self {
        let names = Value.allCases.map(\.rawValue)
        return .scalar(
            names.joined(separator: "|"),
            parse: { (text: String) throws(SettingValueError) -> Value in
                guard let value = Value(rawValue: SettingText.trimmed(text).lowercased()) else {
                    throw SettingValueError("expected one of " + names.joined(separator: ", "))
                }
                return value
            }, render: { $0.rawValue })
    }
}

// MARK: - Lists and maps

extension SettingCodec where Value == [String] {
    /// A list: `a,b,c` in flags and the environment, a YAML sequence in the config file.
    static var list: Self {
        Self(
            typeName: "a,b,...",
            parse: { (raw: RawSettingValue) throws(SettingValueError) -> [String] in
                let items: [String]
                switch raw {
                case .text(let text):
                    items = text.split(separator: ",").map { SettingText.trimmed(String($0)) }.filter { !$0.isEmpty }
                case .list(let list): items = list
                case .map: throw SettingValueError("expected a list, not a map")
                }
                guard items.count <= SettingsLimits.listEntriesMax else {
                    throw SettingValueError(
                        "has \(items.count) entries, at most \(SettingsLimits.listEntriesMax) allowed")
                }
                for item in items {
                    try SettingText.checkLength(item, max: SettingsLimits.stringLengthMax, allowsEmpty: true)
                }
                return items
            }, render: { $0.joined(separator: ",") })
    }
}

extension SettingCodec where Value == [String: String] {
    /// Labels: `k=v,k2=v2` in flags and the environment, a YAML map in the config file; keys and values follow the
    /// workload label rules.
    static var labels: Self {
        Self(
            typeName: "k=v,...",
            parse: { (raw: RawSettingValue) throws(SettingValueError) -> [String: String] in
                let entries: [RawSettingValue.KeyValue]
                switch raw {
                case .text(let text): entries = try SettingText.parsePairs(text)
                case .map(let map): entries = map
                case .list: throw SettingValueError("expected a map of labels, not a list")
                }
                guard entries.count <= Limits.labelsMax else {
                    throw SettingValueError("has \(entries.count) labels, at most \(Limits.labelsMax) allowed")
                }
                var labels: [String: String] = [:]
                for entry in entries {
                    do throws(FabricError) {
                        try WorkloadSpecParser.validateLabelKey(entry.key, field: entry.key)
                        try WorkloadSpecParser.validateLabelValue(entry.value, field: entry.key)
                    } catch { throw SettingValueError("label \"\(entry.key)\": \(error.message)") }
                    guard labels.updateValue(entry.value, forKey: entry.key) == nil else {
                        throw SettingValueError("label \"\(entry.key)\" is given twice")
                    }
                }
                return labels
            }, render: { $0.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ",") })
    }
}

// MARK: - Text helpers

/// Weaver's duration syntax (`500ms`, `10s`, `2m`, `1h30m`), for tools that take the same values as its settings.
public enum DurationText {
    /// The duration `text` says (nil on bad syntax or overflow; negative durations do not parse).
    public static func parse(_ text: String) -> Duration? { SettingText.parseDuration(text) }
    /// `d` in the same syntax, as settings render it.
    public static func format(_ d: Duration) -> String { SettingText.formatDuration(d) }
}

/// Parsing and formatting helpers shared by the codecs.
enum SettingText {
    static let durationUnitNanos: [String: Int64] = [
        "ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 1_000_000_000, "m": 60_000_000_000,
        "h": 3_600_000_000_000,
    ]
    static let durationFractionDigitsMax = 9

    static func trimmed(_ s: String) -> String {
        var t = Substring(s)
        while t.first?.isWhitespace == true { t = t.dropFirst() }
        while t.last?.isWhitespace == true { t = t.dropLast() }
        return String(t)
    }

    static func checkLength(_ text: String, max: Int, allowsEmpty: Bool) throws(SettingValueError) {
        guard allowsEmpty || !text.isEmpty else { throw SettingValueError("must not be empty") }
        guard text.count <= max else { throw SettingValueError("must be at most \(max) characters") }
    }

    static func isDNSLabel(_ s: String) -> Bool {
        let u = Array(s.utf8)
        func alnum(_ c: UInt8) -> Bool { (c >= 97 && c <= 122) || (c >= 48 && c <= 57) }
        guard let first = u.first, let last = u.last, u.count <= SettingsLimits.dnsLabelLengthMax else { return false }
        return alnum(first) && alnum(last) && u.allSatisfy { alnum($0) || $0 == UInt8(ascii: "-") }
    }

    static func orList(_ items: [String]) -> String {
        items.count <= 1 ? items.joined() : items.dropLast().joined(separator: ", ") + " or " + items.last!
    }

    static func parseBool(_ text: String) -> Bool? {
        switch trimmed(text).lowercased() {
        case "true", "yes", "1": true
        case "false", "no", "0": false
        default: nil
        }
    }

    /// Ports a URL may name.
    static let urlPorts = 1...65535

    /// Why the ports in a URL's authority (what follows `scheme://`) are wrong, or nil when every host's port is
    /// absent or in `urlPorts`. The authority ends at `/`, `?` or `#`; user info before the last `@` is skipped;
    /// several `host:port` entries may be separated by commas (libpq's multi-host URLs); `[v6]:port` is understood.
    static func urlPortProblem(_ afterScheme: Substring) -> String? {
        let end = afterScheme.firstIndex(where: { "/?#".contains($0) }) ?? afterScheme.endIndex
        var authority = afterScheme[..<end]
        if let at = authority.lastIndex(of: "@") { authority = authority[authority.index(after: at)...] }
        let expected = "expected a port from \(urlPorts.lowerBound) to \(urlPorts.upperBound) after the host"
        for host in authority.split(separator: ",", omittingEmptySubsequences: false) {
            let portText: Substring
            if host.hasPrefix("[") {
                guard let close = host.firstIndex(of: "]") else { return "expected ] after an IPv6 address" }
                let rest = host[host.index(after: close)...]
                if rest.isEmpty { continue }
                guard rest.hasPrefix(":") else { return expected }
                portText = rest.dropFirst()
            } else {
                guard let colon = host.lastIndex(of: ":") else { continue }
                portText = host[host.index(after: colon)...]
            }
            guard !portText.isEmpty, portText.count <= 5, portText.allSatisfy({ $0.isASCII && $0.isNumber }),
                let port = Int(portText), urlPorts.contains(port)
            else { return expected }
        }
        return nil
    }

    /// `host:port` or `:port`; a bracketed IPv6 host (`[::1]:80`) loses its brackets.
    static func parseAddress(_ text: String) -> Settings.HostPort? {
        guard let colon = text.lastIndex(of: ":") else { return nil }
        var host = String(text[..<colon])
        let portText = text[text.index(after: colon)...]
        guard !portText.isEmpty, portText.count <= 5, portText.allSatisfy({ $0.isASCII && $0.isNumber }),
            let port = Int(portText), port <= 65535
        else { return nil }
        if host.hasPrefix("[") {
            guard host.hasSuffix("]"), host.count > 2 else { return nil }
            host = String(host.dropFirst().dropLast())
            guard host.contains(":"), host.allSatisfy({ $0.isHexDigit || ":.%".contains($0) || $0.isLetter }) else {
                return nil
            }
        } else {
            guard host.count <= SettingsLimits.hostLengthMax,
                host.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || ".-_".contains($0)) })
            else { return nil }
        }
        return Settings.HostPort(host: host, port: port)
    }

    /// `k=v,k2=v2` into ordered pairs; empty entries are skipped, a value may be empty.
    static func parsePairs(_ text: String) throws(SettingValueError) -> [RawSettingValue.KeyValue] {
        var pairs: [RawSettingValue.KeyValue] = []
        for entry in text.split(separator: ",") {
            let item = trimmed(String(entry))
            if item.isEmpty { continue }
            guard let eq = item.firstIndex(of: "="), eq != item.startIndex else {
                throw SettingValueError("expected key=value pairs separated by commas")
            }
            pairs.append(.init(String(item[..<eq]), String(item[item.index(after: eq)...])))
        }
        return pairs
    }

    /// `500ms`, `10s`, `1.5h`, `1h30m` or `0` into a duration; nil on anything else or on overflow.
    static func parseDuration(_ text: String) -> Duration? {
        var rest = Substring(trimmed(text))
        guard !rest.isEmpty else { return nil }
        if rest == "0" { return .zero }
        func isNumberChar(_ c: Character) -> Bool { c.isASCII && (c.isNumber || c == ".") }
        var total: Int64 = 0
        while !rest.isEmpty {
            let numberEnd = rest.firstIndex(where: { !isNumberChar($0) }) ?? rest.endIndex
            let number = rest[..<numberEnd]
            rest = rest[numberEnd...]
            let unitEnd = rest.firstIndex(where: isNumberChar) ?? rest.endIndex
            let unit = String(rest[..<unitEnd])
            rest = rest[unitEnd...]
            guard let scale = durationUnitNanos[unit], let nanos = decimal(number, scale: scale) else { return nil }
            let (sum, overflow) = total.addingReportingOverflow(nanos)
            guard !overflow else { return nil }
            total = sum
        }
        return .nanoseconds(total)
    }

    /// `digits[.digits]` times `scale`, exactly up to nanosecond fractions; nil on bad syntax or overflow.
    static func decimal(_ s: Substring, scale: Int64) -> Int64? {
        let parts = s.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count <= 2, let wholeText = parts.first else { return nil }
        let fracText = parts.count == 2 ? parts[1] : ""
        guard !wholeText.isEmpty || !fracText.isEmpty else { return nil }
        var whole: Int64 = 0
        for c in wholeText.utf8 {
            let (m, o1) = whole.multipliedReportingOverflow(by: 10)
            let (a, o2) = m.addingReportingOverflow(Int64(c - 48))
            guard !o1, !o2 else { return nil }
            whole = a
        }
        let (scaled, o3) = whole.multipliedReportingOverflow(by: scale)
        guard !o3 else { return nil }
        var numerator: Int64 = 0
        var denominator: Int64 = 1
        for c in fracText.utf8.prefix(durationFractionDigitsMax) {
            numerator = numerator * 10 + Int64(c - 48)
            denominator *= 10
        }
        let fraction = denominator.dividingFullWidth(numerator.multipliedFullWidth(by: scale)).quotient
        let (total, o4) = scaled.addingReportingOverflow(fraction)
        return o4 ? nil : total
    }

    /// The shortest exact spelling: `0s`, `500ms`, `10s`, `1h30m`, `1500us`.
    static func formatDuration(_ d: Duration) -> String {
        let (seconds, attoseconds) = d.components
        let nanos = seconds * 1_000_000_000 + attoseconds / 1_000_000_000
        if nanos == 0 { return "0s" }
        let sign = nanos < 0 ? "-" : ""
        let n = nanos.magnitude
        if n % 1_000_000_000 == 0 {
            let s = n / 1_000_000_000
            var out = sign
            if s >= 3600 { out += "\(s / 3600)h" }
            if s % 3600 >= 60 { out += "\(s % 3600 / 60)m" }
            if s % 60 != 0 { out += "\(s % 60)s" }
            return out
        }
        if n % 1_000_000 == 0 { return "\(sign)\(n / 1_000_000)ms" }
        if n % 1_000 == 0 { return "\(sign)\(n / 1_000)us" }
        return "\(sign)\(n)ns"
    }

    /// `0`, `2.5`: whole numbers without a trailing `.0`.
    static func number(_ v: Double) -> String {
        v == v.rounded() && abs(v) < 1e15 ? String(Int64(v)) : String(v)
    }

    /// Masks the password in a URL's user info (`postgres://u:****@h/db`) and in `password=`/`token=` query
    /// parameters.
    static func redactURL(_ s: String) -> String {
        guard let schemeEnd = s.range(of: "://") else { return s }
        let rest = s[schemeEnd.upperBound...]
        let authorityEnd = rest.firstIndex(where: { "/?#".contains($0) }) ?? rest.endIndex
        let authority = rest[..<authorityEnd]
        var out = String(s[..<schemeEnd.upperBound])
        if let at = authority.lastIndex(of: "@") {
            let userInfo = authority[..<at]
            if let colon = userInfo.firstIndex(of: ":") {
                out += String(userInfo[..<colon]) + ":" + Settings.Secret.mask
            } else {
                out += userInfo
            }
            out += authority[at...]
        } else {
            out += authority
        }
        let tail = rest[authorityEnd...]
        guard let question = tail.firstIndex(of: "?") else { return out + tail }
        out += tail[...question]
        let query = tail[tail.index(after: question)...]
        let fragmentStart = query.firstIndex(of: "#") ?? query.endIndex
        let parameters = query[..<fragmentStart].split(separator: "&", omittingEmptySubsequences: false).map {
            parameter -> String in
            guard let eq = parameter.firstIndex(of: "=") else { return String(parameter) }
            let name = parameter[..<eq].lowercased()
            let sensitive = ["password", "secret", "token", "key"].contains { name.contains($0) }
            return sensitive ? String(parameter[...eq]) + Settings.Secret.mask : String(parameter)
        }
        return out + parameters.joined(separator: "&") + query[fragmentStart...]
    }
}
