import FabricCore
import Synchronization

/// Network faults as data: how often a message is lost, duplicated or delayed, and which subjects are cut off.
public struct NetworkFaults: Sendable, Hashable {
    /// Chance that a request (or a published message) never arrives.
    public var dropRate: Double
    /// Chance that a request arrives and runs, but its reply is lost (the caller times out).
    public var replyDropRate: Double
    /// Chance that a request or message arrives twice.
    public var duplicateRate: Double
    /// Each delivery is delayed by up to this (uniformly drawn), which also reorders messages.
    public var delayMax: Duration
    /// Subjects starting with one of these are cut off (a partition): nothing reaches them.
    public var partitioned: Set<String>

    public init(
        dropRate: Double = 0, replyDropRate: Double = 0, duplicateRate: Double = 0, delayMax: Duration = .zero,
        partitioned: Set<String> = []
    ) {
        self.dropRate = dropRate
        self.replyDropRate = replyDropRate
        self.duplicateRate = duplicateRate
        self.delayMax = delayMax
        self.partitioned = partitioned
    }

    /// No faults.
    public static let none = NetworkFaults()
}

/// A `MessageTransport` that loses, duplicates, delays and partitions the traffic of the transport under it, each
/// decision drawn from a seeded generator: the simulated network under the real actor systems and actors.
///
/// A lost request and a lost reply both look like NATS's do to the caller: `.deadlineExceeded` when the call's
/// deadline passes. A duplicated request runs twice at the recipient; the second reply is dropped.
public final class FaultyTransport: MessageTransport, Sendable {
    /// What happened to the traffic so far.
    public struct Counts: Sendable, Hashable {
        public var delivered = 0
        public var dropped = 0
        public var repliesDropped = 0
        public var duplicated = 0
        public var cutOff = 0
    }

    let base: any MessageTransport
    let clock: CallClock
    private let state: Mutex<(rng: SplitMix64, faults: NetworkFaults, counts: Counts)>

    /// Wraps `base`; `seed` fixes every decision; delays and deadlines run on `clock`.
    public init(_ base: any MessageTransport, faults: NetworkFaults, seed: UInt64, clock: CallClock = .continuous) {
        self.base = base
        self.clock = clock
        state = Mutex((SplitMix64(seed: seed), faults, Counts()))
    }

    /// Changes the faults from now on (e.g. heal a partition).
    public func setFaults(_ faults: NetworkFaults) { state.withLock { $0.faults = faults } }

    /// The traffic's fate so far.
    public var counts: Counts { state.withLock { $0.counts } }

    private enum Fate {
        case cutOff, drop, deliver(delay: Duration, duplicate: Bool, dropReply: Bool)
    }

    private func fate(_ subject: String) -> Fate {
        state.withLock { s in
            func chance(_ p: Double) -> Bool { p > 0 && Double(s.rng.next() % 1_000_000) < p * 1_000_000 }
            if s.faults.partitioned.contains(where: { subject.hasPrefix($0) }) {
                s.counts.cutOff += 1
                return .cutOff
            }
            if chance(s.faults.dropRate) {
                s.counts.dropped += 1
                return .drop
            }
            let maxMicros =
                s.faults.delayMax.components.seconds * 1_000_000
                + s.faults.delayMax.components.attoseconds / 1_000_000_000_000
            let delay: Duration = maxMicros > 0 ? .microseconds(Int64(s.rng.next() % UInt64(maxMicros + 1))) : .zero
            let duplicate = chance(s.faults.duplicateRate)
            let dropReply = chance(s.faults.replyDropRate)
            if duplicate { s.counts.duplicated += 1 }
            if dropReply { s.counts.repliesDropped += 1 }
            s.counts.delivered += 1
            return .deliver(delay: delay, duplicate: duplicate, dropReply: dropReply)
        }
    }

    public func publish(subject: String, data: [UInt8]) throws {
        guard case .deliver(let delay, let duplicate, _) = fate(subject) else { return }
        let base = self.base
        let clock = self.clock
        Task {
            if delay > .zero { try? await clock.sleep(for: delay) }
            try? base.publish(subject: subject, data: data)
            if duplicate { try? base.publish(subject: subject, data: data) }
        }
    }

    public func request(subject: String, data: [UInt8], timeout: Duration) async throws -> [UInt8] {
        let started = clock.elapsed()
        func lost(_ what: String) async throws -> Never {
            let left = timeout - (clock.elapsed() - started)
            if left > .zero { try await clock.sleep(for: left) }
            throw ActorCallError(.deadlineExceeded, "no reply within \(timeout) (\(what))")
        }
        switch fate(subject) {
        case .cutOff: try await lost("partitioned")
        case .drop: try await lost("request lost")
        case .deliver(let delay, let duplicate, let dropReply):
            if delay > .zero { try await clock.sleep(for: delay) }
            if duplicate {
                let base = self.base
                Task { _ = try? await base.request(subject: subject, data: data, timeout: timeout) }
            }
            let reply = try await base.request(subject: subject, data: data, timeout: timeout)
            if dropReply { try await lost("reply lost") }
            return reply
        }
    }

    public func subscribe(subject: String, handler: @escaping @Sendable (InboundMessage) -> Void) throws
        -> any TransportSubscription
    {
        try base.subscribe(subject: subject, handler: handler)
    }

    public func flush(timeout: Duration) async throws { try await base.flush(timeout: timeout) }

    public func close() async { await base.close() }
}
