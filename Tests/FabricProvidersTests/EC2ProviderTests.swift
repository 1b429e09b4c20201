// The AWS EC2 driver end to end against a real moto_server, and against a scripted fake (FabricHTTP on loopback)
// for the error codes moto does not produce; the fake also checks every request's SigV4 signature.
import FabricCore
import FabricHTTP
import FabricLog
import Foundation
import Synchronization
import Testing

@testable import FabricProviders

enum EC2Fixture {
    static let credentials = AWSCredentials(accessKeyID: "AKIDFABRICTEST", secretAccessKey: "fabric/test/secret")
    /// An AMI moto knows.
    static let image = "ami-12c6146b"

    static func settings(endpoint: String, pageSize: Int = EC2Provider.describePageSizeDefault) -> AWSSettings {
        AWSSettings(
            credentials: credentials, regions: ["us-east-1", "eu-west-1"], endpoint: endpoint, imageID: image,
            requestTimeout: .seconds(20), describePageSize: pageSize)
    }

    /// The production driver (libcurl, retries, SigV4) pointed at `endpoint`, with sleeps recorded.
    static func driver(
        endpoint: String, pageSize: Int = EC2Provider.describePageSizeDefault,
        sleeps: RecordedSleeps = RecordedSleeps(),
        logger: Logger = memoryLogger(level: .info).0
    ) -> EC2Provider {
        EC2Provider(
            settings: settings(endpoint: endpoint, pageSize: pageSize), logger: logger, clock: ManualClock(),
            random: SplitMix64(seed: 3), sleep: sleeps.sleep)
    }

    static func request(
        _ name: String, region: String = "us-east-1", type: String = "t3.micro", spot: Bool = false,
        workload: String = "wl-1", script: String? = "#!/bin/sh\nexec shuttle --join weaver.example:7070\n"
    ) -> InstanceRequest {
        InstanceRequest(
            name: name, region: region, machineType: type, spot: spot,
            resources: Resources(cpuMillis: 1000, memoryBytes: 1 << 30),
            labels: [InstanceRequest.ownerLabel: "fabric", InstanceRequest.workloadLabel: workload],
            bootstrapScript: script)
    }
}

@Suite("EC2Provider on moto_server", .serialized, .enabled(if: MotoServer.available, MotoServer.missingMessage))
struct EC2MotoTests {
    @Test("provision twice under one name makes one instance; status, list and terminate follow it")
    func lifecycle() async throws {
        try await withMoto { moto in
            let aws = EC2Fixture.driver(endpoint: moto.endpoint)
            let first = try await aws.provision(EC2Fixture.request("fabric-wl-1-2"))
            #expect(first.id.hasPrefix("i-"))
            #expect(first.name == "fabric-wl-1-2")
            #expect(first.provider == "aws")
            #expect(first.region == "us-east-1")
            #expect(first.machineType == "t3.micro")
            #expect(first.spot == false)
            #expect([.pending, .running].contains(first.state))
            #expect(first.labels == [InstanceRequest.ownerLabel: "fabric", InstanceRequest.workloadLabel: "wl-1"])

            let again = try await aws.provision(EC2Fixture.request("fabric-wl-1-2"))
            #expect(again.id == first.id)

            let status = try #require(try await aws.status(name: "fabric-wl-1-2", region: "us-east-1"))
            #expect(status.id == first.id)
            #expect(status.state == .running)
            #expect(status.address != nil)
            #expect(try await aws.status(name: "fabric-nothing", region: "us-east-1") == nil)
            #expect(try await aws.status(name: "fabric-wl-1-2", region: "eu-west-1") == nil)

            let other = try await aws.provision(
                EC2Fixture.request("fabric-wl-2-2", region: "eu-west-1", workload: "wl-2"))
            let listed = try await aws.list()
            #expect(Set(listed.map(\.id)) == [first.id, other.id])
            #expect(Set(listed.map(\.region)) == ["us-east-1", "eu-west-1"])

            try await aws.terminate(name: "fabric-wl-1-2", region: "us-east-1")
            let ended = try #require(try await aws.status(name: "fabric-wl-1-2", region: "us-east-1"))
            #expect(ended.id == first.id)
            #expect([.stopping, .terminated].contains(ended.state))
            try await aws.terminate(name: "fabric-wl-1-2", region: "us-east-1")  // already gone: no error
            try await aws.terminate(name: "fabric-never-made", region: "us-east-1")
            // Provisioning the same name again returns the ended instance, as EC2's ClientToken would.
            #expect(try await aws.provision(EC2Fixture.request("fabric-wl-1-2")).id == first.id)
        }
    }

    @Test("a spot request is launched as spot, and list pages through NextToken")
    func spotAndPaging() async throws {
        try await withMoto { moto in
            let aws = EC2Fixture.driver(endpoint: moto.endpoint, pageSize: 5)
            let spot = try await aws.provision(EC2Fixture.request("fabric-spot-1", type: "g5.xlarge", spot: true))
            #expect(spot.spot)
            #expect(spot.machineType == "g5.xlarge")
            #expect(try await aws.status(name: "fabric-spot-1", region: "us-east-1")?.spot == true)
            for i in 0..<11 { _ = try await aws.provision(EC2Fixture.request("fabric-page-\(i)", workload: "wl-\(i)")) }
            let listed = try await aws.list()
            #expect(listed.count == 12)
            #expect(Set(listed.map(\.name)).count == 12)
        }
    }
}

/// A scripted EC2 endpoint: answers RunInstances with scripted errors, DescribeInstances with nothing, records
/// every request's parameters, and verifies its SigV4 signature with the shared secret.
final class ScriptedEC2: HTTPResponder {
    struct Seen: Sendable {
        var action: String
        var parameters: [String: String]
        var signatureValid: Bool
        var region: String
    }

    private let state = Mutex<(run: [(Int, String)], seen: [Seen])>(([], []))

    /// RunInstances answers, in order, as (HTTP status, EC2 error code); the last one repeats.
    init(run: [(Int, String)]) { state.withLock { $0.run = run } }

    var seen: [Seen] { state.withLock { $0.seen } }
    func count(_ action: String) -> Int { seen.filter { $0.action == action }.count }

    func respond(to request: Request) async throws -> Response {
        let pairs = FormEncoding.decode(String(decoding: request.body, as: UTF8.self))
        let parameters = Dictionary(pairs, uniquingKeysWith: { a, _ in a })
        let (valid, region) = Self.verify(request)
        let action = parameters["Action"] ?? ""
        let answer: (Int, String)? = state.withLock { s in
            s.seen.append(Seen(action: action, parameters: parameters, signatureValid: valid, region: region))
            guard action == "RunInstances" else { return nil }
            let step = s.run.first ?? (200, "")
            if s.run.count > 1 { s.run.removeFirst() }
            return step
        }
        switch action {
        case "DescribeInstances":
            return xml(200, "<DescribeInstancesResponse><reservationSet/></DescribeInstancesResponse>")
        case "RunInstances":
            guard let (status, code) = answer, status != 200 else {
                return xml(
                    200,
                    "<RunInstancesResponse><instancesSet><item><instanceId>i-0fake</instanceId><instanceType>p5.48xlarge</instanceType>"
                        + "<instanceState><code>0</code><name>pending</name></instanceState></item></instancesSet></RunInstancesResponse>"
                )
            }
            return xml(
                status,
                "<Response><Errors><Error><Code>\(code)</Code><Message>scripted \(code)</Message></Error></Errors>"
                    + "<RequestID>r-1</RequestID></Response>")
        default:
            return xml(
                400,
                "<Response><Errors><Error><Code>InvalidAction</Code><Message>?</Message></Error></Errors></Response>")
        }
    }

    private func xml(_ status: Int, _ body: String) -> Response {
        Response(status: status, headers: ["Content-Type": "text/xml"], body: Data(body.utf8))
    }

    /// Recomputes the signature over what arrived (method, path, the signed headers, body) and compares.
    static func verify(_ request: Request) -> (Bool, String) {
        guard let authorization = request.headers["authorization"],
            let credential = authorization.split(separator: " ").first(where: { $0.hasPrefix("Credential=") }),
            let signed = authorization.split(separator: " ").first(where: { $0.hasPrefix("SignedHeaders=") }),
            let amzDate = request.headers["x-amz-date"]
        else { return (false, "") }
        let scope = credential.dropFirst("Credential=".count).dropLast().split(separator: "/")
        guard scope.count == 5, scope[0] == Substring(EC2Fixture.credentials.accessKeyID), scope[3] == "ec2" else {
            return (false, "")
        }
        let region = String(scope[2])
        let names = signed.dropFirst("SignedHeaders=".count).dropLast().split(separator: ";").map(String.init)
        let headers = names.map { ($0, request.headers[$0] ?? "") }
        let canonical = SigV4Signer.canonicalRequest(
            method: request.method.rawValue, path: request.path, query: "", headers: headers,
            payloadHash: Crypto.hex(Crypto.sha256(request.body)))
        let expected = SigV4Signer(credentials: EC2Fixture.credentials, region: region, service: "ec2")
            .signature(canonicalRequest: canonical.text, amzDate: amzDate)
        return (
            authorization.hasSuffix("Signature=\(expected)") && canonical.signedHeaders == names.joined(separator: ";"),
            region
        )
    }
}

@Suite("EC2Provider error mapping")
struct EC2ErrorTests {
    @Test(
        "scripted RunInstances errors map to Fabric's kinds; only throttling and 5xx trouble are retried",
        arguments: [
            (500, "InsufficientInstanceCapacity", ProviderErrorKind.capacityUnavailable, 1),
            (400, "Unsupported", .capacityUnavailable, 1),
            (400, "VcpuLimitExceeded", .quotaExceeded, 1),
            (400, "InstanceLimitExceeded", .quotaExceeded, 1),
            (401, "AuthFailure", .authFailed, 1),
            (403, "RequestExpired", .authFailed, 1),
            (503, "RequestLimitExceeded", .rateLimited, 3),
            (500, "InternalError", .transient, 3),
            (400, "InvalidParameterValue", .invalidRequest, 1),
        ])
    func mapped(_ status: Int, _ code: String, _ kind: ProviderErrorKind, _ attempts: Int) async throws {
        let fake = ScriptedEC2(run: [(status, code)])
        try await withLoopbackServer(fake) { base in
            let sleeps = RecordedSleeps()
            let aws = EC2Provider(
                settings: EC2Fixture.settings(endpoint: base + "/"), logger: memoryLogger().0, clock: ManualClock(),
                random: SplitMix64(seed: 5), retryPolicy: EC2Provider.retryPolicy(attemptsMax: 3), sleep: sleeps.sleep)
            let error = await #expect(throws: ProviderError.self) {
                try await aws.provision(EC2Fixture.request("fabric-wl-9-2", type: "p5.48xlarge"))
            }
            #expect(error?.kind == kind)
            #expect(error?.code == code)
            #expect(error?.provider == "aws")
            #expect(error?.message.contains("scripted \(code)") == true)
            #expect(fake.count("RunInstances") == attempts)
            #expect(sleeps.all.count == attempts - 1)
        }
    }

    @Test(
        "capacity error, then success: the second provision call launches, with ClientToken, tags, user-data and spot")
    func requestShape() async throws {
        let fake = ScriptedEC2(run: [(500, "InsufficientInstanceCapacity"), (200, "")])
        try await withLoopbackServer(fake) { base in
            let aws = EC2Fixture.driver(endpoint: base + "/")
            let request = EC2Fixture.request("fabric-wl-7-4", region: "eu-west-1", type: "p5.48xlarge", spot: true)
            await #expect(throws: ProviderError.self) { try await aws.provision(request) }
            let instance = try await aws.provision(request)
            #expect(instance.id == "i-0fake")
            #expect(instance.name == "fabric-wl-7-4")
            #expect(instance.state == .pending)

            let seen = fake.seen
            #expect(seen.allSatisfy { $0.signatureValid })
            #expect(seen.allSatisfy { $0.region == "eu-west-1" })
            #expect(seen.allSatisfy { $0.parameters["Version"] == "2016-11-15" })
            let run = try #require(seen.last { $0.action == "RunInstances" }?.parameters)
            #expect(run["ClientToken"] == "fabric-wl-7-4")
            #expect(run["ImageId"] == EC2Fixture.image)
            #expect(run["InstanceType"] == "p5.48xlarge")
            #expect(run["MinCount"] == "1" && run["MaxCount"] == "1")
            #expect(run["InstanceMarketOptions.MarketType"] == "spot")
            #expect(run["TagSpecification.1.ResourceType"] == "instance")
            #expect(
                run["TagSpecification.1.Tag.1.Key"] == "Name"
                    && run["TagSpecification.1.Tag.1.Value"] == "fabric-wl-7-4")
            #expect(run["TagSpecification.1.Tag.2.Key"] == InstanceRequest.ownerLabel)
            #expect(run["TagSpecification.1.Tag.2.Value"] == "fabric")
            #expect(run["TagSpecification.1.Tag.3.Key"] == InstanceRequest.workloadLabel)
            #expect(run["TagSpecification.1.Tag.3.Value"] == "wl-1")
            let userData = try #require(run["UserData"].flatMap { Data(base64Encoded: $0) })
            #expect(String(decoding: userData, as: UTF8.self) == request.bootstrapScript)
            let describe = try #require(seen.first { $0.action == "DescribeInstances" }?.parameters)
            #expect(describe["Filter.1.Name"] == "tag:Name" && describe["Filter.1.Value.1"] == "fabric-wl-7-4")
        }
    }

    @Test("requests for unconfigured regions and without an AMI are refused before any call")
    func validation() async throws {
        let fake = ScriptedEC2(run: [(200, "")])
        try await withLoopbackServer(fake) { base in
            let aws = EC2Fixture.driver(endpoint: base + "/")
            let region = await #expect(throws: ProviderError.self) {
                try await aws.provision(EC2Fixture.request("fabric-x", region: "ap-south-1"))
            }
            #expect(region?.kind == .invalidRequest)
            var settings = EC2Fixture.settings(endpoint: base + "/")
            settings.imageID = ""
            let noImage = EC2Provider(
                settings: settings, logger: memoryLogger().0, clock: ManualClock(), random: SplitMix64(seed: 1))
            let image = await #expect(throws: ProviderError.self) {
                try await noImage.provision(EC2Fixture.request("fabric-y"))
            }
            #expect(image?.kind == .invalidRequest)
            settings.imageID = EC2Fixture.image
            settings.credentials = AWSCredentials(accessKeyID: "", secretAccessKey: "")
            let noKeys = EC2Provider(
                settings: settings, logger: memoryLogger().0, clock: ManualClock(), random: SplitMix64(seed: 1))
            let keys = await #expect(throws: ProviderError.self) { try await noKeys.list() }
            #expect(keys?.kind == .authFailed)
            #expect(fake.seen.isEmpty)
        }
    }

    @Test(
        "EC2 codes and statuses to kinds",
        arguments: [
            ("InsufficientInstanceCapacity", 500, ProviderErrorKind.capacityUnavailable),
            ("InsufficientCapacity", 500, .capacityUnavailable), ("Unsupported", 400, .capacityUnavailable),
            ("MaxSpotInstanceCountExceeded", 400, .quotaExceeded), ("UnauthorizedOperation", 403, .authFailed),
            ("SignatureDoesNotMatch", 403, .authFailed), ("RequestLimitExceeded", 503, .rateLimited),
            ("InvalidInstanceID.NotFound", 400, .notFound), ("ServiceUnavailable", 503, .transient),
            ("SomethingNew", 502, .transient), ("SomethingNew", 400, .invalidRequest),
        ])
    func kinds(_ code: String, _ status: Int, _ kind: ProviderErrorKind) {
        #expect(EC2Errors.kind(code: code, status: status) == kind)
    }

    @Test("instance XML: spot interruption is preempted, state codes masked, tags become labels")
    func instanceParsing() throws {
        let xml = """
            <item><instanceId>i-1</instanceId><instanceType>g5.xlarge</instanceType>
            <instanceState><code>304</code><name>terminated</name></instanceState>
            <stateReason><code>Server.SpotInstanceTermination</code><message>Server.SpotInstanceTermination: Spot instance termination</message></stateReason>
            <instanceLifecycle>spot</instanceLifecycle><privateIpAddress>10.0.0.5</privateIpAddress><ipAddress>54.1.2.3</ipAddress>
            <tagSet><item><key>Name</key><value>fabric-a-1</value></item><item><key>fabric-owner</key><value>fabric</value></item></tagSet>
            </item>
            """
        let i = EC2Provider.instance(from: try XMLTree.parse(Data(xml.utf8)), region: "us-west-2")
        #expect(i.id == "i-1")
        #expect(i.name == "fabric-a-1")
        #expect(i.state == .preempted)  // 304 & 0xFF == 48
        #expect(i.spot)
        #expect(i.address == "54.1.2.3")
        #expect(i.labels == ["fabric-owner": "fabric"])
        #expect(i.stateReason?.contains("Spot instance termination") == true)
        #expect(throws: XMLTreeError.self) { try XMLTree.parse(Data("<a><b></a>".utf8)) }
    }

    @Test("long names hash into a 64-character ClientToken; offers are the catalog's AWS rows with its date")
    func tokenAndOffers() async throws {
        #expect(EC2Provider.clientToken("fabric-wl-1-2") == "fabric-wl-1-2")
        let long = String(repeating: "x", count: 80)
        #expect(EC2Provider.clientToken(long).count == 64)
        let aws = EC2Provider(
            settings: EC2Fixture.settings(endpoint: "http://127.0.0.1:1/"), transport: CurlHTTPClient(),
            clock: ManualClock())
        let offers = try await aws.offers()
        #expect(offers.origin == "catalog")
        #expect(!offers.offers.isEmpty)
        #expect(offers.offers.allSatisfy { $0.provider == "aws" && ["us-east-1", "eu-west-1"].contains($0.region) })
        #expect(
            offers.asOf.millisecondsSinceEpoch == CatalogDate.millisecondsSinceEpoch(offers.offers.map(\.asOf).max()!))
    }
}
