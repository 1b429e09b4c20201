// A stateful fake of RunPod's GraphQL endpoint on loopback, after provider-apis.md §3: pods, gpuTypes, capacity
// refusals as HTTP 200 with errors[], 401 for a bad key, podTerminate of an unknown pod as an error on its path,
// and scripted faults keyed by operation. It refuses documents with values written into the query text.
import FabricCore
import FabricHTTP
import Foundation
import Synchronization

/// A pod of the fake account.
struct FakeRunPodPod: Sendable {
    var id: String
    var name: String
    var imageName: String
    var gpuTypeId: String
    var gpuCount: Int
    var cloudType: String
    var dataCenterId: String?
    var env: [String]
    var dockerArgs: String?
    var minVcpuCount: Int?
    var minMemoryInGb: Int?
    var desiredStatus = "RUNNING"
    var interruptible = false
    var bidPerGpu: Double?
    var costPerHr: Double
    var started = false
}

/// A GPU type with per-GPU prices.
struct FakeGPUType: Sendable {
    var id: String
    var displayName: String
    var memoryInGb: Int
    var securePrice: Double
    var communityPrice: Double
    var secureSpotPrice: Double?
    var communitySpotPrice: Double?
}

/// The fake GraphQL server. `start()` it and point `RunPodConfiguration.endpoint` at `endpoint`.
final class FakeRunPod: Sendable {
    struct State {
        var pods: [String: FakeRunPodPod] = [:]
        var nextID = 1
        /// GPUs free per gpuTypeId; a type not listed has no limit.
        var stock: [String: Int] = [:]
        var gpuTypes: [FakeGPUType] = FakeRunPod.defaultGPUTypes
    }

    static let defaultGPUTypes = [
        FakeGPUType(
            id: "NVIDIA H100 80GB HBM3", displayName: "H100 SXM", memoryInGb: 80, securePrice: 2.69,
            communityPrice: 2.39, secureSpotPrice: 2.09, communitySpotPrice: 1.79),
        FakeGPUType(
            id: "NVIDIA GeForce RTX 4090", displayName: "RTX 4090", memoryInGb: 24, securePrice: 0.59,
            communityPrice: 0.34, secureSpotPrice: 0.29, communitySpotPrice: 0.2),
        FakeGPUType(
            id: "NVIDIA A100 80GB PCIe", displayName: "A100 PCIe", memoryInGb: 80, securePrice: 1.49,
            communityPrice: 1.19, secureSpotPrice: nil, communitySpotPrice: nil),
    ]

    /// RunPod's capacity refusal, word for word as third parties recorded it.
    static let noInstances =
        "There are no longer any instances available with the requested specifications. Please refresh and try again."

    let state = Mutex(State())
    let faults = FaultScript()
    let log = RequestLog()
    let apiKey: String
    private let server = Mutex<LoopbackServer?>(nil)

    init(apiKey: String = "rp-key") { self.apiKey = apiKey }

    func start() throws {
        var router = Router()
        router.refusesUnknownQuery = false  // the real API ignores query parameters it does not know
        router.add(middleware: LogMiddleware(log: log))
        router.add(middleware: FaultMiddleware(faults: faults) { r in Self.operation(of: r.body) })
        router.post("/graphql") { [self] in graphql($0) }
        let s = try LoopbackServer(router)
        server.withLock { $0 = s }
    }

    func stop() async {
        let s = server.withLock { $0 }
        await s?.stop()
    }

    var endpoint: String { server.withLock { $0!.baseURL } + "/graphql" }

    // MARK: Test hooks

    /// The container of this pod comes up (runtime with a public SSH port).
    func start(_ name: String) { update(name) { $0.started = true } }

    /// The host reclaims a spot pod: desiredStatus EXITED.
    func interrupt(_ name: String) {
        update(name) {
            $0.desiredStatus = "EXITED"
            $0.started = false
        }
    }

    /// A pod made outside this Fabric.
    func addPod(name: String, env: [String] = []) {
        state.withLock { s in
            let id = "pod\(s.nextID)"
            s.nextID += 1
            s.pods[id] = FakeRunPodPod(
                id: id, name: name, imageName: "someone/else", gpuTypeId: "NVIDIA GeForce RTX 4090", gpuCount: 1,
                cloudType: "SECURE", env: env, costPerHr: 0.59)
        }
    }

    /// Removes a pod behind the driver's back (terminated in the console).
    func remove(_ name: String) { state.withLock { s in s.pods = s.pods.filter { $0.value.name != name } } }

    func pod(named name: String) -> FakeRunPodPod? { state.withLock { s in s.pods.values.first { $0.name == name } } }

    var podCount: Int { state.withLock { $0.pods.count } }

    var requests: [SeenRequest] { log.all }

    /// Operations seen, in order.
    var operations: [String] { log.all.map { Self.operation(of: $0.body) } }

    private func update(_ name: String, _ change: (inout FakeRunPodPod) -> Void) {
        state.withLock { s in
            guard let id = s.pods.first(where: { $0.value.name == name })?.key else { return }
            change(&s.pods[id]!)
        }
    }

    // MARK: GraphQL

    /// The root field a document asks for.
    static func operation(of body: Data) -> String {
        let query = (FakeJSON.object(body)?["query"] as? String) ?? ""
        for op in ["podFindAndDeployOnDemand", "podRentInterruptable", "podTerminate", "gpuTypes", "myself"]
        where query.contains(op) {
            return op
        }
        return query.contains("pod(") ? "pod" : "unknown"
    }

    private func graphql(_ request: Request) -> Response {
        guard request.headers["Authorization"] == "Bearer \(apiKey)" else {
            return FakeJSON.response(["errors": [["message": "Unauthorized"]]], status: 401)
        }
        guard let body = FakeJSON.object(request.body), let query = body["query"] as? String else {
            return FakeJSON.response(["errors": [["message": "Must provide query string."]]], status: 400)
        }
        let variables = body["variables"] as? [String: Any] ?? [:]
        // Values belong in variables: an inline input object means the client spliced them into the text.
        if query.contains("input: {") || query.contains("input:{") {
            return Self.errors("inline input values are not accepted by this fake; use variables", code: "BAD_REQUEST")
        }
        let input = variables["input"] as? [String: Any] ?? [:]
        switch Self.operation(of: request.body) {
        case "podFindAndDeployOnDemand": return create(input, field: "podFindAndDeployOnDemand", spot: false)
        case "podRentInterruptable": return create(input, field: "podRentInterruptable", spot: true)
        case "podTerminate":
            guard let id = input["podId"] as? String else { return Self.missing("podId") }
            return state.withLock { s in
                guard let pod = s.pods.removeValue(forKey: id) else {
                    return FakeJSON.response([
                        "errors": [["message": "Pod not found", "path": ["podTerminate"]]],
                        "data": ["podTerminate": NSNull()],
                    ])
                }
                if s.stock[pod.gpuTypeId] != nil { s.stock[pod.gpuTypeId]! += pod.gpuCount }
                return FakeJSON.response(["data": ["podTerminate": NSNull()]])
            }
        case "pod":
            guard let id = input["podId"] as? String else { return Self.missing("podId") }
            return state.withLock { s in
                let pod: Any = s.pods[id].map(Self.render) ?? NSNull()
                return FakeJSON.response(["data": ["pod": pod]])
            }
        case "myself":
            return state.withLock { s in
                let pods = s.pods.values.sorted { $0.id < $1.id }.map(Self.render)
                return FakeJSON.response(["data": ["myself": ["pods": pods]]])
            }
        case "gpuTypes":
            return state.withLock { s in
                let types: [[String: Any]] = s.gpuTypes.map {
                    [
                        "id": $0.id, "displayName": $0.displayName, "memoryInGb": $0.memoryInGb,
                        "securePrice": $0.securePrice, "communityPrice": $0.communityPrice,
                        "secureSpotPrice": $0.secureSpotPrice ?? NSNull(),
                        "communitySpotPrice": $0.communitySpotPrice ?? NSNull(),
                    ]
                }
                return FakeJSON.response(["data": ["gpuTypes": types]])
            }
        default:
            return Self.errors("Cannot query field on type \"Query\".", code: "GRAPHQL_VALIDATION_FAILED")
        }
    }

    private func create(_ input: [String: Any], field: String, spot: Bool) -> Response {
        for required in ["name", "imageName", "gpuTypeId", "cloudType"] where input[required] as? String == nil {
            return Self.missing(required)
        }
        let gpuTypeId = input["gpuTypeId"] as! String
        let gpuCount = input["gpuCount"] as? Int ?? 1
        let env = (input["env"] as? [[String: String]] ?? []).map { "\($0["key"] ?? "")=\($0["value"] ?? "")" }
        let bid = input["bidPerGpu"] as? Double
        if spot, bid == nil { return Self.missing("bidPerGpu") }
        return state.withLock { s in
            guard let type = s.gpuTypes.first(where: { $0.id == gpuTypeId }) else {
                return Self.errors("Unknown GPU type \(gpuTypeId)", code: "BAD_USER_INPUT", path: field)
            }
            if let free = s.stock[gpuTypeId], free < gpuCount {
                return FakeJSON.response([
                    "errors": [
                        ["message": Self.noInstances, "path": [field], "extensions": ["code": "INTERNAL_SERVER_ERROR"]]
                    ],
                    "data": [field: NSNull()],
                ])
            }
            if s.stock[gpuTypeId] != nil { s.stock[gpuTypeId]! -= gpuCount }
            let id = "pod\(s.nextID)x\(s.nextID * 7919 % 1000)"
            s.nextID += 1
            let perGPU =
                spot ? bid! : (input["cloudType"] as? String == "COMMUNITY" ? type.communityPrice : type.securePrice)
            let pod = FakeRunPodPod(
                id: id, name: input["name"] as! String, imageName: input["imageName"] as! String, gpuTypeId: gpuTypeId,
                gpuCount: gpuCount, cloudType: input["cloudType"] as! String,
                dataCenterId: input["dataCenterId"] as? String, env: env, dockerArgs: input["dockerArgs"] as? String,
                minVcpuCount: input["minVcpuCount"] as? Int, minMemoryInGb: input["minMemoryInGb"] as? Int,
                interruptible: spot, bidPerGpu: bid, costPerHr: perGPU * Double(gpuCount))
            s.pods[id] = pod
            return FakeJSON.response(["data": [field: Self.render(pod)]])
        }
    }

    static func render(_ pod: FakeRunPodPod) -> [String: Any] {
        var json: [String: Any] = [
            "id": pod.id, "name": pod.name, "desiredStatus": pod.desiredStatus, "costPerHr": pod.costPerHr,
            "gpuCount": pod.gpuCount, "imageName": pod.imageName, "env": pod.env,
            "lastStatusChange": "Rented by User: Fri Jan 15 2027 08:00:00 GMT+0000 (Coordinated Universal Time)",
            "machine": ["gpuDisplayName": pod.gpuTypeId.replacingOccurrences(of: "NVIDIA ", with: "")],
        ]
        json["runtime"] =
            pod.started
            ? [
                "uptimeInSeconds": 12,
                "ports": [
                    ["ip": "10.0.0.2", "isIpPublic": false, "privatePort": 8888, "publicPort": 8888, "type": "http"],
                    ["ip": "194.68.245.7", "isIpPublic": true, "privatePort": 22, "publicPort": 22041, "type": "tcp"],
                ],
            ] as [String: Any] : NSNull()
        return json
    }

    static func errors(_ message: String, code: String, path: String? = nil) -> Response {
        var error: [String: Any] = ["message": message, "extensions": ["code": code]]
        if let path { error["path"] = [path] }
        return FakeJSON.response(["errors": [error]])
    }

    static func missing(_ field: String) -> Response {
        errors(
            "Variable \"$input\" got invalid value; Field \"\(field)\" of required type was not provided.",
            code: "BAD_USER_INPUT")
    }

    /// A GraphQL error body, for scripted faults.
    static func errorBody(_ message: String, path: String? = nil, code: String? = nil) -> String {
        var error: [String: Any] = ["message": message]
        if let path { error["path"] = [path] }
        if let code { error["extensions"] = ["code": code] }
        var body: [String: Any] = ["errors": [error]]
        if let path { body["data"] = [path: NSNull()] }
        return FakeJSON.text(body)
    }
}
