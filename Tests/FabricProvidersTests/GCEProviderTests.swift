// The GCP Compute driver, production code paths (libcurl, retries, JWT auth), against the stateful fake GCE
// server on loopback; only the endpoints differ from production.
import FabricCore
import FabricHTTP
import FabricLog
import Foundation
import Synchronization
import Testing

@testable import FabricProviders

/// A fake GCE server started on loopback with a test RSA key made at test time, and a driver pointed at it.
struct GCEHarness {
    static let project = "fabric-test"
    static let email = "fabric@fabric-test.iam.gserviceaccount.com"
    static let zones = ["us-central1-a", "us-central1-b", "europe-west4-a"]
    /// One key pair for the whole run (RSA key generation is the slow part).
    static let keys: (privatePEM: String, publicPEM: String) = try! RSAKeyGenerator.generate(bits: 2048)

    let fake: FakeGCE
    let base: String
    let clock: ManualClock
    let sleeps: RecordedSleeps

    /// The key file JSON Google would issue, with the fake's token endpoint.
    func keyJSON(privatePEM: String = GCEHarness.keys.privatePEM) throws -> Data {
        try JSONSerialization.data(withJSONObject: [
            "type": "service_account", "project_id": Self.project, "private_key_id": "key-1",
            "private_key": privatePEM, "client_email": Self.email, "client_id": "1",
            "token_uri": base + "/token",
        ])
    }

    func settings(pageSize: Int = 500, timeout: Duration = .seconds(10)) throws -> GCPSettings {
        GCPSettings(
            serviceAccountKeyJSON: try keyJSON(), zones: Self.zones, endpoint: base + "/compute/v1/",
            requestTimeout: timeout, listPageSize: pageSize, operationPollInterval: .milliseconds(500))
    }

    func driver(
        pageSize: Int = 500, timeout: Duration = .seconds(10), attempts: Int = 3,
        logger: Logger = memoryLogger(level: .info).0
    ) throws -> GCEProvider {
        try GCEProvider(
            settings: try settings(pageSize: pageSize, timeout: timeout), logger: logger, clock: clock,
            random: SplitMix64(seed: 9), retryPolicy: GCEProvider.retryPolicy(attemptsMax: attempts),
            sleep: sleeps.sleep)
    }
}

func withFakeGCE<T>(_ body: (GCEHarness) async throws -> T) async throws -> T {
    let fake = try FakeGCE(
        project: GCEHarness.project, clientEmail: GCEHarness.email, publicKeyPEM: GCEHarness.keys.publicPEM)
    return try await withLoopbackServer(fake) { base in
        fake.setTokenURI(base + "/token")
        return try await body(
            GCEHarness(fake: fake, base: base, clock: ManualClock(), sleeps: RecordedSleeps()))
    }
}

private func request(
    _ name: String, region: String = "us-central1", type: String = "n2d-highmem-8", spot: Bool = false,
    workload: String = "wl-1"
) -> InstanceRequest {
    InstanceRequest(
        name: name, region: region, machineType: type, spot: spot,
        resources: Resources(cpuMillis: 8000, memoryBytes: 64 << 30),
        labels: [InstanceRequest.ownerLabel: "fabric", InstanceRequest.workloadLabel: workload],
        bootstrapScript: "#!/bin/sh\nexec shuttle --join weaver.example:7070\n")
}

@Suite("GCEProvider against a fake GCE", .serialized)
struct GCEProviderTests {
    @Test("provision inserts with requestId and labels, polls the operation, and a repeat finds the same instance")
    func provisionIdempotent() async throws {
        try await withFakeGCE { h in
            let gcp = try h.driver()
            let first = try await gcp.provision(request("fabric-wl-1-2", spot: true))
            #expect(first.name == "fabric-wl-1-2")
            #expect(first.id == "us-central1-a/fabric-wl-1-2")
            #expect(first.region == "us-central1")
            #expect(first.machineType == "n2d-highmem-8")
            #expect(first.spot)
            #expect(first.state == .pending)
            #expect(first.address?.hasPrefix("34.1.2.") == true)
            #expect(first.labels == [InstanceRequest.ownerLabel: "fabric", InstanceRequest.workloadLabel: "wl-1"])

            let again = try await gcp.provision(request("fabric-wl-1-2", spot: true))
            #expect(again.id == first.id)
            #expect(h.fake.instanceCount == 1)
            #expect(h.fake.inserts.count == 1)

            let insert = try #require(h.fake.inserts.first)
            #expect(insert.zone == "us-central1-a")
            #expect(
                insert.requestID
                    == GCEProvider.requestID(project: GCEHarness.project, zone: "us-central1-a", name: "fabric-wl-1-2"))
            #expect(UUID(uuidString: insert.requestID) != nil)
            let body = try #require(try JSONSerialization.jsonObject(with: insert.body) as? [String: Any])
            #expect(body["name"] as? String == "fabric-wl-1-2")
            #expect(body["machineType"] as? String == "zones/us-central1-a/machineTypes/n2d-highmem-8")
            #expect((body["labels"] as? [String: String])?[InstanceRequest.workloadLabel] == "wl-1")
            let scheduling = try #require(body["scheduling"] as? [String: Any])
            #expect(scheduling["provisioningModel"] as? String == "SPOT")
            let items = (body["metadata"] as? [String: Any])?["items"] as? [[String: String]]
            #expect(items?.first?["key"] == "startup-script")
            #expect(items?.first?["value"]?.contains("exec shuttle") == true)
            #expect(h.fake.requests.contains { $0.contains("/operations/") })
            #expect(h.sleeps.all.contains(.milliseconds(500)))  // one operation poll interval

            let status = try #require(try await gcp.status(name: "fabric-wl-1-2", region: "us-central1"))
            #expect(status.state == .running)
            h.fake.preempt("fabric-wl-1-2", zone: "us-central1-a")
            #expect(try await gcp.status(name: "fabric-wl-1-2", region: "us-central1")?.state == .preempted)
        }
    }

    @Test("a capacity error in the operation moves to the next zone of the region, with a different requestId")
    func capacityFailover() async throws {
        try await withFakeGCE { h in
            h.fake.failInserts(in: "us-central1-a", with: ["ZONE_RESOURCE_POOL_EXHAUSTED"])
            let gcp = try h.driver()
            let instance = try await gcp.provision(request("fabric-wl-3-2"))
            #expect(instance.id == "us-central1-b/fabric-wl-3-2")
            #expect(h.fake.inserts.map(\.zone) == ["us-central1-a", "us-central1-b"])
            #expect(Set(h.fake.inserts.map(\.requestID)).count == 2)
            #expect(h.fake.instances(in: "us-central1-a").isEmpty)

            h.fake.failInserts(
                in: "us-central1-a", with: ["ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS"])
            h.fake.failInserts(in: "us-central1-b", with: ["RESOURCE_POOL_EXHAUSTED"])
            let none = await #expect(throws: ProviderError.self) { try await gcp.provision(request("fabric-wl-4-2")) }
            #expect(none?.kind == .capacityUnavailable)
            #expect(none?.code == "RESOURCE_POOL_EXHAUSTED")
            #expect(none?.message.contains("does not have enough resources") == true)
        }
    }

    @Test("QUOTA_EXCEEDED in the operation is quotaExceeded at once, without trying the other zones")
    func quota() async throws {
        try await withFakeGCE { h in
            h.fake.failInserts(in: "us-central1-a", with: ["QUOTA_EXCEEDED"])
            let gcp = try h.driver()
            let error = await #expect(throws: ProviderError.self) { try await gcp.provision(request("fabric-wl-5-2")) }
            #expect(error?.kind == .quotaExceeded)
            #expect(h.fake.inserts.map(\.zone) == ["us-central1-a"])
        }
    }

    @Test("a lost insert answer is retried with the same requestId: one instance")
    func lostAnswer() async throws {
        try await withFakeGCE { h in
            h.fake.inject(FakeFault(method: "POST", path: "/instances", kind: .applyThenFail(503)))
            let gcp = try h.driver()
            let instance = try await gcp.provision(request("fabric-wl-6-2"))
            #expect(instance.name == "fabric-wl-6-2")
            #expect(h.fake.inserts.count == 2)
            #expect(h.fake.inserts[0].requestID == h.fake.inserts[1].requestID)
            #expect(h.fake.instanceCount == 1)
        }
    }

    @Test("429 with Retry-After is waited out; a 5xx is retried; both then succeed")
    func throttlingAndServerErrors() async throws {
        try await withFakeGCE { h in
            h.fake.inject(
                FakeFault(
                    method: "GET", path: "/instances", kind: .status(429, reason: "rateLimitExceeded", retryAfter: "7"))
            )
            h.fake.inject(FakeFault(method: "POST", path: "/instances", kind: .status(500, reason: "backendError")))
            let gcp = try h.driver()
            let instance = try await gcp.provision(request("fabric-wl-7-2"))
            #expect(instance.name == "fabric-wl-7-2")
            #expect(h.sleeps.all.contains(.seconds(7)))
            #expect(h.fake.requests.filter { $0.hasPrefix("POST") && $0.hasSuffix("/instances") }.count == 2)
            #expect(h.fake.instanceCount == 1)
        }
    }

    @Test("throttling that outlasts the retries is rateLimited: 403 rateLimitExceeded and 429 with its Retry-After")
    func rateLimited() async throws {
        try await withFakeGCE { h in
            let gcp = try h.driver(attempts: 2)
            for _ in 0..<2 {
                h.fake.inject(
                    FakeFault(method: "GET", path: "/instances", kind: .status(403, reason: "rateLimitExceeded")))
            }
            let forbidden = await #expect(throws: ProviderError.self) { try await gcp.list() }
            #expect(forbidden?.kind == .rateLimited)
            #expect(forbidden?.code == "rateLimitExceeded")

            h.fake.inject(
                FakeFault(
                    method: "GET", path: "/instances",
                    kind: .status(429, reason: "rateLimitExceeded", retryAfter: "120")))
            let throttled = await #expect(throws: ProviderError.self) { try await gcp.list() }
            #expect(throttled?.kind == .rateLimited)
            #expect(throttled?.retryAfter == .seconds(120))

            h.fake.inject(FakeFault(method: "GET", path: "/instances", kind: .status(403, reason: "forbidden")))
            let denied = await #expect(throws: ProviderError.self) { try await gcp.list() }
            #expect(denied?.kind == .authFailed)
        }
    }

    @Test("malformed JSON and slow answers are transient")
    func malformedAndSlow() async throws {
        try await withFakeGCE { h in
            let gcp = try h.driver(timeout: .milliseconds(400), attempts: 1)
            _ = try await gcp.provision(request("fabric-wl-8-2"))
            h.fake.inject(FakeFault(method: "GET", path: "/instances/fabric-wl-8-2", kind: .malformedJSON))
            let malformed = await #expect(throws: ProviderError.self) {
                try await gcp.status(name: "fabric-wl-8-2", region: "us-central1")
            }
            #expect(malformed?.kind == .transient)
            #expect(malformed?.code == "MalformedResponse")

            h.fake.inject(FakeFault(method: "GET", path: "/instances/fabric-wl-8-2", kind: .slow(.seconds(2))))
            let slow = await #expect(throws: ProviderError.self) {
                try await gcp.status(name: "fabric-wl-8-2", region: "us-central1")
            }
            #expect(slow?.kind == .transient)
            #expect(slow?.code == "timeout")
            #expect(try await gcp.status(name: "fabric-wl-8-2", region: "us-central1")?.name == "fabric-wl-8-2")
        }
    }

    @Test("terminate deletes and polls; an instance already gone is success; status is then nil")
    func terminate() async throws {
        try await withFakeGCE { h in
            let gcp = try h.driver()
            _ = try await gcp.provision(request("fabric-wl-9-2", region: "europe-west4"))
            try await gcp.terminate(name: "fabric-wl-9-2", region: "europe-west4")
            #expect(h.fake.instanceCount == 0)
            #expect(try await gcp.status(name: "fabric-wl-9-2", region: "europe-west4") == nil)
            try await gcp.terminate(name: "fabric-wl-9-2", region: "europe-west4")
            try await gcp.terminate(name: "fabric-wl-9-2", region: "europe-west4-a")
        }
    }

    @Test("list filters by the owner label and pages with pageToken across zones")
    func list() async throws {
        try await withFakeGCE { h in
            let gcp = try h.driver(pageSize: 2)
            for i in 0..<5 { _ = try await gcp.provision(request("fabric-list-\(i)", workload: "wl-\(i)")) }
            _ = try await gcp.provision(request("fabric-list-eu", region: "europe-west4"))
            h.fake.plant(
                FakeInstance(name: "someone-elses", status: "RUNNING", labels: ["team": "ml"]), zone: "us-central1-a")
            let listed = try await gcp.list()
            #expect(
                listed.map(\.name).sorted() == [
                    "fabric-list-0", "fabric-list-1", "fabric-list-2", "fabric-list-3", "fabric-list-4",
                    "fabric-list-eu",
                ])
            #expect(
                h.fake.requests.filter { $0.hasSuffix("us-central1-a/instances") && $0.hasPrefix("GET") }.count == 3)
        }
    }

    @Test("the token is fetched once, cached, refreshed 5 minutes before expiry, and dropped after a 401")
    func tokenCache() async throws {
        try await withFakeGCE { h in
            let gcp = try h.driver()
            _ = try await gcp.list()
            _ = try await gcp.list()
            #expect(h.fake.tokenRequests == 1)
            h.clock.advance(by: .seconds(3599 - 301))
            _ = try await gcp.list()
            #expect(h.fake.tokenRequests == 1)
            h.clock.advance(by: .seconds(2))  // now within 5 minutes of expiry
            _ = try await gcp.list()
            #expect(h.fake.tokenRequests == 2)
            h.fake.inject(FakeFault(method: "GET", path: "/instances", kind: .status(401, reason: "authError")))
            _ = try await gcp.list()
            #expect(h.fake.tokenRequests == 3)
            #expect(h.fake.rejectedAssertions == 0)
        }
    }

    @Test("a key the token endpoint does not know is authFailed; a key file without a key is refused at start")
    func badKey() async throws {
        try await withFakeGCE { h in
            let stranger = try RSAKeyGenerator.generate(bits: 2048)
            var settings = try h.settings()
            settings.serviceAccountKeyJSON = try h.keyJSON(privatePEM: stranger.privatePEM)
            let gcp = try GCEProvider(
                settings: settings, logger: memoryLogger().0, clock: h.clock, random: SplitMix64(seed: 1),
                sleep: h.sleeps.sleep)
            let error = await #expect(throws: ProviderError.self) { try await gcp.list() }
            #expect(error?.kind == .authFailed)
            #expect(error?.code == "invalid_grant")
            #expect(h.fake.rejectedAssertions == 1)

            settings.serviceAccountKeyJSON = Data(#"{"client_email":"x@y","private_key":"nope","project_id":"p"}"#.utf8)
            #expect(throws: ProviderError.self) {
                try GCEProvider(
                    settings: settings, logger: memoryLogger().0, clock: h.clock, random: SplitMix64(seed: 1))
            }
        }
    }
}

@Suite("GCE rules")
struct GCERuleTests {
    @Test("requestId is a deterministic UUID per project, zone and name")
    func requestID() {
        let a = GCEProvider.requestID(project: "p", zone: "us-central1-a", name: "fabric-x-1")
        #expect(a == GCEProvider.requestID(project: "p", zone: "us-central1-a", name: "fabric-x-1"))
        #expect(a != GCEProvider.requestID(project: "p", zone: "us-central1-b", name: "fabric-x-1"))
        #expect(a != GCEProvider.requestID(project: "p", zone: "us-central1-a", name: "fabric-x-2"))
        #expect(UUID(uuidString: a)?.uuidString.lowercased() == a)
        #expect(Array(a)[14] == "5")
    }

    @Test(
        "names and labels",
        arguments: [
            ("fabric-wl-1-2", true), ("Fabric", false), ("1abc", false), ("abc-", false),
            (String(repeating: "a", count: 64), false),
        ])
    func names(_ name: String, _ valid: Bool) {
        #expect(GCEProvider.isValidName(name) == valid)
    }

    @Test("label text is made GCE-safe")
    func labels() {
        #expect(GCEProvider.labelText("WL-ABC.1", isKey: false) == "wl-abc_1")
        #expect(GCEProvider.labelText("9key", isKey: true) == "l9key")
        #expect(GCEProvider.labelText(String(repeating: "x", count: 80), isKey: false).count == 63)
        #expect(GCEProvider.region(ofZone: "europe-west4-a") == "europe-west4")
    }

    @Test("operation errors map to kinds")
    func operationErrors() throws {
        func op(_ code: String, _ http: Int?) -> GCEOperation {
            GCEOperation(
                name: "op", operationType: "insert", status: "DONE", httpErrorStatusCode: http,
                error: .init(errors: [.init(code: code, message: "m")]))
        }
        #expect(GCEErrors.error(of: op("ZONE_RESOURCE_POOL_EXHAUSTED", 503), zone: "z")?.kind == .capacityUnavailable)
        #expect(GCEErrors.error(of: op("QUOTA_EXCEEDED", 403), zone: "z")?.kind == .quotaExceeded)
        #expect(GCEErrors.error(of: op("INTERNAL_ERROR", 500), zone: "z")?.kind == .transient)
        #expect(GCEErrors.error(of: op("INVALID_FIELD_VALUE", 400), zone: "z")?.kind == .invalidRequest)
        #expect(GCEErrors.error(of: GCEOperation(name: "op", status: "DONE"), zone: "z") == nil)
        let stockout = HTTPResponse(
            status: 503,
            body: Data(
                #"{"error":{"code":503,"message":"The zone 'projects/p/zones/z' does not have enough resources available to fulfill the request.","errors":[{"reason":"resourceExhausted"}]}}"#
                    .utf8))
        #expect(
            GCEErrors.error(from: stockout, what: "POST", now: Timestamp(millisecondsSinceEpoch: 0)).kind
                == .capacityUnavailable)
        #expect(GCEProvider.retryPolicy().isRetryableResponse?(stockout) == false)
    }
}
