import FabricCore
import FabricLog
import FabricStore
import Foundation
import Synchronization

/// A value that arrives later, awaited by any number of tasks.
final class Promise<Value: Sendable>: Sendable {
    private struct State {
        var result: Result<Value, any Error>?
        var waiters: [CheckedContinuation<Value, any Error>] = []
    }
    private let state = Mutex(State())

    func fulfil(_ r: Result<Value, any Error>) {
        let waiters = state.withLock { s -> [CheckedContinuation<Value, any Error>] in
            guard s.result == nil else { return [] }
            s.result = r
            defer { s.waiters = [] }
            return s.waiters
        }
        for w in waiters { w.resume(with: r) }
    }

    func value() async throws -> Value {
        try await withCheckedThrowingContinuation { c in
            let ready = state.withLock { s -> Result<Value, any Error>? in
                if let r = s.result { return r }
                s.waiters.append(c)
                return nil
            }
            if let ready { c.resume(with: ready) }
        }
    }
}

/// Writes workload changes to the store in the order they were made, per workload.
///
/// The workload service changes its in-memory state synchronously (so the scheduler never sees stale
/// capacity) and enqueues the write here; writes for one workload go through one lane, in order. A failed
/// create is reported to its caller (the POST answers 503); a failed update is retried with backoff, because
/// memory has already moved on and dropping it would lose history.
final class PersistQueue: Sendable {
    enum Op: Sendable {
        /// A new workload, its first event and its JSON document (`FabricJSON.encode` of it, when at hand).
        case create(Workload, WorkloadEvent, Data?)
        /// A changed workload, its event if the phase changed, and its JSON document when at hand.
        case update(Workload, WorkloadEvent?, Data?)
        /// A node record (lane by node ID).
        case node(NodeInfo)
        /// Completes once every write queued before it for this workload is stored.
        case barrier(String)
    }

    private struct Job: Sendable {
        let op: Op
        let done: Promise<Void>
    }

    /// Lanes: writes for different workloads proceed in parallel, up to the store's connection count.
    static let lanesMax = 16
    static let retryBackoffMax: Duration = .seconds(5)

    private let lanes: [AsyncStream<Job>.Continuation]
    private let store: any StateStore
    private let logger: Logger
    private let pendingWrites = Gauge()

    init(
        store: any StateStore, lanes: Int, logger: Logger, events: (any EventPublisher)? = nil,
        timer: TaskClock = .continuous
    ) {
        self.store = store
        self.logger = logger
        var conts: [AsyncStream<Job>.Continuation] = []
        for _ in 0..<min(max(1, lanes), Self.lanesMax) {
            let (stream, cont) = AsyncStream.makeStream(of: Job.self, bufferingPolicy: .unbounded)
            conts.append(cont)
            Task { [store, logger, pendingWrites, events] in
                for await job in stream {
                    await Self.perform(job, store: store, logger: logger, events: events, timer: timer)
                    pendingWrites.add(-1)
                }
            }
        }
        self.lanes = conts
    }

    /// Writes not yet stored.
    var backlog: Int { pendingWrites.value }

    /// Enqueues a write; the returned promise completes when it is stored (or a create failed).
    @discardableResult
    func enqueue(_ op: Op) -> Promise<Void> {
        let id: String
        switch op {
        case .create(let w, _, _), .update(let w, _, _): id = w.id
        case .node(let n): id = "node/" + n.id
        case .barrier(let workloadID): id = workloadID
        }
        let done = Promise<Void>()
        pendingWrites.add(1)
        lanes[Self.lane(id, lanes.count)].yield(Job(op: op, done: done))
        return done
    }

    /// A promise fulfilled once every write queued so far for workload `id` is stored.
    func barrier(_ id: String) -> Promise<Void> { enqueue(.barrier(id)) }

    /// Stops accepting work; queued writes still complete.
    func finish() { for l in lanes { l.finish() } }

    static func lane(_ id: String, _ n: Int) -> Int {
        var h: UInt64 = 1_469_598_103_934_665_603
        for b in id.utf8 { h = (h ^ UInt64(b)) &* 1_099_511_628_211 }
        return Int(h % UInt64(n))
    }

    private static func perform(
        _ job: Job, store: any StateStore, logger: Logger, events: (any EventPublisher)?, timer: TaskClock
    ) async {
        switch job.op {
        case .barrier:
            job.done.fulfil(.success(()))
        case .node(let n):
            var delay: Duration = .milliseconds(50)
            for _ in 0..<20 {
                do {
                    try await store.upsertNode(n)
                    break
                } catch {
                    logger.warn("node write failed; retrying", ["node": n.id, "in": delay, "error": error])
                    try? await timer.sleep(for: delay)
                    delay = min(delay * 2, retryBackoffMax)
                }
            }
            job.done.fulfil(.success(()))
        case .create(let w, let e, let document):
            do {
                let stored = try await store.createWorkload(w, event: e, document: document)
                events?.publish(stored)
                job.done.fulfil(.success(()))
            } catch {
                job.done.fulfil(.failure(error))
            }
        case .update(let w, let e, let document):
            var delay: Duration = .milliseconds(50)
            while true {
                do {
                    if let stored = try await store.updateWorkload(w, event: e, document: document) {
                        events?.publish(stored)
                    }
                    job.done.fulfil(.success(()))
                    return
                } catch let err as FabricError where err.code == .conflict || err.code == .notFound {
                    // The stored row is not the one memory descends from (e.g. its create failed): nothing to retry.
                    logger.error("workload write dropped", ["workload": w.id, "version": w.version, "error": err])
                    job.done.fulfil(.failure(err))
                    return
                } catch {
                    logger.warn("workload write failed; retrying", ["workload": w.id, "in": delay, "error": error])
                    try? await timer.sleep(for: delay)
                    delay = min(delay * 2, retryBackoffMax)
                }
            }
        }
    }
}

/// A thread-safe counter.
final class Gauge: Sendable {
    private let v = Mutex(0)
    func add(_ d: Int) { v.withLock { $0 += d } }
    var value: Int { v.withLock { $0 } }
}
