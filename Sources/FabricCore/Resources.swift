/// Named limits: every bound in Fabric is a constant with its unit in the name.
public enum Limits {
    public static let nameLengthMax = 63
    public static let cpuMillisMax: Int64 = 1_024_000  // 1,024 cores
    public static let memoryBytesMax: Int64 = 64 << 40  // 64 TiB
    /// Less than this cannot even hold a shell; a request for it is a mistake (e.g. "64" meaning "64Mi").
    public static let memoryBytesMin: Int64 = 1 << 20  // 1 MiB
    public static let gpuCountMax = 16
    public static let commandArgsMax = 256
    public static let commandBytesMax = 64 << 10
    public static let envEntriesMax = 256
    public static let envValueBytesMax = 32 << 10
    public static let labelsMax = 64
    public static let labelValueLengthMax = 63
    public static let imageLengthMax = 512
    public static let requestBodyBytesMax = 1 << 20
    public static let listPageSizeDefault = 100
    public static let listPageSizeMax = 1000
    public static let pricePerHourMax = 10_000.0
    public static let placementListMax = 64
    public static let restartsMax = 100
}

/// Kubernetes-style resource quantities: `"500m"`, `"2"`, `"0.5"`, `"64Gi"`, `"1G"`.
public enum Quantity {
    static let binary: [(String, Int64)] = [
        ("Ki", 1 << 10), ("Mi", 1 << 20), ("Gi", 1 << 30), ("Ti", 1 << 40), ("Pi", 1 << 50), ("Ei", 1 << 60),
    ]
    static let decimal: [(String, Int64)] = [
        ("k", 1_000), ("M", 1_000_000), ("G", 1_000_000_000), ("T", 1_000_000_000_000),
        ("P", 1_000_000_000_000_000), ("E", 1_000_000_000_000_000_000),
    ]

    /// Parses a CPU quantity into millicores. `"500m"` = 500, `"2"` = 2000, `"0.25"` = 250.
    public static func parseCPU(_ s: String, field: String) throws(FabricError) -> Int64 {
        let text = s.trimmingSpaces
        guard !text.isEmpty else { throw .invalid(field, "empty CPU quantity") }
        let millis: Int64
        if text.hasSuffix("m") {
            guard let v = parseDecimal(String(text.dropLast()), scale: 1) else {
                throw .invalid(field, "invalid CPU quantity \"\(s)\": expected e.g. \"500m\", \"2\" or \"0.5\"")
            }
            millis = v
        } else {
            guard let v = parseDecimal(text, scale: 1000) else {
                throw .invalid(field, "invalid CPU quantity \"\(s)\": expected e.g. \"500m\", \"2\" or \"0.5\"")
            }
            millis = v
        }
        guard millis > 0 else {
            throw .invalid(field, "CPU must be at least 1m (0.001 of a core), got \"\(s.prefix(64))\"")
        }
        guard millis <= Limits.cpuMillisMax else {
            throw .invalid(field, "CPU \"\(s)\" exceeds the limit of \(Limits.cpuMillisMax / 1000) cores")
        }
        return millis
    }

    /// Parses a memory quantity into bytes. `"64Gi"`, `"512Mi"`, `"1G"`, `"1048576"`.
    public static func parseMemory(_ s: String, field: String, minimum: Int64 = Limits.memoryBytesMin)
        throws(FabricError) -> Int64
    {
        let text = s.trimmingSpaces
        guard !text.isEmpty else { throw .invalid(field, "empty memory quantity") }
        var number = text
        var multiplier: Int64 = 1
        if let (suffix, m) = (binary + decimal).first(where: { text.hasSuffix($0.0) }) {
            number = String(text.dropLast(suffix.count))
            multiplier = m
        }
        guard let bytes = parseDecimal(number, scale: multiplier) else {
            if isDecimal(number) {  // a well-formed number too large to count in bytes
                throw .invalid(field, "memory \"\(s.prefix(64))\" exceeds the limit of 64Ti")
            }
            throw .invalid(field, "invalid memory quantity \"\(s)\": expected e.g. \"64Mi\", \"8Gi\" or \"1G\"")
        }
        guard bytes > 0 else { throw .invalid(field, "memory must be greater than zero, got \"\(s)\"") }
        guard bytes >= minimum else {
            throw .invalid(field, "memory \"\(s)\" is below the minimum of 1Mi (a plain number means bytes)")
        }
        guard bytes <= Limits.memoryBytesMax else {
            throw .invalid(field, "memory \"\(s)\" exceeds the limit of 64Ti")
        }
        return bytes
    }

    /// Whether `s` is `[+-]digits[.digits]` (any length).
    public static func isDecimal(_ s: String) -> Bool {
        var u = Substring(s).utf8[...]
        if u.first == UInt8(ascii: "-") || u.first == UInt8(ascii: "+") { u = u.dropFirst() }
        var dots = 0
        var digits = 0
        for c in u {
            if c == UInt8(ascii: ".") {
                dots += 1
            } else if c >= 48, c <= 57 {
                digits += 1
            } else {
                return false
            }
        }
        return digits > 0 && dots <= 1
    }

    /// Parses `[-]digits[.digits]` times `scale`, exactly, or nil on bad syntax or overflow.
    /// A negative number parses (so callers can say "must be greater than zero"); fractions beyond the scale's
    /// precision are truncated.
    static func parseDecimal(_ s: String, scale: Int64) -> Int64? {
        var u = Substring(s).utf8[...]
        var negative = false
        if u.first == UInt8(ascii: "-") {
            negative = true
            u = u.dropFirst()
        } else if u.first == UInt8(ascii: "+") {
            u = u.dropFirst()
        }
        guard !u.isEmpty, u.count <= 40 else { return nil }
        var whole: Int64 = 0
        var frac: [UInt8] = []
        var seenDot = false
        var digits = 0
        for c in u {
            if c == UInt8(ascii: ".") {
                guard !seenDot else { return nil }
                seenDot = true
                continue
            }
            guard c >= 48, c <= 57 else { return nil }
            digits += 1
            if seenDot {
                frac.append(c - 48)
            } else {
                let (m, o1) = whole.multipliedReportingOverflow(by: 10)
                let (a, o2) = m.addingReportingOverflow(Int64(c - 48))
                guard !o1, !o2 else { return nil }
                whole = a
            }
        }
        guard digits > 0 else { return nil }
        let (w, o) = whole.multipliedReportingOverflow(by: scale)
        guard !o else { return nil }
        // fraction = digits * scale / 10^n, exactly (truncated), through a 128-bit product.
        var numerator: Int64 = 0
        var denominator: Int64 = 1
        for d in frac.prefix(12) {
            numerator = numerator * 10 + Int64(d)
            denominator *= 10
        }
        let product = numerator.multipliedFullWidth(by: scale)
        let fracValue = denominator.dividingFullWidth(product).quotient
        let (total, o3) = w.addingReportingOverflow(fracValue)
        guard !o3 else { return nil }
        return negative ? -total : total
    }

    /// Renders millicores the way a user writes them: `"500m"`, `"2"`.
    public static func formatCPU(_ millis: Int64) -> String {
        millis % 1000 == 0 ? String(millis / 1000) : "\(millis)m"
    }

    /// Renders bytes with the largest exact binary suffix: `"64Gi"`, `"512Mi"`, `"1000"`.
    public static func formatMemory(_ bytes: Int64) -> String {
        for (suffix, m) in binary.reversed() where bytes >= m && bytes % m == 0 {
            return "\(bytes / m)\(suffix)"
        }
        return String(bytes)
    }
}

/// A GPU request or capacity: how many and of which model. `model` nil means "any model".
public struct GPUSpec: Sendable, Hashable, Codable {
    public var count: Int
    public var model: String?

    public init(count: Int, model: String? = nil) {
        self.count = count
        self.model = model.map(GPUModel.canonical)
    }

    enum CodingKeys: String, CodingKey { case count, model = "type" }
}

/// Compute resources: CPU in millicores, memory in bytes, and GPUs.
public struct Resources: Sendable, Hashable, Codable {
    public var cpuMillis: Int64
    public var memoryBytes: Int64
    public var gpu: GPUSpec?

    public init(cpuMillis: Int64, memoryBytes: Int64, gpu: GPUSpec? = nil) {
        self.cpuMillis = cpuMillis
        self.memoryBytes = memoryBytes
        self.gpu = gpu
    }

    public static let zero = Resources(cpuMillis: 0, memoryBytes: 0)

    public var gpuCount: Int { gpu?.count ?? 0 }

    enum CodingKeys: String, CodingKey { case cpu, memory, gpu }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        // Stored documents may hold zero (a node with nothing allocated); requests are validated elsewhere.
        func decode(_ key: CodingKeys, _ parse: (String, String) throws(FabricError) -> Int64) throws -> Int64 {
            let text = try c.decode(String.self, forKey: key)
            if text == "0" { return 0 }
            do { return try parse(text, key.rawValue) } catch {
                throw DecodingError.dataCorruptedError(forKey: key, in: c, debugDescription: error.message)
            }
        }
        cpuMillis = try decode(.cpu, Quantity.parseCPU)
        memoryBytes = try decode(.memory) { (text, field) throws(FabricError) in
            try Quantity.parseMemory(text, field: field, minimum: 1)
        }
        gpu = try c.decodeIfPresent(GPUSpec.self, forKey: .gpu)
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(Quantity.formatCPU(cpuMillis), forKey: .cpu)
        try c.encode(Quantity.formatMemory(memoryBytes), forKey: .memory)
        if let gpu, gpu.count > 0 { try c.encode(gpu, forKey: .gpu) }
    }
}

/// GPU model names: one canonical spelling per model, so "h100", "H100-80GB" and "NVIDIA H100" agree.
public enum GPUModel {
    /// Memory in GiB per known canonical model.
    public static let memoryGiB: [String: Int] = [
        "H100": 80, "H200": 141, "B200": 180, "A100-80GB": 80, "A100-40GB": 40, "L40S": 48, "L40": 48, "L4": 24,
        "A10G": 24, "A10": 24, "T4": 16, "V100": 16, "RTX4090": 24, "RTXA6000": 48, "A40": 48, "RTXA5000": 24,
        "RTXA4000": 16, "MI300X": 192,
    ]

    /// The canonical spelling: upper case, without vendor, form factor (`SXM`, `PCIe`, `NVLink`) or separators;
    /// memory size is kept only where a model comes in several (`A100-80GB`, `A100-40GB`).
    public static func canonical(_ name: String) -> String {
        var tokens: [String] = []
        var memory: String? = nil
        for t in name.uppercased().split(whereSeparator: { $0 == "-" || $0 == "_" || $0 == " " }) {
            let token = String(t)
            if droppedTokens.contains(token) { continue }
            if token.hasSuffix("GB"), token.dropLast(2).allSatisfy(\.isNumber) {
                memory = token
                continue
            }
            tokens.append(token)
        }
        var base = tokens.joined()
        if base == "A6000" { base = "RTXA6000" }
        if base == "A5000" { base = "RTXA5000" }
        if base == "A4000" { base = "RTXA4000" }
        if base == "4090" { base = "RTX4090" }
        if base == "A100", let memory { return "A100-" + memory }
        return base
    }

    /// Vendor and form-factor words that do not change the model.
    static let droppedTokens: Set<String> = [
        "NVIDIA", "AMD", "GEFORCE", "TESLA", "SXM", "SXM4", "SXM5", "PCIE", "NVL", "NVLINK", "HBM3", "HBM3E",
    ]

    /// Whether an offered model satisfies a requested one: equal, or the request names the family
    /// (`A100` matches `A100-80GB` and `A100-40GB`).
    public static func satisfies(offered: String, requested: String) -> Bool {
        let o = canonical(offered)
        let r = canonical(requested)
        return o == r || o.hasPrefix(r + "-")
    }
}

extension String {
    var trimmingSpaces: String {
        var s = Substring(self)
        while s.first == " " { s = s.dropFirst() }
        while s.last == " " { s = s.dropLast() }
        return String(s)
    }
}
