// Where a setting came from, and what went wrong with it.

/// The place a setting's value came from, as messages name it.
public enum SettingSource: Sendable, Hashable, CustomStringConvertible {
    /// `Settings.default`.
    case defaultValue
    /// A key in the YAML config file, at a 1-based line and column.
    case configFile(path: String, line: Int, column: Int)
    /// An environment variable.
    case environment(name: String)
    /// A command-line flag, spelled as the user spelled it (`--server-threads`).
    case flag(name: String)
    /// The command line as a whole (a stray argument, an unknown flag).
    case commandLine

    public var description: String {
        switch self {
        case .defaultValue: "default"
        case .configFile(let path, let line, _): "config file \(path) line \(line)"
        case .environment(let name): "environment \(name)"
        case .flag(let name): "flag \(name)"
        case .commandLine: "command line"
        }
    }
}

/// Why weaver cannot start with the given flags, environment and config file: one or more problems, each naming
/// the setting and where it came from.
public struct SettingsError: Error, Sendable, Equatable, CustomStringConvertible {
    /// What kind of problem a `Problem` is.
    public enum Code: String, Sendable, Hashable {
        case invalidValue = "invalid_value"
        case missingValue = "missing_value"
        case unknownSetting = "unknown_setting"
        case duplicateSetting = "duplicate_setting"
        case unexpectedArgument = "unexpected_argument"
        case configFileUnreadable = "config_file_unreadable"
        case configFileSyntax = "config_file_syntax"
    }

    /// One thing wrong with one setting from one source.
    public struct Problem: Sendable, Equatable, CustomStringConvertible {
        public var code: Code
        /// The setting key (`server.threads`), or the name as spelled when it is unknown.
        public var key: String?
        public var source: SettingSource?
        /// The full human message, naming the key and the source.
        public var message: String

        public init(_ code: Code, key: String?, source: SettingSource?, message: String) {
            self.code = code
            self.key = key
            self.source = source
            self.message = message
        }

        public var description: String { message }
    }

    /// Every problem found, config file first, then environment, then flags. Never empty.
    public var problems: [Problem]

    public init(_ problems: [Problem]) {
        precondition(!problems.isEmpty, "a SettingsError needs at least one problem")
        self.problems = problems
    }

    /// One problem per line.
    public var message: String { problems.map(\.message).joined(separator: "\n") }

    public var description: String { message }
}
