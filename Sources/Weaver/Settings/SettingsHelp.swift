// `--help`: every setting's flag, environment variable, type, default and summary, grouped by section, all
// generated from `SettingsSchema.all`. Secrets show `(secret)`, never a value.

/// Renders the help text.
public enum SettingsHelp {
    /// The full help text for `programName`.
    /// `sections` limits the settings listed to those top-level sections (nil: all), less the keys in `excluding`;
    /// `configExample` shows how the config file nests keys.
    public static func text(
        programName: String = "weaver", sections: Set<String>? = nil, excluding: Set<String> = [],
        configExample: [String] = weaverConfigExample
    ) -> String {
        let shown = SettingsSchema.all.filter { $0.isRead(sections: sections, excluding: excluding) }
        var lines = [
            "Usage: \(programName) [--flag value | --flag=value]...",
            "",
            "Each setting is read from, highest first: its flag, its environment variable, the YAML config file,",
            "then its default. Booleans also take a bare --flag (true) and true/false/yes/no/1/0. Lists and labels",
            "are comma-separated (k=v,k2=v2) in flags and the environment. The config file nests keys as maps:",
        ]
        lines += configExample.map { "  " + $0 }
        lines += ["", "general:"]
        let general = [
            ("\(SettingsSchema.configFlag) <path>", SettingsSchema.configEnvironmentName, "YAML config file to read."),
            ("-h, --help", "", "Print this help and exit."),
            ("--version", "", "Print the version and exit."),
        ]
        let rows = shown.map { d in ("\(d.flag) <\(d.typeName)>", d.environmentName) }
        let flagWidth = (rows.map(\.0.count) + general.map(\.0.count)).max()!
        let envWidth = rows.map(\.1.count).max()!
        func row(_ flag: String, _ env: String, _ tail: String) -> String {
            let padded = flag.padding(toLength: flagWidth, withPad: " ", startingAt: 0)
            let line = "  \(padded)  \(env.padding(toLength: envWidth, withPad: " ", startingAt: 0))  \(tail)"
            return String(line.reversed().drop(while: { $0 == " " }).reversed())
        }
        for (flag, env, summary) in general {
            lines.append(row(flag, env, ""))
            lines.append("      \(summary)")
        }
        var section: String?
        for (descriptor, (flag, env)) in zip(shown, rows) {
            if descriptor.section != section {
                section = descriptor.section
                lines += ["", "\(descriptor.section):"]
            }
            let shown = descriptor.defaultText
            let defaultText = descriptor.isSecret ? shown : (shown.isEmpty ? "\"\"" : shown)
            lines.append(row(flag, env, "default \(defaultText)"))
            var summary = descriptor.summary
            if !descriptor.flagAliases.isEmpty {
                summary += " Also --" + descriptor.flagAliases.joined(separator: ", --") + "."
            }
            lines.append("      \(summary)")
        }
        return lines.joined(separator: "\n") + "\n"
    }

    /// weaver's example of the config file's nesting.
    public static let weaverConfigExample = [
        "server:", "  address: \":8080\"", "providers:", "  k8s:", "    enabled: true",
    ]
}
