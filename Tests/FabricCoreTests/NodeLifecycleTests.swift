import Testing

@testable import FabricCore

/// The node lifecycle under a manual clock: assertions on the directives it returns.
@Suite struct NodeLifecycleTests {
    let t0 = Timestamp(millisecondsSinceEpoch: 1_800_000_000_000)
    func at(_ seconds: Double) -> Timestamp { t0.adding(.milliseconds(Int64(seconds * 1000))) }

    @Test func silentNodeGoesSuspectThenLost() {
        var l = NodeLifecycle()
        #expect(l.onRegister("n1", now: at(0)) == [.markReady("n1"), .scheduleCheck(after: .seconds(6))])
        #expect(l.onTick(now: at(3)) == [.scheduleCheck(after: .seconds(3))])
        #expect(l.onTick(now: at(6)) == [.markSuspect("n1"), .scheduleCheck(after: .seconds(9))])
        #expect(l.nodes["n1"]?.state == .suspect)
        #expect(l.onTick(now: at(10)) == [.scheduleCheck(after: .seconds(5))])
        #expect(l.onTick(now: at(15)) == [.markLost("n1"), .scheduleCheck(after: .seconds(6))])
        #expect(l.onTick(now: at(100)) == [.scheduleCheck(after: .seconds(6))])  // lost stays lost, once
    }

    @Test func heartbeatsKeepANodeReadyAndRecoverASuspectOne() {
        var l = NodeLifecycle()
        _ = l.onRegister("n1", now: at(0))
        for s in stride(from: 2.0, through: 20, by: 2) {
            #expect(l.onHeartbeat("n1", now: at(s)) == [])
            #expect(l.onTick(now: at(s + 1)).allSatisfy { if case .scheduleCheck = $0 { true } else { false } })
        }
        #expect(l.onTick(now: at(27)) == [.markSuspect("n1"), .scheduleCheck(after: .seconds(8))])
        #expect(l.onHeartbeat("n1", now: at(28)) == [.markReady("n1")])
        #expect(l.nodes["n1"]?.state == .ready)
    }

    @Test func lostNodeComingBackIsReconciledBeforeReady() {
        var l = NodeLifecycle()
        _ = l.onRegister("n1", now: at(0))
        _ = l.onTick(now: at(16))
        #expect(l.nodes["n1"]?.state == .lost)
        #expect(l.onHeartbeat("n1", now: at(17)) == [.reconcile("n1"), .markReady("n1")])
        _ = l.onTick(now: at(40))
        #expect(l.onRegister("n1", now: at(41)).prefix(2) == [.reconcile("n1"), .markReady("n1")])
    }

    @Test func drainingNodesStayDrainingAndCanStillBeLost() {
        var l = NodeLifecycle()
        _ = l.onRegister("n1", now: at(0))
        #expect(l.onDrain("n1") == [.markDraining("n1")])
        #expect(l.onDrain("n1") == [])
        #expect(l.onHeartbeat("n1", now: at(5)) == [])
        #expect(l.nodes["n1"]?.state == .draining)
        #expect(l.onTick(now: at(12)) == [.scheduleCheck(after: .seconds(8))])  // draining is never "suspect"
        #expect(l.onTick(now: at(20)) == [.markLost("n1"), .scheduleCheck(after: .seconds(6))])
    }

    @Test func aNodeKnownFromBeforeARestartIsSuspectUntilItRegistersOrLostIfSilent() {
        var l = NodeLifecycle()
        #expect(l.onRestore("n1", now: at(0)) == [.markSuspect("n1"), .scheduleCheck(after: .seconds(15))])
        #expect(l.onRestore("n1", now: at(1)) == [], "restored once")
        #expect(l.nodes["n1"]?.state == .suspect)
        _ = l.onRestore("n2", now: at(0))
        #expect(l.onRegister("n2", now: at(3)).first == .markReady("n2"))
        #expect(l.nodes["n2"]?.state == .ready)
        _ = l.onHeartbeat("n2", now: at(8))
        _ = l.onHeartbeat("n2", now: at(13))
        #expect(l.onTick(now: at(14)).contains(.markLost("n1")) == false)
        #expect(l.onTick(now: at(15)).first == .markLost("n1"))
        #expect(l.nodes["n2"]?.state == .ready)
    }

    @Test func aRestoredLinkRestartsEverySilenceClock() {
        var l = NodeLifecycle()
        _ = l.onRegister("n1", now: at(0))
        _ = l.onRegister("n2", now: at(0))
        _ = l.onDrain("n2")
        // The control plane's link was down from 1 s to 30 s: nobody heartbeated, through no fault of theirs.
        #expect(l.onLinkRestored(now: at(30)) == [])
        #expect(l.onTick(now: at(31)).allSatisfy { if case .scheduleCheck = $0 { true } else { false } })
        #expect(l.nodes["n1"]?.state == .ready)
        #expect(l.nodes["n2"]?.state == .draining)
        #expect(l.onTick(now: at(45)).prefix(2) == [.markLost("n1"), .markLost("n2")])
    }

    @Test func unknownAndDeregisteredNodesAreIgnored() {
        var l = NodeLifecycle()
        #expect(l.onHeartbeat("ghost", now: at(0)) == [])
        #expect(l.onDrain("ghost") == [])
        _ = l.onRegister("n1", now: at(0))
        #expect(l.onDeregister("n1") == [.forget("n1")])
        #expect(l.onHeartbeat("n1", now: at(1)) == [])
        #expect(l.nodes.isEmpty)
    }

    @Test func manyNodesAreJudgedInAStableOrder() {
        var l = NodeLifecycle()
        for i in 0..<5 { _ = l.onRegister("n\(i)", now: at(Double(i))) }
        let d = l.onTick(now: at(20))
        #expect(d.dropLast() == [.markLost("n0"), .markLost("n1"), .markLost("n2"), .markLost("n3"), .markLost("n4")])
    }
}
