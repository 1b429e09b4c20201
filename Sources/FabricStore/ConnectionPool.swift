import FabricCore
import Foundation

/// A database connection that a `ConnectionPool` owns and closes; it is only ever touched on its own thread.
protocol PooledConnection: AnyObject, SendableMetatype {
    /// Releases the connection (finalizes statements, closes the socket or file).
    func close()
}

/// A fixed set of database connections, each owned by its own dedicated thread, serving one shared FIFO of jobs.
///
/// Blocking C calls (SQLite, libpq) run only on these threads; callers `await` a continuation, so Swift's
/// cooperative pool never blocks. A connection is created on its thread and never leaves it: jobs receive it as
/// an argument.
///
/// ```
///   caller task ──run(body)──► [ job queue (FIFO, bounded) ] ──► thread 1 (connection 1)
///        ▲                                                  └──► thread N (connection N)
///        └───────────── continuation.resume(result) ◄──────────────────┘
/// ```
final class ConnectionPool<Connection: PooledConnection>: @unchecked Sendable {
    /// Jobs waiting for a connection before `run` fails with `.resourceExhausted`.
    static var pendingJobsMax: Int { 65_536 }

    private typealias Job = (Connection) -> Void

    private let condition = NSCondition()
    // Guarded by `condition`.
    private var jobs: [Job?] = []
    private var head = 0
    private var closed = false
    private var liveThreads = 0
    private var exitWaiters: [CheckedContinuation<Void, Never>] = []

    /// A short name used in thread names and error messages, e.g. `sqlite-writer`.
    let name: String

    /// Starts `size` threads; each opens its connection with `open` (on that thread) and then serves jobs.
    /// - Throws: the first connection error; threads that did connect are stopped again.
    init(name: String, size: Int, open: @escaping @Sendable () throws(FabricError) -> Connection)
        async throws(FabricError)
    {
        precondition(size >= 1, "a pool needs at least one connection")
        self.name = name
        liveThreads = size
        let results = await withTaskGroup(of: FabricError?.self) { group in
            for index in 0..<size {
                group.addTask {
                    await withCheckedContinuation { (started: CheckedContinuation<FabricError?, Never>) in
                        let thread = Thread { [self] in
                            Self.nameCurrentThread("\(name)-\(index)")
                            self.threadMain(open: open, started: started)
                        }
                        thread.start()
                    }
                }
            }
            var errors: [FabricError] = []
            for await result in group { if let result { errors.append(result) } }
            return errors
        }
        if let first = results.first {
            await shutdown()
            throw first
        }
    }

    /// Runs `body` on one of the pool's threads with that thread's connection and returns its result.
    /// - Throws: `.unavailable` once the pool is shut down, `.resourceExhausted` when too many jobs wait,
    ///   or whatever `body` throws.
    func run<T: Sendable>(_ body: @escaping @Sendable (Connection) throws(FabricError) -> T) async throws(FabricError)
        -> T
    {
        let result: Result<T, FabricError> = await withCheckedContinuation { continuation in
            let job: Job = { connection in
                do throws(FabricError) {
                    continuation.resume(returning: .success(try body(connection)))
                } catch {
                    continuation.resume(returning: .failure(error))
                }
            }
            if let refusal = enqueue(job) { continuation.resume(returning: .failure(refusal)) }
        }
        return try result.get()
    }

    /// Stops accepting jobs without waiting: the threads finish the queued jobs, close their connections and exit.
    /// For `deinit`s, which cannot await; `shutdown()` is the orderly way.
    func requestShutdown() {
        condition.lock()
        closed = true
        condition.broadcast()
        condition.unlock()
    }

    /// Stops accepting jobs, lets the threads finish the jobs already queued, closes the connections and waits
    /// until every thread has exited. Safe to call more than once.
    func shutdown() async {
        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
            condition.lock()
            closed = true
            if liveThreads == 0 {
                condition.unlock()
                done.resume()
                return
            }
            exitWaiters.append(done)
            condition.broadcast()
            condition.unlock()
        }
    }

    /// Whether `shutdown` was called.
    var isClosed: Bool {
        condition.lock()
        defer { condition.unlock() }
        return closed
    }

    /// Linux thread names hold 15 bytes; a new thread otherwise inherits its creator's name, which would make
    /// the database threads look like Dispatch workers in `top -H`.
    private static func nameCurrentThread(_ name: String) {
        Thread.current.name = String(name.utf8.prefix(15))!
    }

    private func enqueue(_ job: @escaping Job) -> FabricError? {
        condition.lock()
        defer { condition.unlock() }
        if closed { return FabricError(.unavailable, "the \(name) store is closed") }
        if jobs.count - head >= Self.pendingJobsMax {
            return FabricError(
                .resourceExhausted, "the \(name) store has \(Self.pendingJobsMax) operations waiting; try again later")
        }
        jobs.append(job)
        condition.signal()
        return nil
    }

    /// The next job, or nil when the pool is closed and the queue is drained.
    private func nextJob() -> Job? {
        condition.lock()
        defer { condition.unlock() }
        while head == jobs.count && !closed { condition.wait() }
        guard head < jobs.count else { return nil }
        let job = jobs[head]
        jobs[head] = nil
        head += 1
        // Compact once the consumed prefix dominates, so the array does not grow without bound.
        if head >= 1024 && head * 2 >= jobs.count {
            jobs.removeFirst(head)
            head = 0
        }
        return job
    }

    private func threadMain(
        open: @Sendable () throws(FabricError) -> Connection, started: CheckedContinuation<FabricError?, Never>
    ) {
        let connection: Connection
        do throws(FabricError) {
            connection = try open()
        } catch {
            threadExited()
            started.resume(returning: error)
            return
        }
        started.resume(returning: nil)
        while let job = nextJob() { job(connection) }
        connection.close()
        threadExited()
    }

    private func threadExited() {
        condition.lock()
        liveThreads -= 1
        let waiters = liveThreads == 0 ? exitWaiters : []
        if liveThreads == 0 { exitWaiters = [] }
        condition.unlock()
        for waiter in waiters { waiter.resume() }
    }
}
