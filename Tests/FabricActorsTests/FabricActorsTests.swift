import Distributed
import FabricCore
import Foundation
import Testing

@testable import FabricActors

/// The same behaviour on both actor systems: LocalActorSystem (loopback) and NATSActorSystem (a real nats-server).
@Suite(.serialized) struct ActorSystemTests {
    @Test("every distributed method round-trips its arguments and result", arguments: SystemKind.allCases)
    func argumentsRoundTrip(kind: SystemKind) async throws {
        try await withSystems(kind) { s, c in
            try await Self.argumentsRoundTripBody(s, c)
        }
    }

    @Test("calls through a resolved reference always go through the codec", arguments: SystemKind.allCases)
    func codecIsAlwaysUsed(kind: SystemKind) async throws {
        try await withSystems(kind) { s, c in
            try await Self.codecIsAlwaysUsedBody(s, c)
        }
    }

    @Test(
        "a call past its deadline fails with deadlineExceeded and the system stays usable",
        arguments: SystemKind.allCases)
    func deadline(kind: SystemKind) async throws {
        try await withSystems(kind, settings: ActorSystemSettings(callTimeout: .seconds(1))) { s, c in
            try await Self.deadlineBody(s, c)
        }
    }

    @Test("errors thrown remotely arrive typed", arguments: SystemKind.allCases)
    func remoteErrors(kind: SystemKind) async throws {
        try await withSystems(kind) { s, c in
            try await Self.remoteErrorsBody(s, c)
        }
    }

    @Test("calling an actor nobody serves fails fast", arguments: SystemKind.allCases)
    func unknownActor(kind: SystemKind) async throws {
        try await withSystems(kind) { s, c in
            try await Self.unknownActorBody(s, c)
        }
    }

    @Test(
        "a deallocated actor stops being served; a dropped proxy does not unregister it", arguments: SystemKind.allCases
    )
    func actorLifetime(kind: SystemKind) async throws {
        try await withSystems(kind) { s, c in
            try await Self.actorLifetimeBody(s, c)
        }
    }

    @Test("well-known names map to one subject each and cannot be taken twice", arguments: SystemKind.allCases)
    func namedActors(kind: SystemKind) async throws {
        try await withSystems(kind) { s, c in
            try await Self.namedActorsBody(s, c)
        }
    }

    @Test("an actor calls another actor on another node", arguments: SystemKind.allCases)
    func nestedCalls(kind: SystemKind) async throws {
        try await withSystems(kind) { s, c in
            try await Self.nestedCallsBody(s, c)
        }
    }

    @Test(
        "in-flight calls are bounded: extra callers queue, beyond the queue they fail fast",
        arguments: SystemKind.allCases)
    func boundedInFlight(kind: SystemKind) async throws {
        let settings = ActorSystemSettings(callTimeout: .seconds(5), inFlightCallsMax: 2, queuedCallsMax: 1)
        try await withSystems(kind, settings: settings) { s, c in
            try await Self.boundedInFlightBody(s, c)
        }
    }

    @Test("a recipient refuses calls beyond its inbound limit", arguments: SystemKind.allCases)
    func inboundLimit(kind: SystemKind) async throws {
        try await withSystems(kind, settings: ActorSystemSettings(inboundCallsMax: 1)) { s, c in
            try await Self.inboundLimitBody(s, c)
        }
    }

    @Test("a cancelled caller stops waiting at once", arguments: SystemKind.allCases)
    func cancellation(kind: SystemKind) async throws {
        try await withSystems(kind) { s, c in
            try await Self.cancellationBody(s, c)
        }
    }

    @Test(
        "a system that shut down refuses calls and answers the calls it was executing", arguments: SystemKind.allCases)
    func shutdownMidCall(kind: SystemKind) async throws {
        try await withSystems(kind) { s, c in
            try await Self.shutdownMidCallBody(s, c)
        }
    }

    // MARK: bodies

    static func argumentsRoundTripBody(_ serving: FabricActorSystem, _ calling: FabricActorSystem) async throws {
        let (local, remote) = try await counter(on: serving, from: calling)
        defer { withExtendedLifetime(local) {} }
        #expect(try await remote.add(5) == 5)
        #expect(try await remote.add(-2) == 3)
        #expect(try await remote.get() == 3)
        try await remote.reset()
        #expect(try await remote.get() == 0)
        #expect(try await remote.echo("héllo, 世界 \"quoted\" \n") == "héllo, 世界 \"quoted\" \n")
        #expect(try await remote.echo("") == "")
        #expect(try await remote.reversed([1, 2, 3, Int.max, Int.min]) == [Int.min, Int.max, 3, 2, 1])
        #expect(try await remote.reversed([]) == [])
        let shape = Shape(
            name: "tri", corners: [Point(x: 0, y: 0.5), Point(x: 3, y: -1.25)], tags: ["a": 1, "b": 2],
            note: nil)
        let moved = try await remote.translate(shape, dx: 1, dy: 0.25)
        #expect(
            moved
                == Shape(
                    name: "tri", corners: [Point(x: 1, y: 0.75), Point(x: 4, y: -1.0)],
                    tags: ["a": 1, "b": 2], note: nil))
        #expect(try await remote.describe(7) == "n=7")
        #expect(try await remote.describe(nil) == nil)
        #expect(
            try await remote.mix(-8, UInt64.max, true, 2.5, ["x": [1, 2], "a": []])
                == "-8 18446744073709551615 true 2.5 a:[],x:[1, 2]")
        #expect(try await remote.sleep(milliseconds: 1) == 1)
    }

    static func codecIsAlwaysUsedBody(_ serving: FabricActorSystem, _ calling: FabricActorSystem) async throws {
        let (local, remote) = try await counter(on: serving, from: calling)
        defer { withExtendedLifetime(local) {} }
        // `scratch` is not part of the Codable form: it only survives a call that skips the codec.
        #expect(try await local.pad(Scratchpad(kept: 1, scratch: 9)) == Scratchpad(kept: 1, scratch: 9))
        #expect(try await remote.pad(Scratchpad(kept: 1, scratch: 9)) == Scratchpad(kept: 1, scratch: 0))
        // A proxy on the serving system itself also goes through the transport.
        let selfProxy = try Counter.resolve(id: local.id, using: serving)
        #expect(try await selfProxy.pad(Scratchpad(kept: 2, scratch: 9)) == Scratchpad(kept: 2, scratch: 0))
    }

    static func deadlineBody(_ serving: FabricActorSystem, _ calling: FabricActorSystem) async throws {
        let (local, remote) = try await counter(on: serving, from: calling)
        defer { withExtendedLifetime(local) {} }
        let (error, elapsed) = await failure { try await remote.sleep(milliseconds: 3000) }
        #expect(callCode(error) == .deadlineExceeded)
        #expect(elapsed >= .milliseconds(950))
        #expect(elapsed < .milliseconds(2500))
        #expect(try await remote.add(1) == 1)

        // A task-local override, shorter and longer than the system's 1 s deadline.
        let (short, shortElapsed) = await failure {
            try await ActorCall.$timeout.withValue(.milliseconds(100)) {
                try await remote.sleep(milliseconds: 2000)
            }
        }
        #expect(callCode(short) == .deadlineExceeded)
        #expect(shortElapsed < .milliseconds(900))
        let long = try await ActorCall.$timeout.withValue(.seconds(5)) {
            try await remote.sleep(milliseconds: 1500)
        }
        #expect(long == 1500)
        #expect(try await remote.add(1) == 2)
    }

    static func remoteErrorsBody(_ serving: FabricActorSystem, _ calling: FabricActorSystem) async throws {
        let (local, remote) = try await counter(on: serving, from: calling)
        defer { withExtendedLifetime(local) {} }
        let (error, _) = await failure { try await remote.fail(field: "gpu") }
        let fabric = try #require(error as? FabricError)
        #expect(fabric == FabricError.invalid("gpu", "gpu is not acceptable"))
        #expect(fabric.code == .invalidArgument)
        #expect(fabric.field == "gpu")
        #expect(fabric.file.hasSuffix("Support.swift"))  // the remote call site travels along

        let (plain, _) = await failure { try await remote.failPlain() }
        let call = try #require(plain as? ActorCallError)
        #expect(call.code == .remote)
        #expect(call.message.contains("Oops"))
        #expect(call.message.contains("oops: plain"))
        #expect(try await remote.add(1) == 1)
    }

    static func unknownActorBody(_ serving: FabricActorSystem, _ calling: FabricActorSystem) async throws {
        _ = try await counter(on: serving, from: calling)
        for id in [ActorID(node: "n1", name: "nobody"), ActorID(node: "n9", name: "/system/scheduler")] {
            let ghost = try Counter.resolve(id: id, using: calling)
            let (error, elapsed) = await failure { try await ghost.get() }
            #expect(callCode(error) == .noResponders)
            #expect(elapsed < .seconds(3))  // at once, not after the 5 s deadline (loose for loaded machines)
        }
    }

    static func actorLifetimeBody(_ serving: FabricActorSystem, _ calling: FabricActorSystem) async throws {
        var local: Counter? = Counter(actorSystem: serving)
        let id = local!.id
        try await serving.flush()
        do {
            let proxy = try Counter.resolve(id: id, using: serving)
            #expect(try await proxy.add(1) == 1)
        }
        let remote = try Counter.resolve(id: id, using: calling)
        #expect(try await remote.add(1) == 2)
        #expect(local != nil)
        local = nil
        // The last call's task may hold the actor a moment longer: it stops being served once it is released.
        var code: ActorCallError.Code?
        for _ in 0..<100 {
            try await serving.flush()
            do { _ = try await remote.get() } catch {
                code = callCode(error)
                break
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(code == .noResponders)
    }

    static func namedActorsBody(_ serving: FabricActorSystem, _ calling: FabricActorSystem) async throws {
        let (local, remote) = try await counter(on: serving, from: calling, named: "/system/scheduler")
        defer { withExtendedLifetime(local) {} }
        #expect(local.id == ActorID(node: "n1", name: "/system/scheduler"))
        #expect(local.id.subject == "fabric.actor.n1.%2Fsystem%2Fscheduler")
        #expect(try await remote.add(4) == 4)
        let byName = try Counter.resolve(
            id: ActorID(node: "n1", name: "/system/scheduler"), using: calling)
        #expect(try await byName.get() == 4)
        #expect(throws: FabricError.self) {
            try serving.makeActor(named: "/system/scheduler") { Counter(actorSystem: serving) }
        }
        #expect(throws: FabricError.self) { try serving.makeActor(named: "") { Counter(actorSystem: serving) } }
        #expect(throws: FabricError.self) {
            try serving.makeActor(named: String(repeating: "x", count: ActorLimits.actorNameBytesMax + 1)) {
                Counter(actorSystem: serving)
            }
        }
        // Only the first actor made inside the closure takes the name; an actor of another system is refused.
        let second = Recorder<ActorID>()
        let first = try serving.makeActor(named: "/system/first") { () -> Counter in
            let c = Counter(actorSystem: serving)
            second.append(Counter(actorSystem: serving).id)
            return c
        }
        #expect(first.id.name == "/system/first")
        #expect(second.values.first?.name.hasPrefix("counter-") == true)
        #expect(throws: FabricError.self) {
            try serving.makeActor(named: "/system/elsewhere") { Counter(actorSystem: calling) }
        }
        // Unnamed actors get distinct generated names.
        let a = Counter(actorSystem: serving)
        let b = Counter(actorSystem: serving)
        #expect(a.id != b.id)
        #expect(a.id.name.hasPrefix("counter-"))
    }

    static func nestedCallsBody(_ serving: FabricActorSystem, _ calling: FabricActorSystem) async throws {
        let relay = Relay(actorSystem: serving)
        defer { withExtendedLifetime(relay) {} }
        let target = Counter(actorSystem: calling)
        try await serving.flush()
        try await calling.flush()
        let remoteRelay = try Relay.resolve(id: relay.id, using: calling)
        #expect(try await remoteRelay.addTwice(on: target.id, 3) == 6)
        #expect(try await target.get() == 6)
    }

    static func boundedInFlightBody(_ serving: FabricActorSystem, _ calling: FabricActorSystem) async throws {
        let (local, remote) = try await counter(on: serving, from: calling)
        defer { withExtendedLifetime(local) {} }
        let slow1 = Task { try await remote.sleep(milliseconds: 600) }
        let slow2 = Task { try await remote.sleep(milliseconds: 600) }
        try await waitUntil { inFlight(calling) == 2 }
        let queued = Task { try await remote.sleep(milliseconds: 1) }
        try await waitUntil { queuedCalls(calling) == 1 }
        let (error, elapsed) = await failure { try await remote.get() }
        #expect(callCode(error) == .resourceExhausted)
        #expect(elapsed < .seconds(3))  // refused at once, not after the 5 s deadline
        #expect(try await slow1.value == 600)
        #expect(try await slow2.value == 600)
        #expect(try await queued.value == 1)
        #expect(inFlight(calling) == 0)
        #expect(try await remote.add(1) == 1)
    }

    static func inboundLimitBody(_ serving: FabricActorSystem, _ calling: FabricActorSystem) async throws {
        let (local, remote) = try await counter(on: serving, from: calling)
        defer { withExtendedLifetime(local) {} }
        let slow = Task { try await remote.sleep(milliseconds: 500) }
        try await Task.sleep(for: .milliseconds(100))
        let (error, _) = await failure { try await remote.get() }
        #expect(callCode(error) == .resourceExhausted)
        #expect(try await slow.value == 500)
        #expect(try await remote.get() == 0)
    }

    static func cancellationBody(_ serving: FabricActorSystem, _ calling: FabricActorSystem) async throws {
        let (local, remote) = try await counter(on: serving, from: calling)
        defer { withExtendedLifetime(local) {} }
        let clock = ContinuousClock()
        let start = clock.now
        let t = Task { try await remote.sleep(milliseconds: 3000) }
        try await Task.sleep(for: .milliseconds(100))
        t.cancel()
        let result = await t.result
        #expect(throws: CancellationError.self) { try result.get() }
        #expect(start.duration(to: clock.now) < .seconds(1))
        #expect(inFlight(calling) == 0)
    }

    static func shutdownMidCallBody(_ serving: FabricActorSystem, _ calling: FabricActorSystem) async throws {
        let (local, remote) = try await counter(on: serving, from: calling)
        defer { withExtendedLifetime(local) {} }
        let clock = ContinuousClock()
        let start = clock.now
        let call = Task { try await remote.sleep(milliseconds: 3000) }
        try await Task.sleep(for: .milliseconds(200))
        await serving.shutdown()
        let result = await call.result
        #expect(throws: ActorCallError.self) { try result.get() }
        if case .failure(let e) = result { #expect(callCode(e) == .unavailable) }
        #expect(start.duration(to: clock.now) < .seconds(2))
        let (after, elapsed) = await failure { try await remote.get() }
        #expect(callCode(after) == .noResponders)
        #expect(elapsed < .seconds(3))  // at once, not after the 5 s deadline
    }
}

func inFlight(_ s: FabricActorSystem) -> Int { s.inFlightCalls }

func queuedCalls(_ s: FabricActorSystem) -> Int { s.queuedCalls }

/// Polls `condition` every 10 ms for up to `limit`.
func waitUntil(_ limit: Duration = .seconds(5), _ condition: () -> Bool) async throws {
    let clock = ContinuousClock()
    let deadline = clock.now.advanced(by: limit)
    while !condition() {
        guard clock.now < deadline else {
            Issue.record("condition not met within \(limit)")
            return
        }
        try await Task.sleep(for: .milliseconds(10))
    }
}
