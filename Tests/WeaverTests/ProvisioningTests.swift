import FabricCore
import FabricLog
import FabricProviders
import FabricStore
import Foundation
import Synchronization
import Testing

@testable import Weaver

/// A stateful in-memory cloud: instances by name (provision is idempotent by name, as the real drivers are),
/// scripted errors per market, and a gate that holds `provision` after the instance exists (a crash window).
actor MemoryCloud: Provider {
    nonisolated let name: ProviderName
    let catalog: [Offer]
    var instances: [String: Instance] = [:]
    var created = 0
    var terminated: [String] = []
    /// Errors `provision` throws, in order, per "region/machineType/spot".
    var script: [String: [ProviderError]] = [:]
    var holdProvision = false
    var provisionCalls = 0

    init(_ name: ProviderName, offers: [Offer]) {
        self.name = name
        self.catalog = offers
    }

    func fail(
        _ region: String, _ type: String, spot: Bool = false, with errors: [ProviderErrorKind],
        retryAfter: Duration? = nil
    ) {
        script["\(region)/\(type)/\(spot)", default: []] += errors.map {
            ProviderError(
                $0, provider: name.rawValue, code: "Scripted", "scripted \($0.rawValue)", retryAfter: retryAfter)
        }
    }
    func hold(_ on: Bool) { holdProvision = on }
    func set(_ instance: String, _ state: InstanceState, exitCode: Int32? = nil) {
        instances[instance]?.state = state
        instances[instance]?.exitCode = exitCode
    }
    /// The instance stays pending, and the driver reports it cannot come up (a pod Unschedulable too long).
    func giveUp(_ instance: String, _ kind: ProviderErrorKind, reason: String) {
        instances[instance]?.provisioningFailure = kind
        instances[instance]?.stateReason = reason
    }
    func drop(_ instance: String) { instances[instance] = nil }
    func plant(_ instance: Instance) { instances[instance.name] = instance }
    var live: [Instance] { instances.values.filter { $0.state != .terminated }.sorted { $0.name < $1.name } }

    /// Offers the "API" reports (nil: the driver falls back to the catalog).
    var liveOffers: [Offer]? = nil
    var liveAt = Timestamp(millisecondsSinceEpoch: 0)
    func report(_ offers: [Offer]?, at: Timestamp) {
        liveOffers = offers
        liveAt = at
    }

    /// An error every call to the "API" (offers, list) throws while set: wrong credentials, an unreachable endpoint.
    var apiDown: ProviderError? = nil
    func breakAPI(_ message: String?) {
        apiDown = message.map { ProviderError(.authFailed, provider: name.rawValue, code: "Scripted", $0) }
    }

    func offers() async throws -> OfferList {
        if let apiDown { throw apiDown }
        if let liveOffers { return OfferList(offers: liveOffers, origin: "live", asOf: liveAt) }
        return OfferList(offers: catalog, origin: "catalog", asOf: Timestamp(millisecondsSinceEpoch: 0))
    }

    func provision(_ r: InstanceRequest) async throws -> Instance {
        provisionCalls += 1
        if let existing = instances[r.name] { return existing }
        let key = "\(r.region)/\(r.machineType)/\(r.spot)"
        if var errors = script[key], !errors.isEmpty {
            let e = errors.removeFirst()
            script[key] = errors
            throw e
        }
        created += 1
        let i = Instance(
            id: "id-\(created)", name: r.name, provider: name.rawValue, region: r.region, machineType: r.machineType,
            spot: r.spot, state: .pending, labels: r.labels)
        instances[r.name] = i
        while holdProvision { try await Task.sleep(for: .milliseconds(5)) }
        return i
    }

    func status(name: String, region: String) async throws -> Instance? { instances[name] }

    func terminate(name: String, region: String) async throws {
        terminated.append(name)
        instances[name]?.state = .terminated
    }

    func list() async throws -> [Instance] {
        if let apiDown { throw apiDown }
        return Array(instances.values)
    }
}

func cpuOffer(_ provider: String, _ region: String, _ type: String, _ price: Double, spot: Double? = nil) -> Offer {
    Offer(
        provider: provider, region: region, machineType: type, vcpus: 4, memoryGiB: 16, gpuModel: nil, gpuCount: 0,
        gpuMemoryGiB: nil, onDemandPerHour: price, spotPerHour: spot, source: "test", asOf: "2026-01-01")
}

/// The workload service with provider drivers and no node: every workload needs a new instance.
struct ProvisioningHarness {
    let dir: String
    let store: SQLiteStore
    let service: WorkloadService
    let sink = MemorySink()
    let clouds: [MemoryCloud]

    init(_ clouds: [MemoryCloud], dir: String? = nil, batchWindow: Duration = .zero) async throws {
        self.dir = dir ?? NSTemporaryDirectory() + "fabric-prov-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: self.dir, withIntermediateDirectories: true)
        store = try await SQLiteStore(path: self.dir + "/fabric.db")
        self.clouds = clouds
        var options = WorkloadServiceOptions()
        options.retryInterval = .milliseconds(50)
        options.persistLanes = 1
        options.providerRetryBase = .milliseconds(5)
        options.instancePollInterval = .milliseconds(20)
        options.reconcileInterval = .milliseconds(100)
        options.machineBatchWindow = batchWindow
        var offers: [Offer] = []
        for c in clouds { offers += c.catalog }
        let view = OfferView(offers: offers, enabledProviders: Set(clouds.map(\.name.rawValue)))
        service = WorkloadService(
            store: store, clock: ManualClock(), ids: SeededIDGenerator(seed: 11),
            logger: Logger(component: "test", level: .debug, sink: sink), options: options, offerView: { view },
            providers: clouds)
        try await service.start()
    }

    func spec(_ name: String, image: String = "img:1", spot: SpotPolicy = .never, restart: RestartPolicy = .never)
        -> WorkloadSpec
    {
        WorkloadSpec(
            name: name, image: image, resources: Resources(cpuMillis: 1000, memoryBytes: 1 << 30),
            placement: PlacementConstraints(spot: spot), restartPolicy: restart)
    }

    /// Polls until the workload satisfies `ok` (or 10 s pass) and returns it.
    func wait(_ id: String, _ what: String, _ ok: (Workload) -> Bool) async throws -> Workload {
        for _ in 0..<1000 {
            let w = try await service.get(id)
            if ok(w) { return w }
            try await Task.sleep(for: .milliseconds(10))
        }
        let w = try await service.get(id)
        Issue.record("\(id) never got \(what): \(w.phase) \(w.status.reason) \(w.status.message ?? "")")
        return w
    }

    func events(_ id: String) async throws -> [String] {
        try await store.events(workloadID: id, afterSeq: 0, limit: 100).map { "\($0.to.rawValue):\($0.reason)" }
    }
}

@Suite(.serialized) struct ProvisioningTests {
    @Test func theCheapestOfferIsProvisionedAndItsInstanceRunsTheWorkload() async throws {
        // RunPod's pod runs the workload itself: the instance's states are the workload's.
        let aws = MemoryCloud(
            .runpod, offers: [cpuOffer("runpod", "r1", "big", 0.40), cpuOffer("runpod", "r1", "small", 0.20)])
        let h = try await ProvisioningHarness([aws])
        let w = try await h.service.submit(h.spec("job"))
        let p = try await h.wait(w.id, "an instance") { $0.status.instance?.id != nil }
        #expect(p.status.placement?.machineType == "small")
        #expect(p.status.instance?.name == WorkloadService.instanceName(w.id, version: 3))
        #expect(await aws.created == 1)
        await aws.set(p.status.instance!.name, .running)
        _ = try await h.wait(w.id, "running") { $0.phase == .running }
        await aws.set(p.status.instance!.name, .terminated, exitCode: 0)
        let done = try await h.wait(w.id, "succeeded") { $0.phase == .succeeded }
        #expect(done.status.exitCode == 0)
        // The final write and the instance's deletion complete in the background (bounded wait, not a timing claim).
        for _ in 0..<500 where try await h.events(w.id).last != "succeeded:Exited" {
            try await Task.sleep(for: .milliseconds(10))
        }
        for _ in 0..<500 where await !aws.terminated.contains(p.status.instance!.name) {
            try await Task.sleep(for: .milliseconds(10))
        }
        #expect(await aws.terminated.contains(p.status.instance!.name))
        #expect(
            try await h.events(w.id) == [
                "pending:Created", "scheduled:Scheduled", "provisioning:Provisioning", "starting:Starting",
                "running:Started", "succeeded:Exited",
            ])
        await h.service.shutdown()
    }

    @Test func capacityAndQuotaErrorsFailOverAcrossThreeProviders() async throws {
        let runpod = MemoryCloud(.runpod, offers: [cpuOffer("runpod", "US-TX-3", "cpu", 0.10)])
        let coreweave = MemoryCloud(.coreweave, offers: [cpuOffer("coreweave", "LGA1", "cpu", 0.15)])
        let aws = MemoryCloud(.aws, offers: [cpuOffer("aws", "us-east-1", "m7i", 0.30)])
        await runpod.fail("US-TX-3", "cpu", with: [.capacityUnavailable])
        await coreweave.fail("LGA1", "cpu", with: [.quotaExceeded])
        let h = try await ProvisioningHarness([runpod, coreweave, aws])
        let w = try await h.service.submit(h.spec("job"))
        let p = try await h.wait(w.id, "an instance") { $0.status.instance?.id != nil }
        #expect(p.status.instance?.provider == "aws")
        #expect(await runpod.created == 0)
        #expect(await coreweave.created == 0)
        #expect(await aws.created == 1)
        let events = try await h.events(w.id)
        #expect(events.filter { $0 == "provisioning:Provisioning" }.count == 3)
        #expect(events.contains("pending:CapacityUnavailable") && events.contains("pending:QuotaExceeded"))
        // Another workload now skips both refusing offers at once.
        let w2 = try await h.service.submit(h.spec("job2"))
        let p2 = try await h.wait(w2.id, "an instance") { $0.status.instance?.id != nil }
        #expect(p2.status.instance?.provider == "aws")
        #expect(try await h.events(w2.id).filter { $0 == "provisioning:Provisioning" }.count == 1)
        await h.service.shutdown()
    }

    @Test func anInstanceItsDriverGivesUpOnFailsOverLikeACapacityError() async throws {
        let cw = MemoryCloud(
            .coreweave, offers: [cpuOffer("coreweave", "LAS1", "a", 0.2), cpuOffer("coreweave", "ORD1", "a", 0.3)])
        let h = try await ProvisioningHarness([cw])
        let w = try await h.service.submit(h.spec("job"))
        let first = try await h.wait(w.id, "an instance") { $0.status.instance?.id != nil }
        #expect(first.status.instance?.region == "LAS1")
        await cw.giveUp(
            first.status.instance!.name, .capacityUnavailable, reason: "Unschedulable: 0/3 nodes are available")
        let second = try await h.wait(w.id, "a second instance") {
            $0.status.instance?.id != nil && $0.status.instance?.name != first.status.instance?.name
        }
        #expect(second.status.instance?.region == "ORD1")
        #expect(try await h.events(w.id).contains("pending:CapacityUnavailable"))
        try await Task.sleep(for: .milliseconds(50))
        #expect(await cw.terminated.contains(first.status.instance!.name))
        await h.service.shutdown()
    }

    @Test func throttlingIsRetriedOnTheSameOffer() async throws {
        let aws = MemoryCloud(.aws, offers: [cpuOffer("aws", "r1", "m", 0.2), cpuOffer("aws", "r1", "n", 0.3)])
        await aws.fail("r1", "m", with: [.rateLimited, .transient], retryAfter: .milliseconds(20))
        let h = try await ProvisioningHarness([aws])
        let w = try await h.service.submit(h.spec("job"))
        let p = try await h.wait(w.id, "an instance") { $0.status.instance?.id != nil }
        #expect(p.status.instance?.machineType == "m")
        #expect(await aws.provisionCalls == 3)
        #expect(await aws.created == 1)
        await h.service.shutdown()
    }

    @Test func aPreemptedSpotWorkloadIsPlacedAgainInAnotherRegion() async throws {
        let aws = MemoryCloud(
            .runpod,
            offers: [cpuOffer("runpod", "r1", "m", 0.5, spot: 0.1), cpuOffer("runpod", "r2", "m", 0.6, spot: 0.2)])
        let h = try await ProvisioningHarness([aws])
        let w = try await h.service.submit(h.spec("job", spot: .required))
        let first = try await h.wait(w.id, "an instance") { $0.status.instance?.id != nil }
        #expect(first.status.instance?.region == "r1")
        await aws.set(first.status.instance!.name, .running)
        _ = try await h.wait(w.id, "running") { $0.phase == .running }
        await aws.set(first.status.instance!.name, .preempted)
        let second = try await h.wait(w.id, "a second instance") {
            $0.status.instance?.id != nil && $0.status.instance?.name != first.status.instance?.name
        }
        #expect(second.status.instance?.region == "r2")
        #expect(second.status.instance?.spot == true)
        #expect(try await h.events(w.id).contains("preempted:Preempted"))
        await h.service.shutdown()
    }

    @Test func deleteTerminatesTheInstance() async throws {
        let aws = MemoryCloud(.k8s, offers: [cpuOffer("k8s", "r1", "m", 0.2)])
        let h = try await ProvisioningHarness([aws])
        let w = try await h.service.submit(h.spec("job"))
        let p = try await h.wait(w.id, "an instance") { $0.status.instance?.id != nil }
        await aws.set(p.status.instance!.name, .running)
        _ = try await h.wait(w.id, "running") { $0.phase == .running }
        _ = try await h.service.delete(w.id)
        _ = try await h.wait(w.id, "deleted") { $0.phase == .deleted }
        #expect(await aws.terminated == [p.status.instance!.name])
        await h.service.shutdown()
    }

    @Test func theReconcilerDeletesOrphansAndLosesVanishedInstances() async throws {
        let aws = MemoryCloud(.runpod, offers: [cpuOffer("runpod", "r1", "m", 0.2)])
        await aws.plant(
            Instance(
                id: "id-x", name: "fabric-orphan", provider: "runpod", region: "r1", machineType: "m", spot: false,
                state: .running))
        let h = try await ProvisioningHarness([aws])
        let w = try await h.service.submit(h.spec("job", restart: .onFailure))
        let p = try await h.wait(w.id, "an instance") { $0.status.instance?.id != nil }
        await aws.set(p.status.instance!.name, .running)
        _ = try await h.wait(w.id, "running") { $0.phase == .running }
        for _ in 0..<200 where !(await aws.terminated.contains("fabric-orphan")) {
            try await Task.sleep(for: .milliseconds(10))
        }
        #expect(await aws.terminated.contains("fabric-orphan"))
        #expect(await !aws.terminated.contains(p.status.instance!.name))
        // The provider loses the workload's instance: lost, then placed again on a new one.
        await aws.drop(p.status.instance!.name)
        let again = try await h.wait(w.id, "a new instance") {
            $0.status.instance?.id != nil && $0.status.instance?.name != p.status.instance?.name
        }
        #expect(again.phase == .provisioning)
        #expect(try await h.events(w.id).contains("lost:Lost"))
        await h.service.shutdown()
    }

    /// weaver dies after the provider made the instance but before the answer was stored: after a restart the
    /// same name is asked for again, and there is exactly one instance.
    @Test func aCrashBetweenProvisionAndCommitMakesOneInstance() async throws {
        let aws = MemoryCloud(.aws, offers: [cpuOffer("aws", "r1", "m", 0.2)])
        await aws.hold(true)
        let first = try await ProvisioningHarness([aws])
        let w = try await first.service.submit(first.spec("job"))
        for _ in 0..<500 where await aws.created == 0 { try await Task.sleep(for: .milliseconds(10)) }
        #expect(await aws.created == 1)
        let stored = try #require(try await first.store.workload(id: w.id))
        #expect(stored.phase == .provisioning)
        #expect(stored.status.instance?.id == nil)  // the answer never reached the store
        // "Restart": a new service on the same store; the first one never hears back.
        await aws.hold(false)
        let second = try await ProvisioningHarness([aws], dir: first.dir)
        let p = try await second.wait(w.id, "an instance") { $0.status.instance?.id != nil }
        #expect(p.status.instance?.name == stored.status.instance?.name)
        #expect(await aws.created == 1)
        #expect(await aws.live.count == 1)
        await second.service.shutdown()
    }

    @Test func aCrashWhileABatchsMachineIsAskedForMakesOneMachineForAllOfIt() async throws {
        let aws = MemoryCloud(.aws, offers: [cpuOffer("aws", "r1", "m", 0.2)])
        await aws.hold(true)
        let first = try await ProvisioningHarness([aws], batchWindow: .milliseconds(300))
        let a = try await first.service.submit(first.spec("a"))
        let b = try await first.service.submit(first.spec("b"))
        for _ in 0..<500 where await aws.created == 0 { try await Task.sleep(for: .milliseconds(10)) }
        #expect(await aws.created == 1)
        let storedA = try #require(try await first.store.workload(id: a.id))
        let storedB = try #require(try await first.store.workload(id: b.id))
        #expect(storedA.phase == .provisioning && storedB.phase == .provisioning)
        #expect(storedA.status.instance?.name == storedB.status.instance?.name)
        // "Restart": the machine is asked for again once, under the same name, for both. (The first service's call
        // stays held, so it never hears back and writes nothing more.)
        let second = try await ProvisioningHarness([aws], dir: first.dir, batchWindow: .milliseconds(300))
        for id in [a.id, b.id] {
            let p = try await second.wait(id, "an instance") { $0.status.instance?.id != nil }
            #expect(p.status.instance?.name == storedA.status.instance?.name)
        }
        #expect(await aws.created == 1)
        #expect(await aws.provisionCalls == 2)  // one before the crash, one after
        await second.service.shutdown()
        await first.service.shutdown()
        await aws.hold(false)
    }
}

struct LiveOffersTests {
    @Test func liveOffersReplaceCatalogRowsAndShowTheirAge() async throws {
        let day: Int64 = 86_400_000
        let clock = ManualClock(Timestamp(millisecondsSinceEpoch: 1_767_225_600_000 + day))  // 2026-01-02
        var small = cpuOffer("aws", "r1", "small", 0.20)
        let big = cpuOffer("aws", "r1", "big", 0.40)
        let catalog = OfferCatalog(origin: "test", offers: [small, big, cpuOffer("gcp", "g1", "n", 0.1)])
        let aws = MemoryCloud(.aws, offers: [])
        small.onDemandPerHour = 0.15
        small.source = ProviderService.liveOrigin
        var extra = cpuOffer("aws", "r2", "new", 0.30)
        extra.source = ProviderService.liveOrigin
        await aws.report([small, extra], at: clock.now().adding(.seconds(-90)))
        let service = ProviderService(
            catalog: catalog,
            entries: [
                .init(name: .aws, enabled: true, hasCredentials: true),
                .init(name: .gcp, enabled: true, hasCredentials: false),
            ],
            clock: clock, drivers: [aws])
        #expect(service.machineTypes(.aws, region: nil).map(\.priceSource) == ["catalog", "catalog"])
        #expect(await service.refreshOffers().isEmpty)

        // The driver's rows replace the provider's catalog rows (it reported no "big": it cannot serve it).
        let types = service.machineTypes(.aws, region: nil)
        #expect(types.map(\.offer.machineType) == ["small", "new"])
        #expect(types.map(\.offer.onDemandPerHour) == [0.15, 0.30])
        #expect(types.map(\.priceSource) == ["live", "live"])
        #expect(types.map(\.priceAgeSeconds) == [90, 90])
        #expect(service.offerView.offers.count == 3)
        #expect(service.statuses().first?.livePricesAt == clock.now().adding(.seconds(-90)))
        let regions = service.regions(.aws)
        #expect(regions.map(\.summary.region) == ["r1", "r2"])
        #expect(service.machineTypes(.gcp, region: nil).map(\.priceSource) == ["catalog"])
        #expect(regions.map(\.liveOffers) == [1, 1])
        #expect(regions.map(\.newestPriceAgeSeconds) == [90, 90])

        // The document flattens the offer and adds where its price came from.
        let json = String(decoding: try FabricJSON.encode(types[0]), as: UTF8.self)
        #expect(json.contains("\"machineType\":\"small\""))
        #expect(json.contains("\"priceSource\":\"live\""))
        #expect(json.contains("\"priceAgeSeconds\":90"))

        // A driver that serves catalog rows: those are shown, as catalog prices with their date.
        await aws.report(nil, at: clock.now())
        #expect(await service.refreshOffers().isEmpty)
        #expect(service.machineTypes(.aws, region: nil).map(\.priceSource) == [])
        #expect(service.statuses().first?.livePricesAt == nil)
    }

    /// A provider whose API fails (bad credentials, unreachable) shows it in its health until a call succeeds,
    /// whether the failing call read offers or listed instances for the reconciler.
    @Test func aFailingAPIShowsInTheProvidersHealth() async throws {
        let clock = ManualClock()
        let aws = MemoryCloud(.aws, offers: [cpuOffer("aws", "r1", "small", 0.2)])
        let providers = ProviderService(
            catalog: OfferCatalog(origin: "test", offers: aws.catalog),
            entries: [.init(name: .aws, enabled: true, hasCredentials: true)], clock: clock, drivers: [aws])
        #expect(await providers.refreshOffers().isEmpty)
        #expect(providers.statuses().map(\.health) == [ProviderStatus.healthOK])

        await aws.breakAPI("AuthFailure: the access key does not exist")
        #expect(await providers.refreshOffers().count == 1)
        let failing = try #require(providers.statuses().first)
        #expect(failing.health == ProviderStatus.healthFailing)
        #expect(failing.lastError == "AuthFailure: the access key does not exist")
        #expect(failing.lastErrorAt == clock.now())
        #expect(String(decoding: try FabricJSON.encode(failing), as: UTF8.self).contains("\"lastError\""))

        await aws.breakAPI(nil)
        #expect(await providers.refreshOffers().isEmpty)
        #expect(providers.statuses().first?.health == ProviderStatus.healthOK)
        #expect(providers.statuses().first?.lastError == nil)

        // The reconciler's listing reports into the same log.
        let dir = NSTemporaryDirectory() + "fabric-health-\(UUID().uuidString.prefix(8))"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = try await SQLiteStore(path: dir + "/fabric.db")
        let service = WorkloadService(
            store: store, clock: clock, ids: SeededIDGenerator(seed: 1),
            logger: Logger(component: "test", level: .error),
            providers: [aws], providerCalls: providers.calls)
        await aws.breakAPI("connection refused")
        await service.reconcileInstances()
        #expect(providers.statuses().first?.lastError == "connection refused")
        await aws.breakAPI(nil)
        await service.reconcileInstances()
        #expect(providers.statuses().first?.health == ProviderStatus.healthOK)
        await store.close()
    }
}

/// A VM provider's machine boots shuttle, which joins as a node named after the instance; the workload then runs
/// there under the node protocol like any other, and the machine is deleted when the workload ends.
struct MachineProvisioningTests {
    @Test func aWorkloadRunsOnTheMachineThatJoinsUnderItsInstanceName() async throws {
        let aws = MemoryCloud(.aws, offers: [cpuOffer("aws", "us-east-1", "m7i.xlarge", 0.20)])
        let h = try await ServiceHarness(cpu: 1000, providers: [aws], offers: aws.catalog)
        // Too big for the 1-CPU local node: a new machine is asked for.
        let w = try await h.service.submit(h.spec("big", ["sh", "-c", "echo on-the-machine"], cpu: 2000))
        let ref = try await h.madeInstance(w.id)
        let instance = try #require(ref)
        #expect(instance.provider == "aws")
        await aws.set(instance.name, .running)
        try await Task.sleep(for: .milliseconds(100))
        #expect(try await h.service.get(w.id).phase == .provisioning)  // running machine, shuttle not joined yet
        // Its shuttle joins under the instance name.
        let machine = try await h.join(instance.name, cpu: 4000, price: 0.2, root: h.dir + "/machine", session: "m-1")
        var done: Workload? = nil
        for _ in 0..<1000 {
            let now = try await h.service.get(w.id)
            if now.phase.isFinal {
                done = now
                break
            }
            try await Task.sleep(for: .milliseconds(10))
        }
        #expect(done?.phase == .succeeded)
        #expect(done?.status.node == instance.name)
        #expect(done?.status.instance == nil)
        let logs = String(decoding: try await h.service.logs(w.id, tailBytes: nil), as: UTF8.self)
        #expect(logs.contains("on-the-machine"))
        for _ in 0..<200 where await aws.terminated.isEmpty { try await Task.sleep(for: .milliseconds(10)) }
        #expect(await aws.terminated == [instance.name])
        await machine.stop()
        await h.host.stop()
        await h.service.shutdown()
    }

    @Test func aWorkloadPlacedInAMachinesFreeRoomKeepsItUntilTheLastOneLeaves() async throws {
        // The machine is deleted when the last workload on it leaves, so whoever is placed in its free room holds it.
        let aws = MemoryCloud(.aws, offers: [cpuOffer("aws", "us-east-1", "m7i.xlarge", 0.20)])
        let h = try await ServiceHarness(cpu: 1000, providers: [aws], offers: aws.catalog)
        let w = try await h.service.submit(h.spec("owner", ["sleep", "60"], cpu: 2000))
        let first = try await h.madeInstance(w.id)
        let ref = try #require(first)
        await aws.set(ref.name, .running)
        let machine = try await h.join(ref.name, cpu: 4000, price: 0.2, root: h.dir + "/m1", session: "m-1")
        _ = try await h.wait(w.id) { $0.phase == .running }
        // 1500m fits in the machine's free 2000m (not on the 1000m local node): cheaper there than a new machine.
        let other = try await h.service.submit(h.spec("other", ["sleep", "60"], cpu: 1500))
        let placed = try await h.wait(other.id) { $0.phase == .running }
        #expect(placed.status.node == ref.name)
        #expect(placed.status.instance?.name == ref.name)
        #expect((placed.status.placement?.pricePerHour ?? 1) < 0.20)
        #expect(await aws.created == 1)
        // The owner leaves: the machine stays for the other.
        _ = try await h.service.delete(w.id)
        _ = try await h.wait(w.id) { $0.phase == .deleted }
        try await Task.sleep(for: .milliseconds(200))
        #expect(await aws.terminated.isEmpty)
        #expect(try await h.service.get(other.id).phase == .running)
        // The last one leaves: its machine is drained (nothing new lands while it goes) and deleted.
        _ = try await h.service.delete(other.id)
        for _ in 0..<500 where await !aws.terminated.contains(ref.name) { try await Task.sleep(for: .milliseconds(10)) }
        #expect(await aws.terminated == [ref.name])
        #expect(try await h.service.node(id: ref.name)?.state == .draining)
        await machine.stop()
        await h.host.stop()
        await h.service.shutdown()
    }

    @Test func aMachineWaitingForItsWorkloadTakesNoOther() async throws {
        // Its room is promised to the workload it was made for until that one starts there.
        let aws = MemoryCloud(.aws, offers: [cpuOffer("aws", "us-east-1", "m7i.xlarge", 0.20)])
        let h = try await ServiceHarness(cpu: 1000, restartBase: .seconds(3600), providers: [aws], offers: aws.catalog)
        let w = try await h.service.submit(h.spec("crashy", ["sh", "-c", "exit 3"], cpu: 3000, restart: .onFailure))
        let ref = try #require(try await h.madeInstance(w.id))
        await aws.set(ref.name, .running)
        let machine = try await h.join(ref.name, cpu: 4000, price: 0.2, root: h.dir + "/m1", session: "m-1")
        // It exits and waits out an hour's backoff to restart there: its 3000m stay promised meanwhile.
        let waiting = try await h.wait(w.id) { $0.phase == .pending && $0.status.attempts == 1 }
        #expect(waiting.status.instance?.name == ref.name)
        let other = try await h.service.submit(h.spec("other", ["sleep", "60"], cpu: 1500))
        let second = try await h.wait(other.id) { $0.status.instance != nil || $0.status.node != nil }
        #expect(second.status.node != ref.name)
        #expect(second.status.instance?.name != ref.name)
        await machine.stop()
        await h.host.stop()
        await h.service.shutdown()
    }

    @Test func workloadsWaitingForMachinesTogetherShareOneWhereThatIsCheaper() async throws {
        // Alone, each 1.5-CPU workload's cheapest machine is a 2-vCPU one at $0.12 (two: $0.24); planned together
        // they fit one 4-vCPU machine at $0.20.
        let large = Offer(
            provider: "aws", region: "us-east-1", machineType: "m7i.large", vcpus: 2, memoryGiB: 8, gpuModel: nil,
            gpuCount: 0, gpuMemoryGiB: nil, onDemandPerHour: 0.12, spotPerHour: nil, source: "test", asOf: "2026-01-01")
        let aws = MemoryCloud(.aws, offers: [cpuOffer("aws", "us-east-1", "m7i.xlarge", 0.20), large])
        let h = try await ServiceHarness(
            cpu: 1000, providers: [aws], offers: aws.catalog, batchWindow: .milliseconds(500))
        let a = try await h.service.submit(h.spec("a", ["sleep", "60"], cpu: 1500))
        let b = try await h.service.submit(h.spec("b", ["sleep", "60"], cpu: 1500))
        let refA = try #require(try await h.madeInstance(a.id))
        let refB = try #require(try await h.madeInstance(b.id))
        #expect(refA.name == refB.name)
        #expect(refA.machineType == "m7i.xlarge")
        #expect(refA.pricePerHour == 0.20)
        #expect(await aws.created == 1)
        // Each carries its share of the machine's price (equal here: alone they would cost the same).
        let placed = [try await h.service.get(a.id), try await h.service.get(b.id)]
        for w in placed {
            #expect(w.phase == .provisioning)
            #expect(abs((w.status.placement?.pricePerHour ?? 0) - 0.10) < 1e-9)
        }
        await aws.set(refA.name, .running)
        let machine = try await h.join(refA.name, cpu: 4000, price: 0.2, root: h.dir + "/m1", session: "m-1")
        for id in [a.id, b.id] {
            let running = try await h.wait(id) { $0.phase == .running }
            #expect(running.status.node == refA.name)
        }
        // One leaves: the machine stays for the other.
        _ = try await h.service.delete(a.id)
        _ = try await h.wait(a.id) { $0.phase == .deleted }
        try await Task.sleep(for: .milliseconds(200))
        #expect(await aws.terminated.isEmpty)
        #expect(try await h.service.get(b.id).phase == .running)
        #expect(try await h.service.node(id: refA.name)?.state == .ready)
        // The last one leaves: the machine goes.
        _ = try await h.service.delete(b.id)
        for _ in 0..<500 where await aws.terminated.isEmpty { try await Task.sleep(for: .milliseconds(10)) }
        #expect(await aws.terminated == [refA.name])
        await machine.stop()
        await h.host.stop()
        await h.service.shutdown()
    }

    @Test func aCrashLoopRestartsOnItsOwnMachineWithoutANewOne() async throws {
        let aws = MemoryCloud(.aws, offers: [cpuOffer("aws", "us-east-1", "m7i.xlarge", 0.20)])
        let h = try await ServiceHarness(cpu: 1000, restartBase: .zero, providers: [aws], offers: aws.catalog)
        let w = try await h.service.submit(h.spec("crashy", ["sh", "-c", "exit 3"], cpu: 2000, restart: .onFailure))
        let first = try await h.madeInstance(w.id)
        let ref = try #require(first)
        await aws.set(ref.name, .running)
        let machine = try await h.join(ref.name, cpu: 4000, price: 0.2, root: h.dir + "/m1", session: "m-1")
        let looping = try await h.wait(w.id) { $0.status.attempts >= 3 }
        #expect(looping.status.instance?.name == ref.name)
        #expect(looping.status.placement?.pricePerHour == 0.20)
        #expect(await aws.created == 1)
        #expect(await aws.terminated.isEmpty)
        // Every attempt started on that machine (the store may trail memory by a write or two).
        var starts: [WorkloadEvent] = []
        for _ in 0..<500 {
            starts = try await h.store.events(workloadID: w.id, afterSeq: 0, limit: 100).filter { $0.to == .starting }
            if starts.count >= 3 { break }
            try await Task.sleep(for: .milliseconds(10))
        }
        #expect(starts.count >= 3)
        // Deleted, its machine goes with it.
        _ = try await h.service.delete(w.id)
        for _ in 0..<500 where await !aws.terminated.contains(ref.name) { try await Task.sleep(for: .milliseconds(10)) }
        #expect(await aws.terminated == [ref.name])
        await machine.stop()
        await h.host.stop()
        await h.service.shutdown()
    }

    @Test func aReclaimedSpotMachineSendsItsWorkloadToAnotherRegion() async throws {
        let aws = MemoryCloud(
            .aws,
            offers: [
                cpuOffer("aws", "r1", "m7i.xlarge", 0.5, spot: 0.1),
                cpuOffer("aws", "r2", "m7i.xlarge", 0.6, spot: 0.2),
            ])
        let h = try await ServiceHarness(cpu: 1000, providers: [aws], offers: aws.catalog)
        var spec = h.spec("long", ["sleep", "60"], cpu: 2000)
        spec.placement.spot = .required
        let w = try await h.service.submit(spec)
        let first = try await h.madeInstance(w.id)
        let ref = try #require(first)
        #expect(ref.region == "r1")
        await aws.set(ref.name, .running)
        let machine = try await h.join(ref.name, cpu: 4000, price: 0.1, root: h.dir + "/m1", session: "m-1")
        for _ in 0..<500 where try await h.service.get(w.id).phase != .running {
            try await Task.sleep(for: .milliseconds(10))
        }
        #expect(try await h.service.get(w.id).phase == .running)
        // The provider takes the spot machine back.
        await aws.set(ref.name, .preempted)
        var second: InstanceRef? = nil
        for _ in 0..<500 {
            second = try await h.service.get(w.id).status.instance
            if let s = second, s.name != ref.name, s.id != nil { break }
            try await Task.sleep(for: .milliseconds(10))
        }
        #expect(second?.region == "r2")
        #expect(second?.spot == true)
        #expect(await h.service.node(id: ref.name)?.state == .draining)
        let events = try await h.store.events(workloadID: w.id, afterSeq: 0, limit: 100).map(\.to)
        #expect(events.contains(.preempted))
        #expect(await aws.terminated.contains(ref.name))
        await machine.stop()
        await h.host.stop()
        await h.service.shutdown()
    }
}

extension ServiceHarness {
    /// Polls until the workload's instance has its provider's ID (bounded) and returns it (nil if it never did).
    func madeInstance(_ id: String) async throws -> InstanceRef? {
        for _ in 0..<500 {
            if let ref = try await service.get(id).status.instance, ref.id != nil { return ref }
            try await Task.sleep(for: .milliseconds(10))
        }
        return try await service.get(id).status.instance
    }
}
