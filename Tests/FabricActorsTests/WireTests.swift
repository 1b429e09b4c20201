import FabricCore
import Foundation
import Synchronization
import Testing

@testable import FabricActors

/// The pure parts: IDs and subjects, the wire codec, remote errors, the reply table and call admission.
struct WireTests {
    @Test(
        "actor names map to single subject tokens, injectively",
        arguments: [
            ("scheduler", "scheduler"), ("/system/scheduler", "%2Fsystem%2Fscheduler"), ("a.b", "a%2Eb"),
            ("a b*>", "a%20b%2A%3E"), ("wl-3k9x_2", "wl-3k9x_2"), ("é", "%C3%A9"), ("%", "%25"),
        ])
    func subjectTokens(name: String, token: String) {
        #expect(ActorID.subjectToken(name) == token)
        #expect(ActorID(node: "node-1", name: name).subject == "fabric.actor.node-1.\(token)")
    }

    @Test("IDs are validated against the limits")
    func validation() throws {
        try ActorID(node: "n1", name: "/system/scheduler").validate()
        #expect(throws: FabricError.self) { try ActorID(node: "", name: "x").validate() }
        #expect(throws: FabricError.self) { try ActorID(node: "a b", name: "x").validate() }
        #expect(throws: FabricError.self) { try ActorID(node: "n", name: "tab\there").validate() }
        let long = String(repeating: "n", count: ActorLimits.nodeNameBytesMax + 1)
        #expect(throws: FabricError.self) { try ActorID(node: long, name: "x").validate() }
        #expect(throws: FabricError.self) { try LocalActorSystem(node: "bad node", logger: quietLogger()) }
        #expect(throws: FabricError.self) {
            try LocalActorSystem(settings: ActorSystemSettings(callTimeout: .zero), logger: quietLogger())
        }
    }

    static let messages: [WireMessage] = [
        .call(
            CallEnvelope(
                callID: 42, recipient: ActorID(node: "n1", name: "/system/scheduler"), target: "$s4main1AC1fyyYaKFTE",
                genericSubstitutions: ["16FabricActors15NATSActorSystemC"],
                arguments: [Array("1".utf8), [], [0, 255]],
                timeoutMilliseconds: 5000)),
        .call(
            CallEnvelope(
                callID: .max, recipient: ActorID(node: "é", name: ""), target: "", genericSubstitutions: [],
                arguments: [], timeoutMilliseconds: 0)),
        .reply(ReplyEnvelope(callID: 1, outcome: .void)),
        .reply(ReplyEnvelope(callID: 2, outcome: .value(Array("\"hi\"".utf8)))),
        .reply(
            ReplyEnvelope(
                callID: 3,
                outcome: .error(RemoteError(FabricError.invalid("gpu", "no such gpu", file: "X.swift", line: 7))))),
        .reply(ReplyEnvelope(callID: 4, outcome: .error(RemoteError(ActorCallError(.deadlineExceeded, "late"))))),
    ]

    @Test("wire messages round-trip, and their Codable form too", arguments: messages)
    func wireRoundTrip(message: WireMessage) throws {
        let bytes = WireCodec.encode(message)
        #expect(try WireCodec.decode(bytes) == message)
        // Every strict prefix is rejected as truncated, never misread.
        for n in 0..<bytes.count {
            #expect(throws: ActorCallError.self) { try WireCodec.decode(Array(bytes[..<n])) }
        }
        #expect(throws: ActorCallError.self) { try WireCodec.decode(bytes + [0]) }
        let json = try JSONEncoder().encode(message)
        #expect(try JSONDecoder().decode(WireMessage.self, from: json) == message)
    }

    @Test("garbage and oversized counts are rejected")
    func wireRejects() {
        #expect(throws: ActorCallError.self) { try WireCodec.decode([]) }
        #expect(throws: ActorCallError.self) { try WireCodec.decode(Array("hello".utf8)) }
        #expect(throws: ActorCallError.self) { try WireCodec.decode([0x46, 9, 1]) }  // unknown version
        #expect(throws: ActorCallError.self) { try WireCodec.decode([0x46, 1, 7]) }  // unknown kind
        var w = WireCodec.Writer()
        w.u8(0x46)
        w.u8(1)
        w.u8(1)
        w.u64(1)
        w.u32(1)
        w.string("n")
        w.string("a")
        w.string("t")
        w.u16(0)
        w.u16(UInt16(ActorLimits.argumentsMax + 1))
        #expect(throws: ActorCallError.self) { try WireCodec.decode(w.out) }
    }

    @Test("remote errors are rebuilt as the type that was thrown")
    func remoteErrors() {
        let f = FabricError(.conflict, "taken", field: "name", file: "A.swift", line: 3)
        let rf = RemoteError(f).rebuilt as? FabricError
        #expect(rf == f)
        #expect(rf?.file == "A.swift")
        #expect(rf?.line == 3)
        let a = ActorCallError(.resourceExhausted, "busy")
        #expect(RemoteError(a).rebuilt as? ActorCallError == a)
        let other = RemoteError(Oops(why: "x")).rebuilt as? ActorCallError
        #expect(other?.code == .remote)
        #expect(other?.message.contains("Oops") == true)
        #expect(ActorCallError(.deadlineExceeded, "late").fabricError.code == .unavailable)
        #expect(ActorCallError(.actorNotFound, "gone").fabricError.code == .notFound)
    }

    @Test("the reply table: reply, deadline, cancellation, failure to send, close")
    func replyMux() async throws {
        let mux = ReplyMux()
        let tokens = Recorder<UInt64>()
        async let replied = mux.request(subject: "s", timeout: .seconds(5)) { t in tokens.append(t) }
        try await waitUntil { mux.pendingCount == 1 }
        mux.complete(tokens.values[0], with: .success([1, 2]))
        mux.complete(tokens.values[0], with: .success([3]))  // a duplicate is ignored
        #expect(try await replied == [1, 2])

        let (late, elapsed) = await failure { try await mux.request(subject: "s", timeout: .milliseconds(50)) { _ in } }
        #expect(callCode(late) == .deadlineExceeded)
        #expect(elapsed >= .milliseconds(45))

        let (unsent, _) = await failure {
            try await mux.request(subject: "s", timeout: .seconds(5)) { _ in throw ActorCallError(.unavailable, "x") }
        }
        #expect(callCode(unsent) == .unavailable)

        let waiting = Task { try await mux.request(subject: "s", timeout: .seconds(5)) { _ in } }
        try await waitUntil { mux.pendingCount == 1 }
        waiting.cancel()
        let cancelled = await waiting.result
        #expect(throws: CancellationError.self) { try cancelled.get() }

        let preCancelled = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            return try await mux.request(subject: "s", timeout: .seconds(5)) { _ in }
        }
        let pre = await preCancelled.result
        #expect(throws: CancellationError.self) { try pre.get() }

        let open = Task { try await mux.request(subject: "s", timeout: .seconds(5)) { _ in } }
        try await waitUntil { mux.pendingCount == 1 }
        mux.close(ActorCallError(.unavailable, "closed"))
        let closed = await open.result
        #expect(throws: ActorCallError.self) { try closed.get() }
        let (after, _) = await failure { try await mux.request(subject: "s", timeout: .seconds(5)) { _ in } }
        #expect(callCode(after) == .unavailable)
        #expect(mux.pendingCount == 0)
    }

    @Test("call admission hands slots over in FIFO order and bounds its queue")
    func admission() async throws {
        let adm = CallAdmission(limit: 1, queueMax: 3, clock: .continuous)
        try await adm.acquire(timeout: .seconds(5), what: "first")
        let order = Recorder<Int>()
        var waiters: [Task<Void, any Error>] = []
        for i in 0..<3 {
            waiters.append(
                Task {
                    try await adm.acquire(timeout: .seconds(5), what: "w\(i)")
                    order.append(i)
                    adm.release()
                })
            try await waitUntil { adm.queued == i + 1 }
        }
        let (full, elapsed) = await failure { try await adm.acquire(timeout: .seconds(5), what: "extra") }
        #expect(callCode(full) == .resourceExhausted)
        #expect(elapsed < .seconds(3))  // refused at once, not after its 5 s timeout
        adm.release()
        for w in waiters { try await w.value }
        #expect(order.values == [0, 1, 2])
        #expect(adm.inFlight == 0)

        try await adm.acquire(timeout: .seconds(5), what: "hold")
        let (timedOut, waited) = await failure { try await adm.acquire(timeout: .milliseconds(50), what: "late") }
        #expect(callCode(timedOut) == .deadlineExceeded)
        #expect(waited >= .milliseconds(45))
        adm.release()
        #expect(adm.inFlight == 0)
        #expect(adm.queued == 0)
    }
}

/// Values appended from any task.
final class Recorder<T: Sendable>: Sendable {
    private let storage = Mutex<[T]>([])
    func append(_ v: T) { storage.withLock { $0.append(v) } }
    var values: [T] { storage.withLock { $0 } }
}
