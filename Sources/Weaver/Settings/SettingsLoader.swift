// Builds `Settings` from, lowest first: the defaults, the YAML config file, the environment and the flags.
//
//     defaults ─▶ config file (--config / FABRIC_CONFIG) ─▶ FABRIC_* environment ─▶ --flags ─▶ Settings
//
// Every source is checked in full and all problems are reported together, each naming the key and its source.
import FabricYAML

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// What weaver should do after reading its settings.
public enum SettingsLoadResult: Sendable, Equatable {
    /// Start with these settings.
    case run(Settings)
    /// Print this help text and exit 0.
    case help(String)
    /// Print this version and exit 0.
    case version(String)
}

/// Reads settings from flags, environment and the YAML config file.
public enum SettingsLoader {
    /// The version `--version` prints unless the caller passes another.
    public static let defaultVersion = "0.1.0-dev"
    /// The exit status for bad settings (`EX_USAGE`).
    public static let usageExitCode: Int32 = 64

    /// Reads settings, highest precedence first: flags, `FABRIC_*` environment variables, the config file named by
    /// `--config` or `FABRIC_CONFIG`, then `Settings.default`.
    ///
    /// - Parameters:
    ///   - arguments: the command-line arguments after the program name (`CommandLine.arguments.dropFirst()`).
    ///   - environment: the process environment (`ProcessInfo.processInfo.environment`).
    ///   - programName: the name help shows.
    ///   - version: what `--version` prints.
    /// - Returns: `.help` or `.version` when asked for (even alongside bad flags), else `.run` with the settings.
    /// - Throws: every unknown name, bad value and config file problem, each naming the key and its source.
    ///   - sections: the top-level sections (`nats`, `node`) this program reads; nil reads every setting. A flag
    ///     outside them is refused; a variable or config-file key outside them is ignored (one environment or file
    ///     may serve weaver and shuttle alike).
    public static func load(
        arguments: [String], environment: [String: String], programName: String = "weaver",
        version: String = defaultVersion, sections: Set<String>? = nil, excluding: Set<String> = [],
        configExample: [String] = SettingsHelp.weaverConfigExample
    ) throws(SettingsError) -> SettingsLoadResult {
        let flags = scanFlags(arguments)
        if flags.wantsHelp {
            return .help(
                SettingsHelp.text(
                    programName: programName, sections: sections, excluding: excluding, configExample: configExample))
        }
        if flags.wantsVersion { return .version("\(programName) \(version)") }

        var problems: [SettingsError.Problem] = []
        var assignments: [Assignment] = []

        if let (path, source) = configPath(flags: flags, environment: environment) {
            let file = readConfigFile(path, source: source)
            problems += file.problems
            assignments += file.assignments
        }
        let env = scanEnvironment(environment)
        problems += env.problems
        assignments += env.assignments
        problems += flags.problems
        assignments += flags.assignments

        if sections != nil || !excluding.isEmpty {
            assignments = assignments.filter { a in
                guard !a.descriptor.isRead(sections: sections, excluding: excluding) else { return true }
                if case .flag = a.source {
                    problems.append(
                        .init(
                            .unknownSetting, key: a.descriptor.key, source: a.source,
                            message: "\(a.source) sets \(a.descriptor.key), which \(programName) does not read"))
                }
                return false
            }
        }
        var settings = Settings.default
        for a in assignments {
            do {
                try a.descriptor.apply(a.value, to: &settings)
            } catch {
                problems.append(invalidValue(a, reason: error.reason))
            }
        }
        guard problems.isEmpty else { throw SettingsError(Array(problems.prefix(SettingsLimits.problemsMax))) }
        return .run(settings)
    }

    /// One value for one setting from one source, not yet parsed.
    struct Assignment {
        var descriptor: SettingDescriptor
        var value: RawSettingValue
        var source: SettingSource
    }

    static func invalidValue(_ a: Assignment, reason: String) -> SettingsError.Problem {
        var quoted = ""
        if case .text(let text) = a.value, let echo = a.descriptor.echo(text) { quoted = " \"\(echo)\"" }
        return .init(
            .invalidValue, key: a.descriptor.key, source: a.source,
            message: "invalid value\(quoted) for \(a.descriptor.key) (from \(a.source)): \(reason)")
    }

    // MARK: - Flags

    struct FlagScan {
        var assignments: [Assignment] = []
        var problems: [SettingsError.Problem] = []
        var config: (path: String, source: SettingSource)?
        var wantsHelp = false
        var wantsVersion = false
    }

    /// Reads `--key value`, `--key=value` and bare boolean flags; the last of a repeated flag wins.
    static func scanFlags(_ arguments: [String]) -> FlagScan {
        var scan = FlagScan()
        var i = 0
        /// The value after a flag, unless the flag is last or followed by another flag.
        func nextValue() -> String? {
            guard i + 1 < arguments.count, !arguments[i + 1].hasPrefix("--") else { return nil }
            i += 1
            return arguments[i]
        }
        while i < arguments.count {
            defer { i += 1 }
            let argument = arguments[i]
            if argument == "-h" || argument == "--help" {
                scan.wantsHelp = true
                continue
            }
            if argument == "--version" {
                scan.wantsVersion = true
                continue
            }
            guard argument.hasPrefix("--"), argument.count > 2 else {
                let message =
                    argument.hasPrefix("-") && argument != "--"
                    ? "unknown flag \"\(argument)\" (from command line); flags start with --, see --help"
                    : "unexpected argument \"\(argument)\" (from command line); settings are given as --flags"
                scan.problems.append(.init(.unexpectedArgument, key: argument, source: .commandLine, message: message))
                continue
            }
            let name: String
            var inline: String?
            if let eq = argument.firstIndex(of: "=") {
                name = String(argument[..<eq])
                inline = String(argument[argument.index(after: eq)...])
            } else {
                name = argument
            }
            if name == SettingsSchema.configFlag {
                guard let path = inline ?? nextValue() else {
                    scan.problems.append(
                        .init(
                            .missingValue, key: name, source: .flag(name: name),
                            message: "missing value for \(name) (from command line): expected a file path"))
                    continue
                }
                scan.config = (path, .flag(name: name))
                continue
            }
            guard let descriptor = SettingsSchema.descriptor(forFlag: name) else {
                let suggestion = suggest(name, among: flagNames)
                scan.problems.append(
                    .init(
                        .unknownSetting, key: name, source: .commandLine,
                        message: "unknown flag \"\(name)\" (from command line)\(suggestion)"))
                // Its value, if it has one, is not a second problem.
                if inline == nil, i + 1 < arguments.count, !arguments[i + 1].hasPrefix("-") { i += 1 }
                continue
            }
            let source = SettingSource.flag(name: name)
            var value = inline
            if value == nil, descriptor.isBool {
                // A bare boolean flag means true. Weaver takes no positional arguments, so a following word that
                // is not a flag is this flag's value (and an invalid one unless true/false/yes/no/1/0).
                if i + 1 < arguments.count, !arguments[i + 1].hasPrefix("-") {
                    i += 1
                    value = arguments[i]
                } else {
                    value = "true"
                }
            }
            guard let text = value ?? nextValue() else {
                scan.problems.append(
                    .init(
                        .missingValue, key: descriptor.key, source: source,
                        message: "missing value for \(descriptor.key) (from \(source)): "
                            + "expected a value (\(descriptor.typeName))"))
                continue
            }
            scan.assignments.append(Assignment(descriptor: descriptor, value: .text(text), source: source))
        }
        return scan
    }

    // MARK: - Environment

    /// Reads every `FABRIC_*` variable (except `FABRIC_CONFIG` and `FABRIC_TEST_*`) in name order.
    static func scanEnvironment(_ environment: [String: String]) -> (
        assignments: [Assignment], problems: [SettingsError.Problem]
    ) {
        var assignments: [Assignment] = []
        var problems: [SettingsError.Problem] = []
        for name in environment.keys.sorted() where name.hasPrefix(SettingsSchema.environmentPrefix) {
            if name == SettingsSchema.configEnvironmentName || name.hasPrefix(SettingsSchema.testEnvironmentPrefix) {
                continue
            }
            let source = SettingSource.environment(name: name)
            guard let descriptor = SettingsSchema.descriptor(forEnvironmentName: name) else {
                let suggestion = suggest(name, among: environmentNames)
                problems.append(
                    .init(
                        .unknownSetting, key: name, source: source,
                        message: "unknown setting \"\(name)\" (from environment)\(suggestion)"))
                continue
            }
            assignments.append(Assignment(descriptor: descriptor, value: .text(environment[name]!), source: source))
        }
        return (assignments, problems)
    }

    // MARK: - Config file

    /// The config file to read: `--config` wins over `FABRIC_CONFIG`; an empty path means none.
    static func configPath(flags: FlagScan, environment: [String: String]) -> (String, SettingSource)? {
        if let (path, source) = flags.config { return path.isEmpty ? nil : (path, source) }
        let name = SettingsSchema.configEnvironmentName
        if let path = environment[name], !path.isEmpty { return (path, .environment(name: name)) }
        return nil
    }

    /// Reads and walks the config file at `path`, named by `source`.
    static func readConfigFile(_ path: String, source: SettingSource) -> (
        assignments: [Assignment], problems: [SettingsError.Problem]
    ) {
        let bytes: [UInt8]
        switch ConfigFile.contents(of: path) {
        case .success(let b): bytes = b
        case .failure(let reason):
            let message = "cannot read config file \(path) (from \(source)): \(reason.message)"
            return ([], [.init(.configFileUnreadable, key: nil, source: source, message: message)])
        }
        let root: YAMLNode?
        do {
            root = try YAMLReader.parse(bytes, depthMax: SettingsLimits.yamlDepthMax)
        } catch {
            let at = SettingSource.configFile(path: path, line: error.line, column: error.column)
            let message =
                "invalid YAML in config file \(path) line \(error.line) column \(error.column): "
                + error.message
            return ([], [.init(.configFileSyntax, key: nil, source: at, message: message)])
        }
        var walk = ConfigWalk(path: path)
        if let root { walk.visit(root, section: "") }
        return (walk.assignments, walk.problems)
    }

    /// Turns the YAML tree into assignments: nested maps are sections, leaves are settings.
    struct ConfigWalk {
        let path: String
        var assignments: [Assignment] = []
        var problems: [SettingsError.Problem] = []

        func source(_ node: YAMLNode) -> SettingSource {
            .configFile(path: path, line: node.line, column: node.column)
        }

        /// Visits a map of settings; `section` is its dotted key (`""` at the top).
        mutating func visit(_ node: YAMLNode, section: String) {
            let entries: [YAMLNode.Entry]
            switch node.kind {
            case .mapping(let e): entries = e
            case .scalar(_, isNull: true): return  // `providers:` with everything below commented out
            default:
                let what = section.isEmpty ? "the config file" : section
                problems.append(
                    .init(
                        .invalidValue, key: section.isEmpty ? nil : section, source: source(node),
                        message: "invalid value for \(what) (from \(source(node))): expected a map of settings"))
                return
            }
            var seen: [String: Int] = [:]
            for entry in entries {
                guard case .scalar(let name, isNull: false) = entry.key.kind, !name.isEmpty else {
                    problems.append(
                        .init(
                            .invalidValue, key: section.isEmpty ? nil : section, source: source(entry.key),
                            message: "invalid key (from \(source(entry.key))): expected a setting name"))
                    continue
                }
                let key = section.isEmpty ? name : "\(section).\(name)"
                if let first = seen.updateValue(entry.key.line, forKey: key) {
                    problems.append(
                        .init(
                            .duplicateSetting, key: key, source: source(entry.key),
                            message:
                                "duplicate setting \"\(key)\" (from \(source(entry.key))); first set on line \(first)"))
                    continue
                }
                if let descriptor = SettingsSchema.descriptor(forKey: key) {
                    leaf(descriptor, entry)
                } else if SettingsSchema.sections.contains(key) {
                    visit(entry.value, section: key)
                } else {
                    let suggestion = suggest(key, among: yamlNames)
                    problems.append(
                        .init(
                            .unknownSetting, key: key, source: source(entry.key),
                            message: "unknown setting \"\(key)\" (from \(source(entry.key)))\(suggestion)"))
                }
            }
        }

        /// A setting's value: a scalar, a sequence of scalars or a map of scalars.
        mutating func leaf(_ descriptor: SettingDescriptor, _ entry: YAMLNode.Entry) {
            let at = source(entry.key)
            var raw: RawSettingValue?
            switch entry.value.kind {
            case .scalar(let text, let isNull): raw = .text(isNull ? "" : text)
            case .sequence(let items):
                let texts = items.compactMap { item -> String? in
                    if case .scalar(let text, _) = item.kind { return text } else { return nil }
                }
                if texts.count == items.count { raw = .list(texts) }
            case .mapping(let entries):
                let pairs = entries.compactMap { e -> RawSettingValue.KeyValue? in
                    guard case .scalar(let k, _) = e.key.kind, case .scalar(let v, let isNull) = e.value.kind else {
                        return nil
                    }
                    return .init(k, isNull ? "" : v)
                }
                if pairs.count == entries.count { raw = .map(pairs) }
            }
            guard let raw else {
                problems.append(
                    .init(
                        .invalidValue, key: descriptor.key, source: at,
                        message: "invalid value for \(descriptor.key) (from \(at)): nested lists and maps are not "
                            + "allowed here"))
                return
            }
            assignments.append(Assignment(descriptor: descriptor, value: raw, source: at))
        }
    }

    // MARK: - Suggestions

    static let flagNames: [String] = SettingsSchema.all.flatMap { [$0.flag] + $0.flagAliases.map { "--" + $0 } }
    static let environmentNames: [String] = SettingsSchema.all.map(\.environmentName)
    static let yamlNames: [String] = SettingsSchema.all.map(\.key) + SettingsSchema.sections.sorted()
    /// The most edits a name may be from a known one to be suggested.
    static let suggestionDistanceMax = 3

    /// `"; did you mean X?"` for the closest known name, or `""` when none is close.
    static func suggest(_ name: String, among candidates: [String]) -> String {
        let target = Array(name.lowercased())
        var best: (name: String, distance: Int)?
        for candidate in candidates {
            let d = editDistance(target, Array(candidate.lowercased()))
            if d < (best?.distance ?? Int.max) { best = (candidate, d) }
        }
        guard let best, best.distance <= min(suggestionDistanceMax, max(1, target.count / 3)) else { return "" }
        return "; did you mean \(best.name)?"
    }

    /// Levenshtein distance.
    static func editDistance(_ a: [Character], _ b: [Character]) -> Int {
        if a.isEmpty { return b.count }
        var previous = Array(0...b.count)
        var current = previous
        for i in 1...a.count {
            current[0] = i
            for j in stride(from: 1, through: b.count, by: 1) {
                let substitution = previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)
                current[j] = min(substitution, previous[j] + 1, current[j - 1] + 1)
            }
            swap(&previous, &current)
        }
        return previous[b.count]
    }
}

/// Reads the config file with POSIX calls, so errors carry `strerror` text.
enum ConfigFile {
    struct ReadError: Error {
        var message: String
    }

    /// The file's bytes, at most `SettingsLimits.configFileBytesMax`.
    static func contents(of path: String) -> Result<[UInt8], ReadError> {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return .failure(ReadError(message: errnoText())) }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { return .failure(ReadError(message: errnoText())) }
        guard (info.st_mode & S_IFMT) == S_IFREG else { return .failure(ReadError(message: "not a regular file")) }
        let max = SettingsLimits.configFileBytesMax
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 64 << 10)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                return .failure(ReadError(message: errnoText()))
            }
            if n == 0 { break }
            bytes += chunk[..<n]
            guard bytes.count <= max else {
                return .failure(ReadError(message: "larger than \(max) bytes"))
            }
        }
        return .success(bytes)
    }

    static func errnoText() -> String { String(cString: strerror(errno)) }
}
