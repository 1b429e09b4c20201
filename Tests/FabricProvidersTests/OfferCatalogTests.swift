import FabricCore
import Foundation
import Testing

@testable import FabricProviders

/// A small hand-written catalog; line numbers matter for the error tests built from it.
let sampleCSV = #"""
    \#(OfferCatalog.header)
    # comment lines and blank lines are skipped

    aws,us-east-1,m.large,2,8,,0,,0.10,0.04,test,2025-01-10
    aws,us-east-1,g.xlarge,4,16,A10G,1,24,1.00,,test,2025-01-20
    aws,eu-west-1,g.xlarge,4,16,NVIDIA A10G,1,24,1.20,0.50,test,2025-01-05
    aws,eu-west-1,c.large,2,4,,0,,1.20,,test,2025-01-15
    gcp,us-central1,n.small,2,4,,0,,0.05,,"src, with a comma and ""quotes""",2024-12-31
    runpod,US-TX-3,1x_H100,16,80,h100-80gb,1,80,2.99,2.69,test,2025-02-01
    """#

/// One data row of the sample, to splice into error cases.
let goodRow = "aws,us-east-1,m.large,2,8,,0,,0.10,0.04,test,2025-01-10"

/// The UTC midnight of a `YYYY-MM-DD` date, for fixed `now`s.
func day(_ date: String) -> Timestamp {
    Timestamp(millisecondsSinceEpoch: CatalogDate.millisecondsSinceEpoch(date)!)
}

@Suite struct OfferCatalogParseTests {
    @Test func parsesTheSample() throws {
        let c = try OfferCatalog.parse(csv: sampleCSV, origin: "sample.csv")
        #expect(c.origin == "sample.csv")
        #expect(c.offers.count == 6)
        #expect(c.providers == [.runpod, .aws, .gcp])
        let m = c.offers[0]
        #expect(m.provider == "aws" && m.region == "us-east-1" && m.machineType == "m.large")
        #expect(m.vcpus == 2 && m.memoryGiB == 8 && m.gpuModel == nil && m.gpuCount == 0 && m.gpuMemoryGiB == nil)
        #expect(m.onDemandPerHour == 0.10 && m.spotPerHour == 0.04 && m.source == "test" && m.asOf == "2025-01-10")
        // GPU names are canonicalised.
        #expect(c.offers[2].gpuModel == "A10G")
        #expect(c.offers[5].gpuModel == "H100")
        #expect(c.offers[5].gpuMemoryGiB == 80)
        // Quoted fields keep their commas; doubled quotes become one.
        #expect(c.offers[4].source == "src, with a comma and \"quotes\"")
        #expect(c.offers[4].spotPerHour == nil)
    }

    @Test func acceptsCRLFLineEnds() throws {
        let c = try OfferCatalog.parse(csv: sampleCSV.replacingOccurrences(of: "\n", with: "\r\n"), origin: "crlf")
        #expect(c.offers.count == 6)
        #expect(c.offers[5].asOf == "2025-02-01")
        let bom = try OfferCatalog.parse(csv: "\u{FEFF}" + sampleCSV, origin: "bom")
        #expect(bom.offers == c.offers)
    }

    /// Each case: the CSV, then the expected message prefix (`origin:line: column N name`) and error field.
    @Test(
        arguments: [
            (
                "bad header", "provider,region,machine,vcpus\n\(goodRow)", "bad.csv:1: bad header: column 3",
                "machine_type"
            ),
            (
                "header missing a column", OfferCatalog.columns.dropLast().joined(separator: ",") + "\n\(goodRow)",
                "bad.csv:1: bad header: column 12", "as_of"
            ),
            (
                "unknown provider", "\(OfferCatalog.header)\nazure,eastus,D2,2,8,,0,,0.1,,test,2025-01-01",
                "bad.csv:2: column 1 provider: unknown provider \"azure\"", "provider"
            ),
            (
                "negative price", "\(OfferCatalog.header)\n\(goodRow)\naws,us-east-1,x,2,8,,0,,-1.5,,test,2025-01-01",
                "bad.csv:3: column 9 on_demand_per_hour: must be greater than zero", "on_demand_per_hour"
            ),
            (
                "zero memory", "\(OfferCatalog.header)\naws,us-east-1,x,2,0,,0,,1.5,,test,2025-01-01",
                "bad.csv:2: column 5 memory_gib: must be greater than zero", "memory_gib"
            ),
            (
                "price not a number", "\(OfferCatalog.header)\naws,us-east-1,x,2,8,,0,,1e3,,test,2025-01-01",
                "bad.csv:2: column 9 on_demand_per_hour: \"1e3\" is not a number", "on_demand_per_hour"
            ),
            (
                "impossible date", "\(OfferCatalog.header)\naws,us-east-1,x,2,8,,0,,1.5,,test,2025-02-30",
                "bad.csv:2: column 12 as_of: \"2025-02-30\" is not a date", "as_of"
            ),
            (
                "date format", "\(OfferCatalog.header)\naws,us-east-1,x,2,8,,0,,1.5,,test,01/02/2025",
                "bad.csv:2: column 12 as_of: \"01/02/2025\" is not a date", "as_of"
            ),
            (
                "spot above on-demand", "\(OfferCatalog.header)\naws,us-east-1,x,2,8,,0,,1.5,1.6,test,2025-01-01",
                "bad.csv:2: column 10 spot_per_hour: spot price 1.6 is above the on-demand price 1.5", "spot_per_hour"
            ),
            (
                "too few columns", "\(OfferCatalog.header)\n# note\n\(goodRow)\naws,us-east-1,x,2,8,,0,,1.5,,test",
                "bad.csv:4: row has 11 columns, expected 12", nil
            ),
            (
                "too many columns", "\(OfferCatalog.header)\n\(goodRow),extra",
                "bad.csv:2: row has 13 columns, expected 12", nil
            ),
            (
                "fractional vCPUs", "\(OfferCatalog.header)\naws,us-east-1,x,2.5,8,,0,,1.5,,test,2025-01-01",
                "bad.csv:2: column 4 vcpus: \"2.5\" is not an integer", "vcpus"
            ),
            (
                "unknown GPU", "\(OfferCatalog.header)\naws,us-east-1,x,2,8,Z9000,1,16,1.5,,test,2025-01-01",
                "bad.csv:2: column 6 gpu_model: unknown GPU model \"Z9000\"", "gpu_model"
            ),
            (
                "GPU model without GPUs", "\(OfferCatalog.header)\naws,us-east-1,x,2,8,T4,0,,1.5,,test,2025-01-01",
                "bad.csv:2: column 6 gpu_model: must be empty when gpu_count is 0", "gpu_model"
            ),
            (
                "GPUs without a model", "\(OfferCatalog.header)\naws,us-east-1,x,2,8,,2,,1.5,,test,2025-01-01",
                "bad.csv:2: column 6 gpu_model: must name the GPU model", "gpu_model"
            ),
            (
                "too many GPUs", "\(OfferCatalog.header)\naws,us-east-1,x,2,8,T4,17,16,1.5,,test,2025-01-01",
                "bad.csv:2: column 7 gpu_count: 17 exceeds the limit of 16", "gpu_count"
            ),
            (
                "empty source", "\(OfferCatalog.header)\naws,us-east-1,x,2,8,,0,,1.5,,,2025-01-01",
                "bad.csv:2: column 11 source: must name where the prices came from", "source"
            ),
            (
                "empty region", "\(OfferCatalog.header)\naws,,x,2,8,,0,,1.5,,test,2025-01-01",
                "bad.csv:2: column 2 region: must not be empty", "region"
            ),
            (
                "unterminated quote", "\(OfferCatalog.header)\naws,us-east-1,x,2,8,,0,,1.5,,\"open,2025-01-01",
                "bad.csv:2: column 11 source: quoted field has no closing quote", "source"
            ),
            (
                "duplicate row", "\(OfferCatalog.header)\n\(goodRow)\n\n\(goodRow)",
                "bad.csv:4: column 3 machine_type: duplicate of line 2", "machine_type"
            ),
            ("no rows", "\(OfferCatalog.header)\n# nothing yet\n", "bad.csv: catalog has no offers", nil),
            ("empty text", "", "bad.csv: empty catalog", nil),
        ] as [(String, String, String, String?)])
    func rejectsBadInput(name: String, csv: String, messagePrefix: String, field: String?) {
        do {
            let c = try OfferCatalog.parse(csv: csv, origin: "bad.csv")
            Issue.record("\(name): parsed \(c.offers.count) offers, expected an error")
        } catch {
            #expect(error.code == .invalidArgument, "\(name)")
            #expect(error.message.hasPrefix(messagePrefix), "\(name): \(error.message)")
            #expect(error.field == field, "\(name): field \(error.field ?? "nil")")
        }
    }

    @Test func splitsQuotedFields() throws {
        #expect(try CSVRecord.fields("a,b,,c") == ["a", "b", "", "c"])
        #expect(try CSVRecord.fields("a,\"b,c\",d") == ["a", "b,c", "d"])
        #expect(try CSVRecord.fields("\"say \"\"hi\"\"\",x") == ["say \"hi\"", "x"])
        #expect(try CSVRecord.fields("a,") == ["a", ""])
        #expect(try CSVRecord.fields("\"\"") == [""])
        #expect(throws: CSVRecord.Failure.unterminatedQuote(column: 2)) { try CSVRecord.fields("a,\"b") }
        #expect(throws: CSVRecord.Failure.textAfterQuote(column: 1)) { try CSVRecord.fields("\"a\"b,c") }
    }

    @Test(arguments: [
        ("2025-01-01", true), ("2024-02-29", true), ("2025-02-29", false), ("2025-04-31", false),
        ("2025-13-01", false), ("2025-1-01", false), ("1999-12-31", false), ("2025-01-01T00:00:00Z", false),
    ])
    func validatesDates(date: String, valid: Bool) {
        #expect((CatalogDate.millisecondsSinceEpoch(date) != nil) == valid, "\(date)")
    }
}

@Suite struct OfferCatalogFileTests {
    func temporaryFile(_ text: String) throws -> String {
        let path = FileManager.default.temporaryDirectory
            .appendingPathComponent("fabric-catalog-\(UInt64.random(in: 0...UInt64.max)).csv").path
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    @Test func fileOverrideLoadsAndReplacesTheBundledCatalog() throws {
        let path = try temporaryFile(sampleCSV)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let c = try OfferCatalog.load(file: path)
        #expect(c.origin == path)
        #expect(c.offers.count == 6)
        #expect(c == (try OfferCatalog.parse(csv: sampleCSV, origin: path)))
        // `active` picks the file when the setting names one, the bundled catalog otherwise.
        let active = try OfferCatalog.active(file: path)
        #expect(active.offers.count == 6)
        #expect(active.offers(provider: .coreweave).isEmpty)
        #expect(try OfferCatalog.active(file: nil) == OfferCatalog.bundled)
        #expect(try OfferCatalog.active(file: "") == OfferCatalog.bundled)
    }

    @Test func fileErrorsNameTheFileAndLine() throws {
        let path = try temporaryFile("\(OfferCatalog.header)\n\(goodRow)\naws,us-east-1,x,2,8,,0,,1,2,t,2025-01-01\n")
        defer { try? FileManager.default.removeItem(atPath: path) }
        let error = try #require(throws: FabricError.self) { try OfferCatalog.load(file: path) }
        #expect(error.message.hasPrefix("\(path):3: column 10 spot_per_hour"))
        #expect(error.field == "spot_per_hour")
    }

    @Test func missingFileIsAnError() throws {
        let path = "/nonexistent/fabric/catalog.csv"
        let error = try #require(throws: FabricError.self) { try OfferCatalog.load(file: path) }
        #expect(error.code == .invalidArgument)
        #expect(error.field == "catalog.file")
        #expect(error.message == "\(path): cannot open the catalog file")
        // A directory opens but cannot be read as a file.
        let dir = FileManager.default.temporaryDirectory.path
        let dirError = try #require(throws: FabricError.self) { try OfferCatalog.load(file: dir) }
        #expect(dirError.field == "catalog.file")
        #expect(dirError.message.hasPrefix("\(dir): cannot"))
    }

    @Test func oversizedFileIsRejected() throws {
        let path = try temporaryFile(sampleCSV)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let error = try #require(throws: FabricError.self) { try OfferCatalog.load(file: path, bytesMax: 100) }
        #expect(error.message == "\(path): catalog file is larger than the limit of 100 bytes")
        #expect(try OfferCatalog.load(file: path, bytesMax: sampleCSV.utf8.count).offers.count == 6)
    }
}

@Suite struct OfferCatalogQueryTests {
    let catalog = try! OfferCatalog.parse(csv: sampleCSV, origin: "sample.csv")

    @Test func offersByProviderKeepCatalogOrder() {
        #expect(catalog.offers(provider: .aws).map(\.machineType) == ["m.large", "g.xlarge", "g.xlarge", "c.large"])
        #expect(catalog.offers(provider: .gcp).map(\.region) == ["us-central1"])
        #expect(catalog.offers(provider: .coreweave).isEmpty)
    }

    @Test func regionsSummariseOffers() {
        #expect(
            catalog.regions(provider: .aws) == [
                RegionSummary(
                    region: "eu-west-1", offerCount: 2, cheapestPerHour: 1.20, cheapestMachineType: "c.large",
                    gpuModels: ["A10G"]),
                RegionSummary(
                    region: "us-east-1", offerCount: 2, cheapestPerHour: 0.10, cheapestMachineType: "m.large",
                    gpuModels: ["A10G"]),
            ])
        #expect(
            catalog.regions(provider: .gcp) == [
                RegionSummary(
                    region: "us-central1", offerCount: 1, cheapestPerHour: 0.05, cheapestMachineType: "n.small",
                    gpuModels: [])
            ])
        #expect(catalog.regions(provider: .coreweave).isEmpty)
    }

    @Test func machineTypesAreSortedByPrice() {
        let all = catalog.machineTypes(provider: .aws)
        #expect(all.map(\.onDemandPerHour) == [0.10, 1.00, 1.20, 1.20])
        // Equal prices: region, then machine type.
        #expect(all.map(\.machineType) == ["m.large", "g.xlarge", "c.large", "g.xlarge"])
        let east = catalog.machineTypes(provider: .aws, region: "us-east-1")
        #expect(east.map(\.machineType) == ["m.large", "g.xlarge"])
        #expect(catalog.machineTypes(provider: .aws, region: "ap-south-1").isEmpty)
    }

    @Test func ageIsMeasuredFromTheGivenNow() throws {
        let now = day("2025-03-01")
        let aws = try #require(catalog.age(provider: .aws, now: now))
        #expect(aws.oldestAsOf == "2025-01-05" && aws.newestAsOf == "2025-01-20")
        #expect(aws.oldest == .seconds(55 * 86_400))
        #expect(aws.newest == .seconds(40 * 86_400))
        #expect(aws.newestDays == 40)
        let all = catalog.age(now: now)
        #expect(Set(all.keys) == [.runpod, .aws, .gcp])
        #expect(all[.gcp]?.newest == .seconds(60 * 86_400))
        #expect(all[.runpod]?.newestDays == 28)
        #expect(catalog.age(provider: .coreweave, now: now) == nil)
        // A date after `now` counts as age zero, not negative.
        let early = try #require(catalog.age(provider: .runpod, now: day("2025-01-15")))
        #expect(early.newest == .zero && early.oldest == .zero)
        // Part of a day does not round up.
        #expect(catalog.age(provider: .aws, now: now.adding(.seconds(86_399)))?.newestDays == 40)
    }
}

@Suite struct ProviderStatusTests {
    let catalog = try! OfferCatalog.parse(csv: sampleCSV, origin: "sample.csv")
    let now = day("2025-03-01")

    @Test(arguments: [
        (ProviderName.aws, false, true, ProviderStatus.healthDisabled),
        (.aws, true, false, ProviderStatus.healthNoCredentials),
        (.aws, true, true, ProviderStatus.healthOK),
        (.coreweave, true, true, ProviderStatus.healthNoOffers),
        (.coreweave, false, false, ProviderStatus.healthDisabled),
        (.local, true, true, ProviderStatus.healthOK),
    ])
    func healthFollowsSettingsCredentialsAndCatalog(
        name: ProviderName, enabled: Bool, hasCredentials: Bool, health: String
    ) {
        let status = ProviderStatus.make(
            name: name, enabled: enabled, hasCredentials: hasCredentials, catalog: catalog, now: now)
        #expect(status.name == name)
        #expect(status.enabled == enabled)
        #expect(status.health == health)
    }

    @Test func reportsOfferCountAndCatalogFreshness() {
        let aws = ProviderStatus.make(name: .aws, enabled: true, hasCredentials: false, catalog: catalog, now: now)
        #expect(aws.health == "no credentials: catalog prices only")
        #expect(aws.offerCount == 4)
        #expect(aws.catalogAsOf == "2025-01-20")
        #expect(aws.catalogAgeDays == 40)
        let local = ProviderStatus.make(name: .local, enabled: true, hasCredentials: true, catalog: catalog, now: now)
        #expect(local.offerCount == 0 && local.catalogAsOf == nil && local.catalogAgeDays == nil)
    }

    @Test func encodesWithCamelCaseKeys() throws {
        let status = ProviderStatus.make(name: .runpod, enabled: true, hasCredentials: true, catalog: catalog, now: now)
        let json = String(decoding: try FabricJSON.encode(status), as: UTF8.self)
        #expect(
            json == #"{"catalogAgeDays":28,"catalogAsOf":"2025-02-01","enabled":true,"health":"ok","name":"runpod","#
                + #""offerCount":1}"#)
        let decoded = try JSONDecoder().decode(ProviderStatus.self, from: Data(json.utf8))
        #expect(decoded == status)
        // Absent dates are left out, not written as null.
        let none = ProviderStatus.make(
            name: .coreweave, enabled: false, hasCredentials: false, catalog: catalog, now: now)
        let noneJSON = String(decoding: try FabricJSON.encode(none), as: UTF8.self)
        #expect(noneJSON == #"{"enabled":false,"health":"disabled","name":"coreweave","offerCount":0}"#)
    }
}
