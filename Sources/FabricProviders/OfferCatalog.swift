import FabricCore
import Foundation

/// The machines Fabric may place workloads on, with their prices: the bundled CSV catalog or one named by the
/// `catalog.file` setting.
///
/// The CSV has the header `OfferCatalog.header`; one row is one machine type in one region. Prices are per whole
/// machine per hour in USD; `gpu_memory_gib` is per GPU; `spot_per_hour` is empty where unknown; `source` names
/// where the figures came from and `as_of` (`YYYY-MM-DD`) when. Lines starting with `#` and blank lines are
/// skipped. Parsing is strict: the first bad field fails the whole catalog with its line and column.
public struct OfferCatalog: Sendable, Hashable {
    /// The CSV columns, in order.
    public static let columns = [
        "provider", "region", "machine_type", "vcpus", "memory_gib", "gpu_model", "gpu_count", "gpu_memory_gib",
        "on_demand_per_hour", "spot_per_hour", "source", "as_of",
    ]
    /// The header line every catalog starts with.
    public static let header = columns.joined(separator: ",")
    /// The largest catalog file `load(file:)` reads.
    public static let fileBytesMax = 8 << 20
    /// The most offers one catalog may hold.
    public static let offersMax = 100_000
    /// The longest field, in bytes (sources with commit hashes and notes fit easily).
    public static let fieldBytesMax = 1024
    /// The origin of `bundled`, used in its error messages.
    public static let bundledOrigin = "bundled"

    /// Where the catalog came from: `bundled` or the file path.
    public let origin: String
    /// Every offer, in catalog order.
    public let offers: [Offer]

    /// A catalog of already-validated offers (a live price list, a test fixture).
    public init(origin: String, offers: [Offer]) {
        self.origin = origin
        self.offers = offers
    }

    /// The catalog compiled into Fabric, parsed once. `bundledCSV` holds its text.
    public static let bundled: OfferCatalog = {
        do {
            return try parse(csv: bundledCSV, origin: bundledOrigin)
        } catch {
            preconditionFailure("the bundled offer catalog is invalid: \(error)")
        }
    }()

    /// The catalog in effect: the file named by the `catalog.file` setting, or `bundled` when none is set.
    public static func active(file: String?) throws(FabricError) -> OfferCatalog {
        guard let file, !file.isEmpty else { return bundled }
        return try load(file: file)
    }

    /// Reads and parses a catalog file; errors name the file (and the line and column for bad rows).
    public static func load(file path: String) throws(FabricError) -> OfferCatalog {
        try load(file: path, bytesMax: fileBytesMax)
    }

    static func load(file path: String, bytesMax: Int) throws(FabricError) -> OfferCatalog {
        let field = "catalog.file"
        guard let handle = FileHandle(forReadingAtPath: path) else {
            throw FabricError(.invalidArgument, "\(path): cannot open the catalog file", field: field)
        }
        defer { try? handle.close() }
        let data: Data
        do {
            // One byte past the limit tells an oversized file without reading all of it.
            data = try handle.read(upToCount: bytesMax + 1) ?? Data()
        } catch {
            throw FabricError(
                .invalidArgument, "\(path): cannot read the catalog file: \(error.localizedDescription)",
                field: field)
        }
        guard data.count <= bytesMax else {
            throw FabricError(
                .invalidArgument, "\(path): catalog file is larger than the limit of \(bytesMax) bytes", field: field)
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw FabricError(.invalidArgument, "\(path): catalog file is not UTF-8 text", field: field)
        }
        return try parse(csv: text, origin: path)
    }

    /// Parses catalog CSV. `origin` (a file path, or `bundled`) starts every error message, followed by the
    /// 1-based line and, for a bad field, the column number and name; the error's `field` is the column name.
    public static func parse(csv: String, origin: String) throws(FabricError) -> OfferCatalog {
        var offers: [Offer] = []
        var seen: [String: Int] = [:]  // provider/region/machine type -> line, to reject duplicates
        var sawHeader = false
        var lineNumber = 0
        // A leading byte-order mark (spreadsheet exports) is not part of the header.
        let text = csv.first == "\u{FEFF}" ? csv.dropFirst() : Substring(csv)
        // `\r\n` is one Character in Swift, and a newline: line ends may be LF or CRLF.
        for line in text.split(omittingEmptySubsequences: false, whereSeparator: \.isNewline) {
            lineNumber += 1
            if line.allSatisfy({ $0 == " " || $0 == "\t" }) || line.first == "#" { continue }
            let fields: [String]
            do {
                fields = try CSVRecord.fields(line)
            } catch {
                switch error {
                case .unterminatedQuote(let column):
                    throw fieldError(origin, lineNumber, column - 1, "quoted field has no closing quote")
                case .textAfterQuote(let column):
                    throw fieldError(origin, lineNumber, column - 1, "text after the closing quote")
                }
            }
            guard sawHeader else {
                try checkHeader(fields, origin: origin, line: lineNumber)
                sawHeader = true
                continue
            }
            guard fields.count == columns.count else {
                throw FabricError(
                    .invalidArgument,
                    "\(origin):\(lineNumber): row has \(fields.count) columns, expected \(columns.count)")
            }
            guard offers.count < offersMax else {
                throw FabricError(.invalidArgument, "\(origin):\(lineNumber): more than \(offersMax) offers")
            }
            let offer = try parseRow(fields, origin: origin, line: lineNumber)
            let key = "\(offer.provider)/\(offer.region)/\(offer.machineType)"
            if let first = seen[key] {
                throw fieldError(
                    origin, lineNumber, 2, "duplicate of line \(first): \(offer.machineType) in \(offer.region)")
            }
            seen[key] = lineNumber
            offers.append(offer)
        }
        guard sawHeader else {
            throw FabricError(.invalidArgument, "\(origin): empty catalog: expected the header \(header)")
        }
        guard !offers.isEmpty else { throw FabricError(.invalidArgument, "\(origin): catalog has no offers") }
        return OfferCatalog(origin: origin, offers: offers)
    }

    // MARK: Queries

    /// The providers that have at least one offer, in `ProviderName` order.
    public var providers: [ProviderName] {
        let present = Set(offers.map(\.provider))
        return ProviderName.allCases.filter { present.contains($0.rawValue) }
    }

    /// A provider's offers, in catalog order.
    public func offers(provider: ProviderName) -> [Offer] {
        offers.filter { $0.provider == provider.rawValue }
    }

    /// One summary per region a provider offers machines in, sorted by region name.
    public func regions(provider: ProviderName) -> [RegionSummary] {
        var byRegion: [String: [Offer]] = [:]
        for offer in offers(provider: provider) { byRegion[offer.region, default: []].append(offer) }
        return byRegion.keys.sorted().map { region in
            let list = byRegion[region]!
            let cheapest = list.min(by: Self.cheaperFirst)!
            return RegionSummary(
                region: region, offerCount: list.count, cheapestPerHour: cheapest.onDemandPerHour,
                cheapestMachineType: cheapest.machineType, gpuModels: Set(list.compactMap(\.gpuModel)).sorted())
        }
    }

    /// A provider's offers, in one region or all (`region` nil), cheapest on-demand price first.
    public func machineTypes(provider: ProviderName, region: String? = nil) -> [Offer] {
        offers(provider: provider).filter { region == nil || $0.region == region }.sorted(by: Self.cheaperFirst)
    }

    /// How old a provider's prices are at `now`, or nil when the catalog has no offers from it.
    public func age(provider: ProviderName, now: Timestamp) -> CatalogAge? {
        var oldest: (date: String, ms: Int64)?
        var newest: (date: String, ms: Int64)?
        for offer in offers(provider: provider) {
            guard let ms = CatalogDate.millisecondsSinceEpoch(offer.asOf) else { continue }
            if oldest == nil || ms < oldest!.ms { oldest = (offer.asOf, ms) }
            if newest == nil || ms > newest!.ms { newest = (offer.asOf, ms) }
        }
        guard let oldest, let newest else { return nil }
        func since(_ ms: Int64) -> Duration { max(.zero, now.since(Timestamp(millisecondsSinceEpoch: ms))) }
        return CatalogAge(
            oldestAsOf: oldest.date, newestAsOf: newest.date, oldest: since(oldest.ms),
            newest: since(newest.ms))
    }

    /// `age(provider:now:)` for every provider in the catalog.
    public func age(now: Timestamp) -> [ProviderName: CatalogAge] {
        var result: [ProviderName: CatalogAge] = [:]
        for provider in providers { result[provider] = age(provider: provider, now: now) }
        return result
    }

    /// Cheapest on-demand price first; ties by region, then machine type, so the order is deterministic.
    static func cheaperFirst(_ a: Offer, _ b: Offer) -> Bool {
        if a.onDemandPerHour != b.onDemandPerHour { return a.onDemandPerHour < b.onDemandPerHour }
        if a.region != b.region { return a.region < b.region }
        return a.machineType < b.machineType
    }

    // MARK: Row validation

    static func checkHeader(_ fields: [String], origin: String, line: Int) throws(FabricError) {
        let names = fields.map { $0.trimmingCharacters(in: .whitespaces) }
        for (i, expected) in columns.enumerated() where i >= names.count || names[i] != expected {
            let got = i < names.count ? "\"\(names[i])\"" : "nothing"
            throw FabricError(
                .invalidArgument,
                "\(origin):\(line): bad header: column \(i + 1) should be \(expected), got \(got); the header is "
                    + header, field: expected)
        }
        guard names.count == columns.count else {
            throw FabricError(
                .invalidArgument,
                "\(origin):\(line): bad header: \(names.count) columns, expected \(columns.count); the header is "
                    + header)
        }
    }

    static func parseRow(_ raw: [String], origin: String, line: Int) throws(FabricError) -> Offer {
        let f = raw.map { $0.trimmingCharacters(in: .whitespaces) }
        for (i, value) in f.enumerated() where value.utf8.count > fieldBytesMax {
            throw fieldError(origin, line, i, "longer than \(fieldBytesMax) bytes")
        }
        func fail(_ column: Int, _ message: String) -> FabricError { fieldError(origin, line, column, message) }

        guard let provider = ProviderName(rawValue: f[0]) else {
            let known = ProviderName.allCases.map(\.rawValue).joined(separator: ", ")
            throw fail(0, "unknown provider \"\(f[0])\"; known: \(known)")
        }
        for i in [1, 2] {
            guard !f[i].isEmpty else { throw fail(i, "must not be empty") }
            guard f[i].count <= Limits.nameLengthMax else {
                throw fail(i, "longer than \(Limits.nameLengthMax) characters")
            }
            guard !f[i].contains(where: { $0.isWhitespace }) else { throw fail(i, "must not contain spaces") }
        }
        let vcpus = try positiveInt(f[3], max: Int(Limits.cpuMillisMax / 1000), fail: { fail(3, $0) })
        let memoryGiB = try positiveDecimal(f[4], max: Double(Limits.memoryBytesMax >> 30), fail: { fail(4, $0) })
        let gpuCount = try nonNegativeInt(f[6], max: Limits.gpuCountMax, fail: { fail(6, $0) })
        var gpuModel: String?
        var gpuMemoryGiB: Int?
        if gpuCount == 0 {
            guard f[5].isEmpty else { throw fail(5, "must be empty when gpu_count is 0, got \"\(f[5])\"") }
            guard f[7].isEmpty else { throw fail(7, "must be empty when gpu_count is 0, got \"\(f[7])\"") }
        } else {
            guard !f[5].isEmpty else { throw fail(5, "must name the GPU model when gpu_count is \(gpuCount)") }
            let canonical = GPUModel.canonical(f[5])
            guard GPUModel.memoryGiB[canonical] != nil else {
                let known = GPUModel.memoryGiB.keys.sorted().joined(separator: ", ")
                throw fail(5, "unknown GPU model \"\(f[5])\" (canonical \(canonical)); known: \(known)")
            }
            gpuModel = canonical
            if !f[7].isEmpty {
                gpuMemoryGiB = try positiveInt(f[7], max: 4096, fail: { fail(7, $0) })
            }
        }
        let onDemand = try positiveDecimal(f[8], max: Limits.pricePerHourMax, fail: { fail(8, $0) })
        var spot: Double?
        if !f[9].isEmpty {
            let value = try positiveDecimal(f[9], max: Limits.pricePerHourMax, fail: { fail(9, $0) })
            guard value <= onDemand else {
                throw fail(9, "spot price \(f[9]) is above the on-demand price \(f[8])")
            }
            spot = value
        }
        guard !f[10].isEmpty else { throw fail(10, "must name where the prices came from") }
        guard CatalogDate.millisecondsSinceEpoch(f[11]) != nil else {
            throw fail(11, "\"\(f[11])\" is not a date YYYY-MM-DD (year 2000 or later)")
        }
        return Offer(
            provider: provider.rawValue, region: f[1], machineType: f[2], vcpus: vcpus, memoryGiB: memoryGiB,
            gpuModel: gpuModel, gpuCount: gpuCount, gpuMemoryGiB: gpuMemoryGiB, onDemandPerHour: onDemand,
            spotPerHour: spot, source: f[10], asOf: f[11])
    }

    /// An error for 0-based `column` of `line`: `origin:line: column N name: message`, field = the column name.
    static func fieldError(_ origin: String, _ line: Int, _ column: Int, _ message: String) -> FabricError {
        let name = columns.indices.contains(column) ? columns[column] : "#\(column + 1)"
        return FabricError(.invalidArgument, "\(origin):\(line): column \(column + 1) \(name): \(message)", field: name)
    }

    /// `[-]digits[.digits]`, nothing else (no exponent, no `+`, no leading or trailing dot).
    static func isDecimal(_ s: String) -> Bool {
        var u = Substring(s).utf8[...]
        if u.first == UInt8(ascii: "-") { u = u.dropFirst() }
        let parts = u.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false)
        guard parts.count == 1 || parts.count == 2 else { return false }
        return parts.allSatisfy { !$0.isEmpty && $0.allSatisfy { $0 >= 48 && $0 <= 57 } }
    }

    static func positiveDecimal(_ s: String, max: Double, fail: (String) -> FabricError) throws(FabricError)
        -> Double
    {
        guard !s.isEmpty else { throw fail("must not be empty") }
        guard isDecimal(s), let value = Double(s) else { throw fail("\"\(s)\" is not a number") }
        guard value > 0 else { throw fail("must be greater than zero, got \(s)") }
        guard value <= max else { throw fail("\(s) exceeds the limit of \(max)") }
        return value
    }

    static func nonNegativeInt(_ s: String, max: Int, fail: (String) -> FabricError) throws(FabricError) -> Int {
        guard !s.isEmpty else { throw fail("must not be empty") }
        guard isDecimal(s), !s.contains("."), let value = Int(s) else { throw fail("\"\(s)\" is not an integer") }
        guard value >= 0 else { throw fail("must not be negative, got \(s)") }
        guard value <= max else { throw fail("\(s) exceeds the limit of \(max)") }
        return value
    }

    static func positiveInt(_ s: String, max: Int, fail: (String) -> FabricError) throws(FabricError) -> Int {
        let value = try nonNegativeInt(s, max: max, fail: fail)
        guard value > 0 else { throw fail("must be greater than zero, got \(s)") }
        return value
    }
}

/// One region of one provider in the catalog: how many offers, the cheapest, and the GPU models on offer.
public struct RegionSummary: Sendable, Hashable, Codable {
    public var region: String
    public var offerCount: Int
    /// The lowest on-demand price of any machine in the region, per hour.
    public var cheapestPerHour: Double
    public var cheapestMachineType: String
    /// Canonical GPU model names, sorted; empty for CPU-only regions.
    public var gpuModels: [String]

    public init(
        region: String, offerCount: Int, cheapestPerHour: Double, cheapestMachineType: String, gpuModels: [String]
    ) {
        self.region = region
        self.offerCount = offerCount
        self.cheapestPerHour = cheapestPerHour
        self.cheapestMachineType = cheapestMachineType
        self.gpuModels = gpuModels
    }
}

/// How old one provider's catalog prices are: the oldest and newest `as_of` dates and their ages at some `now`.
public struct CatalogAge: Sendable, Hashable {
    public var oldestAsOf: String
    public var newestAsOf: String
    /// Age of the oldest row (the largest age); zero if the date lies after `now`.
    public var oldest: Duration
    /// Age of the newest row (the smallest age); zero if the date lies after `now`.
    public var newest: Duration

    public init(oldestAsOf: String, newestAsOf: String, oldest: Duration, newest: Duration) {
        self.oldestAsOf = oldestAsOf
        self.newestAsOf = newestAsOf
        self.oldest = oldest
        self.newest = newest
    }

    /// Whole days since the newest row.
    public var newestDays: Int { Int(newest.components.seconds / 86_400) }
}

/// Calendar dates `YYYY-MM-DD` (UTC midnight), as in the catalog's `as_of` column.
public enum CatalogDate {
    /// Milliseconds since the epoch of the date's UTC midnight, or nil unless `date` is a real calendar date
    /// written `YYYY-MM-DD` with a year from 2000.
    public static func millisecondsSinceEpoch(_ date: String) -> Int64? {
        let u = Array(date.utf8)
        guard u.count == 10, u[4] == UInt8(ascii: "-"), u[7] == UInt8(ascii: "-") else { return nil }
        for i in [0, 1, 2, 3, 5, 6, 8, 9] where !(48...57).contains(u[i]) { return nil }
        guard date >= "2000-01-01", let ms = RFC3339.parse(date + "T00:00:00Z") else { return nil }
        // RFC3339.parse accepts day 31 in any month; a round trip rejects 2025-02-30.
        guard RFC3339.format(ms).hasPrefix(date) else { return nil }
        return ms
    }
}
