import Foundation
import Testing

@testable import FabricCore

@Suite struct ValidationTests {
    func parse(_ s: String) throws(FabricError) -> WorkloadSpec { try WorkloadSpecParser.parse(Data(s.utf8)) }

    @Test func fullSpecParses() throws {
        let w = try parse(
            """
            {"name":"train-1","image":"ghcr.io/acme/train:1","command":["python","train.py"],"env":{"EPOCHS":"3"},
             "workingDir":"/work","resources":{"cpu":"8","memory":"64Gi","gpu":{"count":2,"type":"h100"}},
             "placement":{"providers":["aws","runpod"],"regions":["us-east-1"],"spot":"required","maxPricePerHour":9.5},
             "restartPolicy":"onFailure","labels":{"team":"ml","acme.io/tier":"gold"}}
            """)
        #expect(w.name == "train-1")
        #expect(w.resources == Resources(cpuMillis: 8000, memoryBytes: 64 << 30, gpu: GPUSpec(count: 2, model: "H100")))
        #expect(w.placement.providers == ["aws", "runpod"])
        #expect(w.placement.spot == .required)
        #expect(w.placement.maxPricePerHour == 9.5)
        #expect(w.restartPolicy == .onFailure)
        #expect(w.labels == ["team": "ml", "acme.io/tier": "gold"])
        #expect(w.env == ["EPOCHS": "3"])
        #expect(w.runtimeKind == .container)
    }

    @Test func defaults() throws {
        let w = try parse(#"{"name":"a","command":["true"]}"#)
        #expect(w.resources == WorkloadSpec.defaultResources)
        #expect(w.restartPolicy == .never)
        #expect(w.placement == .any)
        #expect(w.runtimeKind == .process)
    }

    @Test(arguments: [
        (#"{"name":"Hello","command":["true"]}"#, "name"),
        (#"{"name":"-a","command":["true"]}"#, "name"),
        (#"{"name":"a_b","command":["true"]}"#, "name"),
        ("{\"name\":\"\(String(repeating: "a", count: 64))\",\"command\":[\"true\"]}", "name"),
        (#"{"name":"","command":["true"]}"#, "name"),
        (#"{"command":["true"]}"#, "name"),
        (#"{"name":"a"}"#, "command"),
        (#"{"name":"a","command":[]}"#, "command"),
        (#"{"name":"a","command":"true"}"#, "command"),
        (#"{"name":"a","command":["true", 1]}"#, "command[1]"),
        (#"{"name":"a","command":["true"],"bogus":1}"#, "bogus"),
        (#"{"name":"a","command":["true"],"resources":{"cpu":"-1"}}"#, "resources.cpu"),
        (#"{"name":"a","command":["true"],"resources":{"cpu":"0"}}"#, "resources.cpu"),
        (#"{"name":"a","command":["true"],"resources":{"cpu":"99999999999999999999"}}"#, "resources.cpu"),
        (#"{"name":"a","command":["true"],"resources":{"memory":"64Xi"}}"#, "resources.memory"),
        (#"{"name":"a","command":["true"],"resources":{"memory":"100Ei"}}"#, "resources.memory"),
        (#"{"name":"a","command":["true"],"resources":{"gpu":{"count":17}}}"#, "resources.gpu.count"),
        (#"{"name":"a","command":["true"],"resources":{"gpu":{"count":-1}}}"#, "resources.gpu.count"),
        (#"{"name":"a","command":["true"],"resources":{"gpu":{"count":1.5}}}"#, "resources.gpu.count"),
        (#"{"name":"a","command":["true"],"resources":{"gpu":{"count":1,"type":"H100;rm"}}}"#, "resources.gpu.type"),
        (#"{"name":"a","command":["true"],"resources":{"gpu":{"count":1,"vram":1}}}"#, "resources.gpu.vram"),
        (#"{"name":"a","command":["true"],"resources":{"disk":"1Gi"}}"#, "resources.disk"),
        (#"{"name":"a","command":["true"],"placement":{"spot":"sometimes"}}"#, "placement.spot"),
        (#"{"name":"a","command":["true"],"placement":{"providers":["azure"]}}"#, "placement.providers[0]"),
        (#"{"name":"a","command":["true"],"placement":{"maxPricePerHour":-2}}"#, "placement.maxPricePerHour"),
        (#"{"name":"a","command":["true"],"restartPolicy":"sometimes"}"#, "restartPolicy"),
        (#"{"name":"a","command":["true"],"env":{"1X":"a"}}"#, "env.1X"),
        (#"{"name":"a","command":["true"],"env":{"X":1}}"#, "env.X"),
        (#"{"name":"a","command":["true"],"labels":{"a":"has space"}}"#, "labels.a"),
        (#"{"name":"a","command":["true"],"workingDir":"relative"}"#, "workingDir"),
        (#"[1,2]"#, "body"),
        (#"{"name":"a","command":["true"],"placement":{"providers":[]}}"#, "placement.providers"),
        (#"{"name":"a","command":["true"],"placement":{"regions":[]}}"#, "placement.regions"),
    ])
    func rejectsNamingTheField(body: String, field: String) {
        do {
            _ = try parse(body)
            Issue.record("accepted \(body)")
        } catch {
            #expect(error.code == .invalidArgument)
            #expect(error.field == field)
        }
    }

    /// Each way a field can be wrong says which.
    @Test(arguments: [
        (#""resources":{"cpu":"0.0001"}"#, "CPU must be at least 1m (0.001 of a core), got \"0.0001\""),
        (#""resources":{"memory":"8Ei"}"#, "memory \"8Ei\" exceeds the limit of 64Ti"),
        (
            #""resources":{"memory":"99999999999999999999"}"#,
            "memory \"99999999999999999999\" exceeds the limit of 64Ti"
        ),
        (
            #""resources":{"memory":"12Qi"}"#,
            "invalid memory quantity \"12Qi\": expected e.g. \"64Mi\", \"8Gi\" or \"1G\""
        ),
        (
            #""workingDir":"/"# + String(repeating: "a", count: 4100) + "\"",
            "workingDir is longer than 4096 bytes (PATH_MAX)"
        ),
        (#""workingDir":"/a\u0000b""#, "workingDir contains a NUL character"),
        (#""workingDir":"a/b""#, "workingDir must be an absolute path"),
        (
            #""env":{""# + String(repeating: "A", count: 257) + #"":"x"}"#,
            "environment variable names are at most 256 characters"
        ),
    ])
    func fieldMessages(fragment: String, message: String) {
        do {
            _ = try parse(#"{"name":"a","command":["true"],"# + fragment + "}")
            Issue.record("accepted \(fragment.prefix(60))")
        } catch {
            #expect(error.message == message)
        }
    }

    /// Commas and brackets inside strings are text, not a trailing comma.
    @Test func commasInsideStringsAreText() throws {
        let spec = try parse(#"{"name":"a","command":["echo", ",]", "x\",}"],"env":{"A":",}"}}"#)
        #expect(spec.command == ["echo", ",]", "x\",}"])
    }

    @Test func memoryAboveInt64IsOutOfRangeNotNegative() {
        do {
            _ = try parse(#"{"name":"a","command":["true"],"resources":{"memory":18446744073709551615}}"#)
            Issue.record("accepted")
        } catch {
            #expect(error.field == "resources.memory")
            #expect(error.message == "resources.memory is out of range")
        }
    }

    @Test(arguments: [
        ("1.5", "resources.gpu.count must be a whole number"), ("1e308", "resources.gpu.count is out of range"),
        ("-1e300", "resources.gpu.count is out of range"), ("17", "GPU count must be between 0 and 16, got 17"),
        // Above Int64.max: out of range, not wrapped to a negative count.
        ("18446744073709551615", "resources.gpu.count is out of range"),
        ("9300000000000000000", "resources.gpu.count is out of range"),
        ("9223372036854775807", "GPU count must be between 0 and 16, got 9223372036854775807"),
    ])
    func gpuCountMessages(count: String, message: String) {
        do {
            _ = try parse(#"{"name":"a","command":["true"],"resources":{"gpu":{"count":"# + count + "}}}")
            Issue.record("accepted \(count)")
        } catch {
            #expect(error.message == message)
        }
    }

    @Test(arguments: [
        "", "{", "nul", #"{"name":"a""#, #"{"name":"a" "command":["true"]}"#, #"{"name":"a","command":["true",]}"#,
        #"{"name":"a","command":["true"],}"#, "{\"name\":\"a\",\"command\":[\"true\"]\n,\n}",
    ])
    func malformedJSON(body: String) {
        do {
            _ = try parse(body)
            Issue.record("accepted \(body)")
        } catch {
            #expect(error.code == .invalidArgument)
            #expect(error.field == nil)
        }
    }

    @Test(arguments: [
        ("H100", "H100"), ("nvidia h100", "H100"), ("H100-SXM", "H100"), ("H100_NVLINK_80GB", "H100"),
        ("A100-80GB", "A100-80GB"), ("a100", "A100"), ("RTX_A6000", "RTXA6000"), ("RTX4090", "RTX4090"),
        ("A100_PCIE_80GB", "A100-80GB"), ("NVIDIA A100-SXM4-40GB", "A100-40GB"),
    ])
    func gpuModelCanonical(name: String, canonical: String) {
        #expect(GPUModel.canonical(name) == canonical)
    }

    @Test func phaseTransitions() {
        #expect(Phase.pending.canTransition(to: .scheduled))
        #expect(Phase.running.canTransition(to: .succeeded))
        #expect(Phase.running.canTransition(to: .terminating))
        #expect(!Phase.succeeded.canTransition(to: .running))
        #expect(!Phase.deleted.canTransition(to: .terminating))
        #expect(!Phase.pending.canTransition(to: .running))
        #expect(Phase.lost.canTransition(to: .pending))
    }

    @Test(arguments: [0, 1_800_000_000_123, 951_782_400_000, -86_400_000] as [Int64])
    func rfc3339RoundTrip(ms: Int64) {
        #expect(RFC3339.parse(RFC3339.format(ms)) == ms)
    }

    @Test func rfc3339Known() {
        #expect(RFC3339.format(1_800_000_000_123) == "2027-01-15T08:00:00.123Z")
        #expect(RFC3339.parse("2000-02-29T00:00:00Z") == 951_782_400_000)
    }
}
