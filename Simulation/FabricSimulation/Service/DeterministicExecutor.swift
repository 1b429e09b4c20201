import FabricCore
import Foundation
import Synchronization

/// Runs every job of Swift concurrency on one thread, in the order they became ready: the scheduler under the
/// service simulation, so that production actors and tasks interleave the same way on every run of a seed.
///
/// It takes over the runtime's global executor through `swift_task_enqueueGlobal_hook` (every task, actor and
/// continuation resumption that is not bound to a custom executor lands there), and refuses real-clock sleeps
/// through the delay hooks: code on a simulated path must sleep on the injected `TaskClock`, and a real sleep would
/// make the run depend on the machine, so it stops the run naming the problem. Installed once per process and never
/// removed: the process must be the simulator (tests run `fabric-sim` as a child process).
///
/// Time does not pass while jobs run; `VirtualClock` advances only when the queue is empty (`runUntilIdle`).
public final class DeterministicExecutor: TaskExecutor, @unchecked Sendable {
    private let queue = Mutex<JobQueue>(JobQueue())
    /// Jobs run so far.
    public private(set) var jobsRun = 0

    struct JobQueue {
        var jobs: [UnownedJob] = []
        var head = 0

        mutating func push(_ j: UnownedJob) { jobs.append(j) }

        mutating func pop() -> UnownedJob? {
            guard head < jobs.count else { return nil }
            let j = jobs[head]
            head += 1
            if head > 4096 && head * 2 > jobs.count {
                jobs.removeFirst(head)
                head = 0
            }
            return j
        }
    }

    /// The process's one executor, installed on first use.
    public static let shared: DeterministicExecutor = {
        let e = DeterministicExecutor()
        e.install()
        return e
    }()

    private init() {}

    public func enqueue(_ job: UnownedJob) { queue.withLock { $0.push(job) } }

    typealias EnqueueOriginal = @convention(thin) (UnownedJob) -> Void
    typealias EnqueueHook = @convention(thin) (UnownedJob, EnqueueOriginal) -> Void
    typealias DelayOriginal = @convention(thin) (UInt64, UnownedJob) -> Void
    typealias DelayHook = @convention(thin) (UInt64, UnownedJob, DelayOriginal) -> Void
    typealias DeadlineOriginal = @convention(thin) (Int64, Int64, Int64, Int64, Int32, UnownedJob) -> Void
    typealias DeadlineHook =
        @convention(thin) (Int64, Int64, Int64, Int64, Int32, UnownedJob, DeadlineOriginal) ->
        Void

    private func install() {
        let handle = dlopen(nil, RTLD_NOW)
        guard let enqueue = dlsym(handle, "swift_task_enqueueGlobal_hook") else {
            fatalError("fabric-sim: this Swift runtime has no swift_task_enqueueGlobal_hook")
        }
        enqueue.assumingMemoryBound(to: EnqueueHook?.self).pointee = { job, _ in
            DeterministicExecutor.shared.enqueue(job)
        }
        if let delay = dlsym(handle, "swift_task_enqueueGlobalWithDelay_hook") {
            delay.assumingMemoryBound(to: DelayHook?.self).pointee = { _, _, _ in
                DeterministicExecutor.realSleep()
            }
        }
        if let deadline = dlsym(handle, "swift_task_enqueueGlobalWithDeadline_hook") {
            deadline.assumingMemoryBound(to: DeadlineHook?.self).pointee = { _, _, _, _, _, _, _ in
                DeterministicExecutor.realSleep()
            }
        }
    }

    static func realSleep() -> Never {
        fatalError(
            "fabric-sim: code on a simulated path slept on the real clock (Task.sleep or ContinuousClock);"
                + " it must sleep on its injected TaskClock")
    }

    /// Runs jobs until none is ready; returns how many ran.
    @discardableResult
    public func runUntilIdle() -> Int {
        var n = 0
        while let job = queue.withLock({ $0.pop() }) {
            job.runSynchronously(on: asUnownedTaskExecutor())
            n += 1
        }
        jobsRun += n
        return n
    }
}

/// The simulation's time: a `Clock` that production code sleeps on (through `TaskClock` and the actor systems) and
/// that moves only when the simulator advances it. Sleepers wake in deadline order, ties in the order they slept.
public final class VirtualClock: Clock, @unchecked Sendable {
    public struct Instant: InstantProtocol {
        /// Time since the simulation began.
        public var offset: Duration

        public func advanced(by d: Duration) -> Instant { Instant(offset: offset + d) }
        public func duration(to other: Instant) -> Duration { other.offset - offset }
        public static func < (a: Instant, b: Instant) -> Bool { a.offset < b.offset }
    }

    private struct Sleeper {
        var deadline: Instant
        var seq: UInt64
        var continuation: CheckedContinuation<Void, any Error>?
    }

    private struct State {
        var now = Instant(offset: .zero)
        var seq: UInt64 = 0
        /// Sleepers by sequence number; `order` is kept sorted by (deadline, seq) lazily through a heap.
        var sleepers: [UInt64: Sleeper] = [:]
        var heap: [(Instant, UInt64)] = []
        /// Sleeps whose task was cancelled before they registered.
        var cancelledEarly: Set<UInt64> = []
    }

    private let state = Mutex(State())
    /// The wall-clock time the simulation began at.
    public let start: Timestamp

    public init(start: Timestamp) { self.start = start }

    public var now: Instant { state.withLock { $0.now } }
    public var minimumResolution: Duration { .nanoseconds(1) }

    /// The wall-clock time now (millisecond resolution, as production stamps).
    public var wallNow: Timestamp {
        let o = now.offset.components
        return Timestamp(
            millisecondsSinceEpoch: start.millisecondsSinceEpoch + o.seconds * 1000 + o.attoseconds
                / 1_000_000_000_000_000)
    }

    public func sleep(until deadline: Instant, tolerance: Duration? = nil) async throws {
        try Task.checkCancellation()
        let seq: UInt64 = state.withLock {
            $0.seq += 1
            return $0.seq
        }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (c: CheckedContinuation<Void, any Error>) in
                let refused = state.withLock { s -> Bool in
                    if s.cancelledEarly.remove(seq) != nil { return true }
                    s.sleepers[seq] = Sleeper(deadline: deadline, seq: seq, continuation: c)
                    Self.heapPush(&s.heap, (deadline, seq))
                    return false
                }
                if refused { c.resume(throwing: CancellationError()) }
            }
        } onCancel: {
            let c = state.withLock { s -> CheckedContinuation<Void, any Error>? in
                guard let sl = s.sleepers.removeValue(forKey: seq) else {
                    s.cancelledEarly.insert(seq)
                    return nil
                }
                return sl.continuation
            }
            c?.resume(throwing: CancellationError())
        }
    }

    /// When the earliest sleeper wakes, or nil when nobody sleeps.
    public func nextDeadline() -> Instant? {
        state.withLock { s in
            while let top = s.heap.first, s.sleepers[top.1] == nil { Self.heapPop(&s.heap) }
            return s.heap.first?.0
        }
    }

    /// Moves time to `t` (never backwards) and wakes every sleeper due by then, earliest first.
    public func advance(to t: Instant) {
        var due: [CheckedContinuation<Void, any Error>] = []
        state.withLock { s in
            if t > s.now { s.now = t }
            while let top = s.heap.first, top.0 <= s.now {
                Self.heapPop(&s.heap)
                if let sl = s.sleepers.removeValue(forKey: top.1), let c = sl.continuation { due.append(c) }
            }
            if s.cancelledEarly.count > 100_000 { s.cancelledEarly.removeAll() }
        }
        for c in due { c.resume() }
    }

    /// Sleepers waiting now.
    public var sleeperCount: Int { state.withLock { $0.sleepers.count } }

    private static func less(_ a: (Instant, UInt64), _ b: (Instant, UInt64)) -> Bool {
        a.0 != b.0 ? a.0 < b.0 : a.1 < b.1
    }

    private static func heapPush(_ h: inout [(Instant, UInt64)], _ e: (Instant, UInt64)) {
        h.append(e)
        var i = h.count - 1
        while i > 0 {
            let p = (i - 1) / 2
            guard less(h[i], h[p]) else { break }
            h.swapAt(i, p)
            i = p
        }
    }

    private static func heapPop(_ h: inout [(Instant, UInt64)]) {
        guard !h.isEmpty else { return }
        h.swapAt(0, h.count - 1)
        h.removeLast()
        var i = 0
        while true {
            let l = 2 * i + 1
            let r = l + 1
            var m = i
            if l < h.count && less(h[l], h[m]) { m = l }
            if r < h.count && less(h[r], h[m]) { m = r }
            if m == i { break }
            h.swapAt(i, m)
            i = m
        }
    }
}

/// The wall-clock face of a `VirtualClock`, for production code's `WallClock` seam.
public struct VirtualWallClock: WallClock {
    public let clock: VirtualClock
    public init(_ clock: VirtualClock) { self.clock = clock }
    public func now() -> Timestamp { clock.wallNow }
}
