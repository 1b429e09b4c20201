import FabricCore
import Synchronization

/// The seam under the actor systems: subject-addressed publish, request/reply and subscribe of envelope bytes.
///
/// NATS (`NATSConnection`) and the in-process loopback (`LoopbackTransport`) implement it; the simulator's network
/// will too. Rules every implementation keeps:
/// - `request` returns the first reply, or throws `ActorCallError` (`.deadlineExceeded` when `timeout` passes,
///   `.noResponders` when nobody subscribes to `subject`, `.unavailable` when closed or disconnected).
/// - Subscription handlers run on a transport thread; they must return quickly and never block.
/// - All methods are safe to call from any thread.
public protocol MessageTransport: AnyObject, Sendable {
    /// Sends `data` to `subject` without waiting for an answer.
    func publish(subject: String, data: [UInt8]) throws
    /// Sends `data` to `subject` and returns the first reply within `timeout`.
    func request(subject: String, data: [UInt8], timeout: Duration) async throws -> [UInt8]
    /// Calls `handler` for each message published to `subject` until the subscription is cancelled.
    func subscribe(subject: String, handler: @escaping @Sendable (InboundMessage) -> Void) throws
        -> any TransportSubscription
    /// Returns once everything published so far (subscriptions included) has reached the other side.
    func flush(timeout: Duration) async throws
    /// Closes the transport: subscriptions stop and pending requests fail with `.unavailable`.
    func close() async
}

/// One received message.
public struct InboundMessage: Sendable {
    /// The subject it was published to.
    public var subject: String
    /// Its payload.
    public var data: [UInt8]
    /// Where to publish the reply, for requests.
    public var replyTo: String?

    /// A message from its parts.
    public init(subject: String, data: [UInt8], replyTo: String?) {
        self.subject = subject
        self.data = data
        self.replyTo = replyTo
    }
}

/// An active subscription of a `MessageTransport`.
public protocol TransportSubscription: Sendable {
    /// Stops delivery; safe to call more than once.
    func cancel()
}

/// The actor layer's time seam is FabricCore's `TaskClock` (the name predates it).
public typealias CallClock = TaskClock

/// The reply table of a request/reply transport: one waiting continuation per token, each with its own deadline.
///
/// A transport calls `request(timeout:send:)`, publishes with a reply address naming the token, and hands every
/// reply to `complete(_:with:)`. Whichever comes first wins: the reply, the deadline, the caller's cancellation or
/// `failAll` (transport closed or disconnected). Public so that other transports (the simulator's) reuse it.
public final class ReplyMux: Sendable {
    enum Entry {
        case reserved
        case cancelled
        case waiting(CheckedContinuation<[UInt8], any Error>, timer: Task<Void, Never>?)
    }

    struct State {
        var nextToken: UInt64 = 0
        var entries: [UInt64: Entry] = [:]
        var closed: ActorCallError?
    }

    private let state = Mutex(State())
    private let clock: CallClock
    private let pendingMax: Int

    /// A reply table with at most `pendingMax` waiting requests.
    public init(clock: CallClock = .continuous, pendingMax: Int = ActorLimits.pendingRequestsMax) {
        self.clock = clock
        self.pendingMax = pendingMax
    }

    /// Number of requests waiting for a reply.
    public var pendingCount: Int { state.withLock { $0.entries.count } }

    /// Registers a request, calls `send` with its token, and waits for the reply or the deadline.
    public func request(
        subject: String, timeout: Duration, send: (UInt64) throws -> Void
    ) async throws -> [UInt8] {
        let token: UInt64 = try state.withLock { s throws(ActorCallError) in
            if let e = s.closed { throw e }
            guard s.entries.count < pendingMax else {
                throw ActorCallError(.resourceExhausted, "more than \(pendingMax) requests await replies")
            }
            s.nextToken &+= 1
            s.entries[s.nextToken] = .reserved
            return s.nextToken
        }
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (cont: CheckedContinuation<[UInt8], any Error>) in
                let refused = state.withLock { s -> (any Error)? in
                    if case .cancelled = s.entries[token] {
                        s.entries[token] = nil
                        return CancellationError()
                    }
                    if let e = s.closed {
                        s.entries[token] = nil
                        return e
                    }
                    s.entries[token] = .waiting(cont, timer: nil)
                    return nil
                }
                if let refused {
                    cont.resume(throwing: refused)
                    return
                }
                do {
                    try send(token)
                } catch {
                    complete(token, with: .failure(error))
                    return
                }
                let clock = self.clock
                let timer = Task { [weak self] in
                    do { try await clock.sleep(for: timeout) } catch { return }
                    self?.complete(
                        token,
                        with: .failure(
                            ActorCallError(.deadlineExceeded, "no reply from \(subject) within \(timeout)")))
                }
                let finished = state.withLock { s -> Bool in
                    guard case .waiting(let c, nil) = s.entries[token] else { return true }
                    s.entries[token] = .waiting(c, timer: timer)
                    return false
                }
                if finished { timer.cancel() }
            }
        } onCancel: {
            let cancelledEarly = state.withLock { s -> Bool in
                if case .reserved = s.entries[token] {
                    s.entries[token] = .cancelled
                    return true
                }
                return false
            }
            if !cancelledEarly { complete(token, with: .failure(CancellationError())) }
        }
    }

    /// Completes the request `token` (a reply or a failure); later completions of the same token are ignored.
    public func complete(_ token: UInt64, with result: Result<[UInt8], any Error>) {
        let entry = state.withLock { s -> Entry? in
            guard case .waiting = s.entries[token] else { return nil }
            return s.entries.removeValue(forKey: token)
        }
        guard case .waiting(let cont, let timer) = entry else { return }
        timer?.cancel()
        cont.resume(with: result)
    }

    /// Fails every waiting request and refuses new ones with `error` (the transport closed).
    public func close(_ error: ActorCallError) {
        state.withLock { $0.closed = error }
        failAll(error)
    }

    /// Fails every waiting request with `error` (the transport lost its connection).
    public func failAll(_ error: any Error) {
        let waiting = state.withLock { s -> [Entry] in
            var out: [Entry] = []
            for (token, e) in s.entries {
                if case .waiting = e {
                    out.append(e)
                    s.entries[token] = nil
                }
            }
            return out
        }
        for case .waiting(let cont, let timer) in waiting {
            timer?.cancel()
            cont.resume(throwing: error)
        }
    }
}
