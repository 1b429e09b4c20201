import Synchronization

/// Bounds the outgoing calls of one actor system: at most `limit` await replies; up to `queueMax` more callers wait
/// in FIFO order for a slot (their deadline keeps running while they wait); beyond that a call fails at once with
/// `.resourceExhausted`.
final class CallAdmission: Sendable {
    enum Entry {
        case reserved
        case cancelled
        case granted
        case waiting(CheckedContinuation<Void, any Error>, timer: Task<Void, Never>?)
    }

    struct State {
        var inFlight = 0
        var nextToken: UInt64 = 0
        var entries: [UInt64: Entry] = [:]
        var order: [UInt64] = []
        var head = 0
        var closed: ActorCallError?

        /// The oldest queued token still present, removed from the queue.
        mutating func popOldest() -> UInt64? {
            while head < order.count {
                let t = order[head]
                head += 1
                if entries[t] != nil {
                    compact()
                    return t
                }
            }
            compact()
            return nil
        }

        mutating func compact() {
            if head == order.count {
                order.removeAll(keepingCapacity: true)
                head = 0
            } else if head > 1024 && head * 2 > order.count {
                order.removeFirst(head)
                head = 0
            }
        }
    }

    let limit: Int
    let queueMax: Int
    private let clock: CallClock
    private let state = Mutex(State())

    init(limit: Int, queueMax: Int, clock: CallClock) {
        self.limit = max(1, limit)
        self.queueMax = max(0, queueMax)
        self.clock = clock
    }

    /// Calls holding a slot now.
    var inFlight: Int { state.withLock { $0.inFlight } }
    /// Callers waiting for a slot now.
    var queued: Int { state.withLock { $0.entries.count } }

    /// Takes a slot, waiting at most `timeout` for one; pair every successful call with `release()`.
    func acquire(timeout: Duration, what: @autoclosure () -> String) async throws {
        let token: UInt64? = try state.withLock { s throws(ActorCallError) in
            if let e = s.closed { throw e }
            // `release()` hands a slot to a queued caller before it lowers the count, so a free slot means nobody
            // is queued and taking it keeps FIFO order.
            if s.inFlight < limit {
                s.inFlight += 1
                return nil
            }
            guard s.entries.count < queueMax else {
                throw ActorCallError(
                    .resourceExhausted, "\(limit) calls in flight and \(queueMax) queued; refusing \(what())")
            }
            s.nextToken += 1
            s.entries[s.nextToken] = .reserved
            s.order.append(s.nextToken)
            return s.nextToken
        }
        guard let token else { return }
        let description = what()
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (cont: CheckedContinuation<Void, any Error>) in
                let early = state.withLock { s -> Result<Void, any Error>? in
                    switch s.entries[token] {
                    case .granted:
                        s.entries[token] = nil
                        return .success(())
                    case .cancelled:
                        s.entries[token] = nil
                        return .failure(CancellationError())
                    default:
                        if let e = s.closed {
                            s.entries[token] = nil
                            return .failure(e)
                        }
                        s.entries[token] = .waiting(cont, timer: nil)
                        return nil
                    }
                }
                if let early {
                    cont.resume(with: early)
                    return
                }
                let clock = self.clock
                let timer = Task { [weak self] in
                    do { try await clock.sleep(for: timeout) } catch { return }
                    self?.fail(
                        token,
                        ActorCallError(.deadlineExceeded, "\(description) waited \(timeout) for an in-flight slot"))
                }
                let done = state.withLock { s -> Bool in
                    guard case .waiting(let c, nil) = s.entries[token] else { return true }
                    s.entries[token] = .waiting(c, timer: timer)
                    return false
                }
                if done { timer.cancel() }
            }
        } onCancel: {
            let early = state.withLock { s -> Bool in
                if case .reserved = s.entries[token] {
                    s.entries[token] = .cancelled
                    return true
                }
                return false
            }
            if !early { fail(token, CancellationError()) }
        }
    }

    private func fail(_ token: UInt64, _ error: any Error) {
        let entry = state.withLock { s -> Entry? in
            guard case .waiting = s.entries[token] else { return nil }
            return s.entries.removeValue(forKey: token)
        }
        guard case .waiting(let cont, let timer) = entry else { return }
        timer?.cancel()
        cont.resume(throwing: error)
    }

    /// Returns a slot: the oldest waiting caller takes it over, else the in-flight count drops.
    func release() {
        let woken = state.withLock { s -> Entry? in
            while let t = s.popOldest() {
                switch s.entries[t] {
                case .reserved:
                    s.entries[t] = .granted
                    return nil
                case .waiting:
                    return s.entries.removeValue(forKey: t)
                default:
                    continue
                }
            }
            s.inFlight -= 1
            return nil
        }
        if case .waiting(let cont, let timer) = woken {
            timer?.cancel()
            cont.resume()
        }
    }

    /// Fails every waiting caller and refuses new ones (the system shuts down).
    func close(_ error: ActorCallError) {
        let waiting = state.withLock { s -> [Entry] in
            s.closed = error
            var out: [Entry] = []
            for (t, e) in s.entries {
                if case .waiting = e {
                    out.append(e)
                    s.entries[t] = nil
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
