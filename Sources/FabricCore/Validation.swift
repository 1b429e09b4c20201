import Foundation

/// Parses and validates a workload spec from a JSON request body, strictly: unknown fields, wrong types, bad
/// names and absurd quantities are errors that name the field (`resources.gpu.count`).
public enum WorkloadSpecParser {
    public static func parse(_ body: Data) throws(FabricError) -> WorkloadSpec {
        try parse(JSONValue.parse(body))
    }

    public static func parse(_ json: JSONValue) throws(FabricError) -> WorkloadSpec {
        let root = try Obj(
            json, path: "",
            allowed: [
                "name", "image", "command", "env", "workingDir", "resources", "placement", "restartPolicy", "labels",
            ])
        let name = try root.string("name", required: true)!
        try validateDNSLabel(name, field: "name")
        var spec = WorkloadSpec(name: name)

        if let image = try root.string("image") {
            guard !image.isEmpty, image.utf8.count <= Limits.imageLengthMax,
                !image.contains(where: { $0 == " " || $0.isNewline })
            else {
                throw .invalid(
                    "image",
                    "image must be a non-empty reference without spaces, at most \(Limits.imageLengthMax) characters")
            }
            spec.image = image
        }
        if let command = try root.stringArray("command") {
            guard !command.isEmpty else { throw .invalid("command", "command must not be empty") }
            guard command.count <= Limits.commandArgsMax else {
                throw .invalid(
                    "command", "command has \(command.count) arguments; the limit is \(Limits.commandArgsMax)")
            }
            guard command.reduce(0, { $0 + $1.utf8.count }) <= Limits.commandBytesMax else {
                throw .invalid("command", "command is larger than \(Limits.commandBytesMax) bytes")
            }
            guard !command[0].isEmpty else { throw .invalid("command[0]", "the program name must not be empty") }
            guard !command.contains(where: { $0.utf8.contains(0) }) else {
                throw .invalid("command", "arguments must not contain NUL bytes")
            }
            spec.command = command
        }
        guard spec.image != nil || spec.command != nil else {
            throw .invalid("command", "a workload needs an image, a command, or both")
        }
        if let env = try root.stringMap("env") {
            guard env.count <= Limits.envEntriesMax else {
                throw .invalid("env", "env has \(env.count) entries; the limit is \(Limits.envEntriesMax)")
            }
            for (k, v) in env {
                guard k.count <= 256 else {
                    throw .invalid("env.\(k.prefix(64))…", "environment variable names are at most 256 characters")
                }
                guard isEnvName(k) else {
                    throw .invalid(
                        "env.\(k)", "environment variable names are letters, digits and _, not starting with a digit")
                }
                guard v.utf8.count <= Limits.envValueBytesMax, !v.utf8.contains(0) else {
                    throw .invalid("env.\(k)", "value is larger than \(Limits.envValueBytesMax) bytes or contains NUL")
                }
            }
            spec.env = env
        }
        if let dir = try root.string("workingDir") {
            guard dir.hasPrefix("/") else { throw .invalid("workingDir", "workingDir must be an absolute path") }
            guard dir.utf8.count <= 4096 else {
                throw .invalid("workingDir", "workingDir is longer than 4096 bytes (PATH_MAX)")
            }
            guard !dir.utf8.contains(0) else { throw .invalid("workingDir", "workingDir contains a NUL character") }
            spec.workingDir = dir
        }
        if let r = try root.object("resources", allowed: ["cpu", "memory", "gpu"]) {
            var res = WorkloadSpec.defaultResources
            if let cpu = try r.quantityString("cpu") {
                res.cpuMillis = try Quantity.parseCPU(cpu, field: "resources.cpu")
            }
            if let mem = try r.quantityString("memory") {
                res.memoryBytes = try Quantity.parseMemory(mem, field: "resources.memory")
            }
            if let g = try r.object("gpu", allowed: ["count", "type"]) {
                let count = try g.int("count", required: true)!
                guard (0...Int64(Limits.gpuCountMax)).contains(count) else {
                    throw .invalid(
                        "resources.gpu.count", "GPU count must be between 0 and \(Limits.gpuCountMax), got \(count)")
                }
                let model = try g.string("type")
                if let model {
                    guard !model.isEmpty, model.count <= 32,
                        model.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" || $0 == " " })
                    else {
                        throw .invalid(
                            "resources.gpu.type", "GPU type must be a model name like \"H100\" or \"A100-80GB\"")
                    }
                }
                res.gpu = count > 0 ? GPUSpec(count: Int(count), model: model) : nil
            }
            spec.resources = res
        }
        if let p = try root.object("placement", allowed: ["providers", "regions", "spot", "maxPricePerHour"]) {
            var c = PlacementConstraints()
            if let providers = try p.stringArray("providers") {
                guard providers.count <= Limits.placementListMax else {
                    throw .invalid("placement.providers", "at most \(Limits.placementListMax) providers")
                }
                guard !providers.isEmpty else {
                    throw .invalid(
                        "placement.providers", "an empty list allows no provider; leave it out to allow every one")
                }
                for (i, name) in providers.enumerated() where ProviderName(rawValue: name) == nil {
                    let known = ProviderName.allCases.map(\.rawValue).joined(separator: ", ")
                    throw .invalid("placement.providers[\(i)]", "unknown provider \"\(name)\"; known: \(known)")
                }
                c.providers = providers
            }
            if let regions = try p.stringArray("regions") {
                guard regions.count <= Limits.placementListMax else {
                    throw .invalid("placement.regions", "at most \(Limits.placementListMax) regions")
                }
                guard !regions.isEmpty else {
                    throw .invalid(
                        "placement.regions", "an empty list allows no region; leave it out to allow every one")
                }
                for (i, r) in regions.enumerated() where r.isEmpty || r.count > 64 {
                    throw .invalid("placement.regions[\(i)]", "region names are 1 to 64 characters")
                }
                c.regions = regions
            }
            if let spot = try p.string("spot") {
                guard let s = SpotPolicy(rawValue: spot) else {
                    throw .invalid("placement.spot", "spot must be one of never, allowed, required")
                }
                c.spot = s
            }
            if let max = try p.number("maxPricePerHour") {
                guard max > 0, max <= Limits.pricePerHourMax, max.isFinite else {
                    throw .invalid(
                        "placement.maxPricePerHour",
                        "maxPricePerHour must be greater than 0 and at most \(Int(Limits.pricePerHourMax))")
                }
                c.maxPricePerHour = max
            }
            spec.placement = c
        }
        if let policy = try root.string("restartPolicy") {
            guard let p = RestartPolicy.allCases.first(where: { $0.rawValue.lowercased() == policy.lowercased() })
            else {
                throw .invalid("restartPolicy", "restartPolicy must be one of never, onFailure, always")
            }
            spec.restartPolicy = p
        }
        if let labels = try root.stringMap("labels") {
            guard labels.count <= Limits.labelsMax else {
                throw .invalid("labels", "at most \(Limits.labelsMax) labels")
            }
            for (k, v) in labels {
                try validateLabelKey(k, field: "labels.\(k)")
                try validateLabelValue(v, field: "labels.\(k)")
            }
            spec.labels = labels
        }
        return spec
    }

    /// A DNS-1123 label: 1 to 63 lower-case letters, digits or '-', starting and ending alphanumeric.
    public static func validateDNSLabel(_ s: String, field: String) throws(FabricError) {
        let u = Array(s.utf8)
        guard !u.isEmpty, u.count <= Limits.nameLengthMax else {
            throw .invalid(field, "\(field) must be 1 to \(Limits.nameLengthMax) characters, got \(u.count)")
        }
        func alnum(_ c: UInt8) -> Bool { (c >= 97 && c <= 122) || (c >= 48 && c <= 57) }
        guard u.allSatisfy({ alnum($0) || $0 == UInt8(ascii: "-") }), alnum(u.first!), alnum(u.last!) else {
            throw .invalid(
                field,
                "\(field) must be a DNS-1123 label: lower-case letters, digits and '-', starting and ending with a letter or digit"
            )
        }
    }

    /// A label key: an optional DNS-subdomain prefix and '/', then a name of 1 to 63 of [A-Za-z0-9._-].
    public static func validateLabelKey(_ key: String, field: String) throws(FabricError) {
        let parts = key.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count <= 2, let name = parts.last, !name.isEmpty, name.count <= 63,
            name.allSatisfy({ isLabelChar($0) }), name.first!.isLetterOrDigitASCII, name.last!.isLetterOrDigitASCII
        else {
            throw .invalid(field, "label keys are [prefix/]name, the name 1 to 63 letters, digits, '-', '_' or '.'")
        }
        if parts.count == 2 {
            let prefix = parts[0]
            guard !prefix.isEmpty, prefix.count <= 253,
                prefix.allSatisfy({ $0.isLetterOrDigitASCII || $0 == "-" || $0 == "." })
            else { throw .invalid(field, "label key prefix must be a DNS subdomain") }
        }
    }

    /// A label value: empty, or 1 to 63 of [A-Za-z0-9._-] starting and ending alphanumeric.
    public static func validateLabelValue(_ v: String, field: String) throws(FabricError) {
        guard !v.isEmpty else { return }
        guard v.count <= Limits.labelValueLengthMax, v.allSatisfy({ isLabelChar($0) }),
            v.first!.isLetterOrDigitASCII, v.last!.isLetterOrDigitASCII
        else {
            throw .invalid(
                field, "label values are at most 63 letters, digits, '-', '_' or '.', starting and ending alphanumeric")
        }
    }

    static func isLabelChar(_ c: Character) -> Bool { c.isLetterOrDigitASCII || c == "-" || c == "_" || c == "." }

    static func isEnvName(_ s: String) -> Bool {
        guard let f = s.first, f == "_" || (f.isASCII && f.isLetter), s.count <= 256 else { return false }
        return s.allSatisfy { $0 == "_" || $0.isLetterOrDigitASCII }
    }
}

extension Character {
    var isLetterOrDigitASCII: Bool { isASCII && (isLetter || isNumber) }
}

/// A JSON object being validated at `path`, with the set of fields it may carry.
struct Obj {
    let fields: [String: JSONValue]
    let path: String

    init(_ v: JSONValue, path: String, allowed: Set<String>) throws(FabricError) {
        guard case .object(let f) = v else {
            throw FabricError.invalid(
                path.isEmpty ? "body" : path, "\(path.isEmpty ? "body" : path) must be a JSON object")
        }
        for key in f.keys.sorted() where !allowed.contains(key) {
            throw FabricError.invalid(
                sub(path, key), "unknown field \"\(key)\"; allowed: \(allowed.sorted().joined(separator: ", "))")
        }
        self.fields = f
        self.path = path
    }

    func field(_ k: String) -> String { sub(path, k) }

    func value(_ k: String, required: Bool) throws(FabricError) -> JSONValue? {
        switch fields[k] {
        case nil, .null?:
            if required { throw FabricError.invalid(field(k), "\(field(k)) is required") }
            return nil
        case let v?: return v
        }
    }

    func typeError(_ k: String, _ want: String, _ got: JSONValue) -> FabricError {
        .invalid(field(k), "\(field(k)) must be \(want), got \(got.typeName)")
    }

    func string(_ k: String, required: Bool = false) throws(FabricError) -> String? {
        guard let v = try value(k, required: required) else { return nil }
        guard case .string(let s) = v else { throw typeError(k, "a string", v) }
        return s
    }

    /// A quantity may be written as a string ("500m") or a plain number (2, 0.5).
    func quantityString(_ k: String) throws(FabricError) -> String? {
        guard let v = try value(k, required: false) else { return nil }
        switch v {
        case .string(let s): return s
        case .int(let i): return String(i)
        case .double(let d):
            guard d.isFinite, abs(d) < 1e15 else { throw FabricError.invalid(field(k), "\(field(k)) is out of range") }
            return String(format: "%.6f", d)
        default: throw typeError(k, "a quantity string like \"500m\" or \"64Gi\"", v)
        }
    }

    func int(_ k: String, required: Bool = false) throws(FabricError) -> Int64? {
        guard let v = try value(k, required: required) else { return nil }
        switch v {
        case .int(let i): return i
        case .double(let d) where d.rounded() == d && abs(d) < 1e15: return Int64(d)
        case .double(let d) where d.isFinite && d.rounded() != d:
            throw FabricError.invalid(field(k), "\(field(k)) must be a whole number")
        case .double: throw FabricError.invalid(field(k), "\(field(k)) is out of range")
        default: throw typeError(k, "an integer", v)
        }
    }

    func number(_ k: String) throws(FabricError) -> Double? {
        guard let v = try value(k, required: false) else { return nil }
        switch v {
        case .int(let i): return Double(i)
        case .double(let d): return d
        default: throw typeError(k, "a number", v)
        }
    }

    func stringArray(_ k: String) throws(FabricError) -> [String]? {
        guard let v = try value(k, required: false) else { return nil }
        guard case .array(let a) = v else { throw typeError(k, "an array of strings", v) }
        var out: [String] = []
        out.reserveCapacity(a.count)
        for (i, e) in a.enumerated() {
            guard case .string(let s) = e else {
                throw FabricError.invalid("\(field(k))[\(i)]", "\(field(k))[\(i)] must be a string, got \(e.typeName)")
            }
            out.append(s)
        }
        return out
    }

    func stringMap(_ k: String) throws(FabricError) -> [String: String]? {
        guard let v = try value(k, required: false) else { return nil }
        guard case .object(let o) = v else { throw typeError(k, "an object of strings", v) }
        var out: [String: String] = [:]
        for (key, e) in o {
            guard case .string(let s) = e else {
                throw FabricError.invalid(
                    "\(field(k)).\(key)", "\(field(k)).\(key) must be a string, got \(e.typeName)")
            }
            out[key] = s
        }
        return out
    }

    func object(_ k: String, allowed: Set<String>) throws(FabricError) -> Obj? {
        guard let v = try value(k, required: false) else { return nil }
        return try Obj(v, path: field(k), allowed: allowed)
    }
}

private func sub(_ path: String, _ key: String) -> String { path.isEmpty ? key : "\(path).\(key)" }
