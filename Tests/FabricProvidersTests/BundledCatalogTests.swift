import FabricCore
import Testing

@testable import FabricProviders

/// The bundled catalog: it parses, is large and varied enough, and carries the exact figures of its sources.
@Suite struct BundledCatalogTests {
    let catalog = OfferCatalog.bundled

    func offer(_ provider: ProviderName, _ region: String, _ machineType: String) -> Offer? {
        catalog.offers(provider: provider).first { $0.region == region && $0.machineType == machineType }
    }

    @Test func parsesWithEnoughRowsFromEveryCloudProvider() throws {
        #expect(catalog.origin == "bundled")
        #expect(catalog.offers.count >= 80)
        #expect(catalog.providers == [.runpod, .coreweave, .aws, .gcp])
        for provider in [ProviderName.runpod, .coreweave, .aws, .gcp] {
            let offers = catalog.offers(provider: provider)
            #expect(offers.count >= 20, "\(provider) has \(offers.count) offers")
            #expect(catalog.regions(provider: provider).count >= 3, "\(provider) regions")
            #expect(offers.contains { $0.gpuCount == 0 }, "\(provider) has CPU-only machines")
            #expect(offers.contains { $0.gpuCount > 0 }, "\(provider) has GPU machines")
        }
        // Parsing the exported text again gives the same catalog.
        let again = try OfferCatalog.parse(csv: OfferCatalog.bundledCSV, origin: "bundled")
        #expect(again == catalog)
    }

    @Test func coversTheCommonGPUModels() {
        let models = Set(catalog.offers.compactMap(\.gpuModel))
        for model in ["H100", "H200", "A100-80GB", "A100-40GB", "L4", "L40S", "A10G", "T4", "RTX4090", "RTXA6000"] {
            #expect(models.contains(model), "no \(model) offer")
        }
        #expect(models.allSatisfy { GPUModel.memoryGiB[$0] != nil })
    }

    @Test func everyRowIsConsistent() {
        for o in catalog.offers {
            #expect(o.onDemandPerHour > 0)
            if let spot = o.spotPerHour { #expect(spot <= o.onDemandPerHour, "\(o.machineType) \(o.region)") }
            #expect(o.vcpus > 0 && o.memoryGiB > 0)
            #expect((o.gpuCount == 0) == (o.gpuModel == nil))
            #expect(!o.source.isEmpty)
            #expect(CatalogDate.millisecondsSinceEpoch(o.asOf) != nil)
            // Source snapshots are undated: each row says so.
            #expect(o.source.contains("date unknown"), "\(o.machineType) \(o.region)")
        }
    }

    /// Rows whose numbers are copied straight from a source line.
    @Test(
        arguments: [
            // skypilot-catalog aws/vms.csv@001367d2: p5.48xlarge us-east-1 price 98.32, spot use1-az1 30.326
            (ProviderName.aws, "us-east-1", "p5.48xlarge", 98.32, 30.326 as Double?, "H100", 8, 192),
            // aws/vms.csv: g5.xlarge eu-west-1 price 1.123, spot euw1-az1 0.5084
            (.aws, "eu-west-1", "g5.xlarge", 1.123, 0.5084, "A10G", 1, 4),
            // runpod/vms.csv@0727c2bd: 1x_H100-SXM_SECURE US-TX-3 price 2.99, spot 2.69
            (.runpod, "US-TX-3", "1x_H100-SXM_SECURE", 2.99, 2.69, "H100", 1, 20),
            // runpod/vms.csv: 8x_RTXA6000_SECURE CA-MTL-1 price 3.92, spot 2.64
            (.runpod, "CA-MTL-1", "8x_RTXA6000_SECURE", 3.92, 2.64, "RTXA6000", 8, 32),
            // gcp/vms.csv@017e2502: e2-standard-2 us-central1 price 0.06701, spot 0.02679
            (.gcp, "us-central1", "e2-standard-2", 0.06701, 0.02679, nil, 0, 2),
        ] as [(ProviderName, String, String, Double, Double?, String?, Int, Int)])
    func copiedRowsMatchTheirSource(
        provider: ProviderName, region: String, machineType: String, onDemand: Double, spot: Double?,
        gpuModel: String?, gpuCount: Int, vcpus: Int
    ) throws {
        let o = try #require(offer(provider, region, machineType))
        #expect(o.onDemandPerHour == onDemand)
        #expect(o.spotPerHour == spot)
        #expect(o.gpuModel == gpuModel)
        #expect(o.gpuCount == gpuCount)
        #expect(o.vcpus == vcpus)
    }

    /// Rows Fabric computes from source figures: the arithmetic stated in their source column.
    @Test func computedRowsFollowTheirStatedArithmetic() throws {
        // GCP a2-highgpu-1g us-central1: VM 0.73948 + 1x A100 2.93391; spot 0.29576 + 1.1472.
        let a2 = try #require(offer(.gcp, "us-central1", "a2-highgpu-1g"))
        #expect(abs(a2.onDemandPerHour - (0.73948 + 2.93391)) < 1e-9)
        #expect(abs(a2.spotPerHour! - (0.29576 + 1.1472)) < 1e-9)
        #expect(a2.gpuModel == "A100-40GB")
        // CoreWeave H100 HGX x8: 8 x $4.78 + 64 vCPU x $0.010 + 512 GB x $0.005 = $41.44.
        let h100 = try #require(offer(.coreweave, "LGA1", "H100_NVLINK_80GB-x8"))
        #expect(h100.onDemandPerHour == 41.44)
        #expect(h100.spotPerHour == nil)
        #expect(h100.vcpus == 64 && h100.memoryGiB == 512)
        // CoreWeave's own documented example: 6 AMD Epyc Rome vCPU with 24 GB = $0.18/h.
        let rome = try #require(offer(.coreweave, "ORD1", "amd-epyc-rome-6"))
        #expect(rome.onDemandPerHour == 0.18)
        #expect(rome.memoryGiB == 24)
    }

    @Test func cheapestH100MachinePerProvider() throws {
        // The whole-machine prices make providers comparable: the cheapest single-H100 machine per provider.
        let runpod = catalog.machineTypes(provider: .runpod).first { $0.gpuModel == "H100" }
        #expect(runpod?.machineType == "1x_H100_SECURE")
        #expect(runpod?.onDemandPerHour == 2.39)
        let aws = catalog.machineTypes(provider: .aws, region: "us-east-1").filter { $0.gpuModel == "H100" }
        #expect(aws.map(\.machineType) == ["p5.48xlarge"])
    }
}
