import FabricCore
import Foundation
import Synchronization

/// A node's liveness lease, shared with every fabric-monitor it starts: the node agent renews it while it lives;
/// a monitor whose lease is not renewed for `timeout` stops its workload (SIGTERM, then SIGKILL after `grace`).
///
/// This fences a dead or hung node runner: its workloads end before the control plane declares the node lost
/// (and starts them elsewhere), so a workload never runs in two places. A control-plane or NATS outage does not
/// stop them: the lease depends on the node runner alone.
///
/// The file holds `CLOCK_MONOTONIC` milliseconds as decimal text, written atomically.
public final class NodeLease: Sendable {
    /// The terms monitors are started with.
    public struct Terms: Sendable, Hashable {
        public var timeout: Duration
        public var grace: Duration

        public init(timeout: Duration, grace: Duration) {
            self.timeout = timeout
            self.grace = grace
        }

        /// Terms that end a fenced workload before a control plane with `lostAfter` declares its node lost:
        /// fenced after half of `lostAfter` without renewal, killed a quarter later at most.
        public static func fencing(lostAfter: Duration, stopGrace: Duration) -> Terms {
            Terms(timeout: lostAfter / 2, grace: min(stopGrace, lostAfter / 4))
        }
    }

    public let path: String
    private let terms: Mutex<Terms?>

    public init(path: String) {
        self.path = path
        self.terms = Mutex(nil)
    }

    /// The terms new monitors get; nil until the control plane said how long it waits (`setTerms`).
    public var currentTerms: Terms? { terms.withLock { $0 } }

    public func setTerms(_ t: Terms) { terms.withLock { $0 = t } }

    /// Writes now into the lease file.
    public func renew() throws(FabricError) {
        let stamp = Array("\(Self.monotonicMillis())\n".utf8)
        do { try Posix.writeFileAtomically(path, stamp) } catch {
            // The node's folder may not exist yet: make it, then try once more.
            try? FileManager.default.createDirectory(
                atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            try Posix.writeFileAtomically(path, stamp)
        }
    }

    /// `CLOCK_MONOTONIC` in milliseconds (the clock fabric-monitor compares the lease with).
    public static func monotonicMillis() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Int64(ts.tv_sec) * 1000 + Int64(ts.tv_nsec) / 1_000_000
    }

    /// Milliseconds in a duration, rounded down.
    static func millis(_ d: Duration) -> Int64 {
        d.components.seconds * 1000 + d.components.attoseconds / 1_000_000_000_000_000
    }

    /// The monitor flags for the current terms (none before terms are set).
    func monitorArguments() -> [String] {
        guard let t = currentTerms else { return [] }
        return [
            "--lease-file", path, "--lease-timeout-ms", String(Self.millis(t.timeout)), "--fence-grace-ms",
            String(Self.millis(t.grace)),
        ]
    }
}
