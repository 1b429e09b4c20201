import FabricCore
import Synchronization

/// An in-process message bus: the network that `LoopbackTransport` endpoints (one per actor system) share.
///
/// Delivery is immediate and in order, on the publisher's thread; exact subjects only (no wildcards). A request to a
/// subject nobody subscribes fails at once with `.noResponders`, like NATS.
public final class LoopbackNetwork: Sendable {
    typealias Handler = @Sendable (InboundMessage) -> Void

    struct State {
        var nextID: UInt64 = 0
        var subscriptions: [String: [UInt64: Handler]] = [:]
        var inboxes: [UInt64: ReplyMux] = [:]
    }

    static let inboxPrefix = "_INBOX.loop."

    private let state = Mutex(State())

    /// An empty network.
    public init() {}

    /// A new endpoint on this network.
    public func endpoint(clock: CallClock = .continuous) -> LoopbackTransport {
        LoopbackTransport(network: self, clock: clock)
    }

    func nextID() -> UInt64 {
        state.withLock {
            $0.nextID += 1
            return $0.nextID
        }
    }

    func addInbox(_ id: UInt64, _ mux: ReplyMux) { state.withLock { $0.inboxes[id] = mux } }
    func removeInbox(_ id: UInt64) { state.withLock { _ = $0.inboxes.removeValue(forKey: id) } }

    func subscribe(_ subject: String, _ handler: @escaping Handler) -> UInt64 {
        state.withLock { s in
            s.nextID += 1
            s.subscriptions[subject, default: [:]][s.nextID] = handler
            return s.nextID
        }
    }

    func unsubscribe(_ subject: String, _ id: UInt64) {
        state.withLock { s in
            s.subscriptions[subject]?[id] = nil
            if s.subscriptions[subject]?.isEmpty == true { s.subscriptions[subject] = nil }
        }
    }

    /// Delivers a message; returns how many subscribers (or inboxes) received it.
    @discardableResult
    func deliver(subject: String, data: [UInt8], replyTo: String?) -> Int {
        if subject.hasPrefix(Self.inboxPrefix) {
            // `_INBOX.loop.<endpoint>.<token>`
            let parts = subject.dropFirst(Self.inboxPrefix.count).split(separator: ".")
            guard parts.count == 2, let endpoint = UInt64(parts[0]), let token = UInt64(parts[1]),
                let mux = state.withLock({ $0.inboxes[endpoint] })
            else { return 0 }
            mux.complete(token, with: .success(data))
            return 1
        }
        let handlers = state.withLock { s in s.subscriptions[subject].map { Array($0.values) } ?? [] }
        let message = InboundMessage(subject: subject, data: data, replyTo: replyTo)
        for h in handlers { h(message) }
        return handlers.count
    }
}

/// One actor system's endpoint on a `LoopbackNetwork`.
public final class LoopbackTransport: MessageTransport {
    struct State {
        var closed = false
        var subscriptions: [UInt64: String] = [:]
    }

    let network: LoopbackNetwork
    let id: UInt64
    let mux: ReplyMux
    private let state = Mutex(State())

    init(network: LoopbackNetwork, clock: CallClock) {
        self.network = network
        self.id = network.nextID()
        self.mux = ReplyMux(clock: clock)
        network.addInbox(id, mux)
    }

    /// A standalone endpoint on its own network (one process, one system).
    public convenience init(clock: CallClock = .continuous) {
        self.init(network: LoopbackNetwork(), clock: clock)
    }

    private func checkOpen() throws(ActorCallError) {
        if state.withLock({ $0.closed }) { throw ActorCallError(.unavailable, "loopback transport is closed") }
    }

    /// Delivers `data` to the subject's subscribers now, on this thread.
    public func publish(subject: String, data: [UInt8]) throws {
        try checkOpen()
        network.deliver(subject: subject, data: data, replyTo: nil)
    }

    /// Delivers a request and awaits its reply; fails at once with `.noResponders` when nobody subscribes.
    public func request(subject: String, data: [UInt8], timeout: Duration) async throws -> [UInt8] {
        try checkOpen()
        let prefix = "\(LoopbackNetwork.inboxPrefix)\(id)."
        return try await mux.request(subject: subject, timeout: timeout) { token in
            if network.deliver(subject: subject, data: data, replyTo: prefix + String(token)) == 0 {
                throw ActorCallError(.noResponders, "nobody serves \(subject)")
            }
        }
    }

    /// Calls `handler` for each message published to exactly `subject`.
    public func subscribe(subject: String, handler: @escaping @Sendable (InboundMessage) -> Void) throws
        -> any TransportSubscription
    {
        try checkOpen()
        let subID = network.subscribe(subject, handler)
        state.withLock { $0.subscriptions[subID] = subject }
        return Subscription(transport: self, id: subID)
    }

    func unsubscribe(_ subID: UInt64) {
        guard let subject = state.withLock({ $0.subscriptions.removeValue(forKey: subID) }) else { return }
        network.unsubscribe(subject, subID)
    }

    /// Nothing to flush: delivery is immediate.
    public func flush(timeout: Duration) async throws { try checkOpen() }

    /// Removes this endpoint's subscriptions and fails its pending requests.
    public func close() async {
        let subs = state.withLock { s -> [UInt64: String] in
            s.closed = true
            defer { s.subscriptions = [:] }
            return s.subscriptions
        }
        for (subID, subject) in subs { network.unsubscribe(subject, subID) }
        network.removeInbox(id)
        mux.close(ActorCallError(.unavailable, "loopback transport closed"))
    }

    struct Subscription: TransportSubscription {
        let transport: LoopbackTransport
        let id: UInt64
        func cancel() { transport.unsubscribe(id) }
    }
}
