// HTTPServer: libmicrohttpd with a pool of internal poll() threads; async responders through suspend/resume.
//
// One request, as seen by the access handler (always on the connection's worker thread):
//
//   headers in ──► RequestContext ──► body chunks: buffered, or counted ──► request complete (last call)
//                  (first call)       and dropped past bodyBytesMax                  │
//                                                                                   ▼
//            dispatch: Task.immediate(executorPreference: context) { respond } runs here until it awaits
//                                                                                   │
//            pump ◄─────────────────────────────────────────────────────────────────┤
//             │ jobs queued on the context (an actor hop, a yield)? run them here, pump again
//             │ response ready? queue it
//             │ else MHD_suspend_connection; a job enqueued from another thread (timer, I/O, busy actor)
//             │ or the response resumes the connection, libmicrohttpd calls again ──► pump
//
//   request completed (sent, client gone, timeout, shutdown) ──► release the context; stray jobs go global
//
// The context's state is guarded by its own lock. A suspension happens under that lock before anyone can see
// `suspended`, so a resume never precedes its suspend, and each suspension is resumed at most once.
import CMicroHTTPD
import CShims
import FabricCore
import Foundation
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// Settings of the HTTP server; durations are `Duration`, sizes are bytes.
public struct HTTPServerSettings: Sendable, Equatable {
    /// Where to listen: "127.0.0.1:8080", ":8080" (every IPv4 interface), "0.0.0.0:0" (a free port), "[::1]:8080".
    public var address: String
    /// libmicrohttpd worker threads, each running its own poll loop over its share of the connections. Handlers
    /// run on them too (see `HTTPServer`), so a handler that blocks holds up its worker's other connections.
    public var threadCount: Int
    /// The largest request body accepted; a larger one gets 413 without being buffered.
    public var bodyBytesMax: Int
    /// An oversized body up to this size is read and dropped so that the 413 arrives on a healthy keep-alive
    /// connection; past it (or with `Expect: 100-continue`) the 413 goes out at once and the connection closes.
    public var discardBytesMax: Int
    /// Open connections at most; more are refused at accept.
    public var connectionsMax: Int
    /// Open connections from one client address at most (0: no limit), so that one client holding connections
    /// open (idle, or trickling its headers) cannot take all of `connectionsMax`.
    public var connectionsPerClientMax: Int
    /// A connection idle (or stalled mid-request) this long is closed. Suspended connections do not time out.
    public var connectionTimeout: Duration
    /// Per-connection buffer for the request line and headers (libmicrohttpd answers 431/414 past it).
    public var connectionMemoryBytesMax: Int
    /// Pending connections the kernel queues before accept.
    public var listenBacklog: Int
    /// How long `shutdown()` waits for in-flight requests before answering the stragglers 503.
    public var shutdownGracePeriod: Duration

    public init(
        address: String = "127.0.0.1:8080", threadCount: Int = HTTPServerSettings.threadCountDefault,
        bodyBytesMax: Int = Limits.requestBodyBytesMax,
        discardBytesMax: Int = HTTPServerSettings.discardBytesMaxDefault,
        connectionsMax: Int = HTTPServerSettings.connectionsMaxDefault,
        connectionsPerClientMax: Int = HTTPServerSettings.connectionsPerClientMaxDefault,
        connectionTimeout: Duration = HTTPServerSettings.connectionTimeoutDefault,
        connectionMemoryBytesMax: Int = HTTPServerSettings.connectionMemoryBytesMaxDefault,
        listenBacklog: Int = HTTPServerSettings.listenBacklogDefault,
        shutdownGracePeriod: Duration = HTTPServerSettings.shutdownGracePeriodDefault
    ) {
        self.address = address
        self.threadCount = threadCount
        self.bodyBytesMax = bodyBytesMax
        self.discardBytesMax = discardBytesMax
        self.connectionsMax = connectionsMax
        self.connectionsPerClientMax = connectionsPerClientMax
        self.connectionTimeout = connectionTimeout
        self.connectionMemoryBytesMax = connectionMemoryBytesMax
        self.listenBacklog = listenBacklog
        self.shutdownGracePeriod = shutdownGracePeriod
    }

    /// One worker thread per core: handlers that do not suspend run on these threads.
    public static let threadCountDefault = max(1, ProcessInfo.processInfo.activeProcessorCount)
    public static let discardBytesMaxDefault = 8 << 20
    public static let connectionsMaxDefault = 4096
    public static let connectionsPerClientMaxDefault = 0
    public static let connectionTimeoutDefault = Duration.seconds(60)
    public static let connectionMemoryBytesMaxDefault = 32 << 10
    public static let listenBacklogDefault = 1024
    public static let shutdownGracePeriodDefault = Duration.seconds(10)

    public static let `default` = HTTPServerSettings()
}

/// One answered request, for the access log.
public struct AccessLogEntry: Sendable, Equatable {
    public var method: HTTPMethod
    public var path: String
    public var status: Int
    /// From the end of the request headers to the response being queued.
    public var duration: Duration
}

/// Receives one entry per answered request, on a server thread: keep it short and non-blocking.
public typealias AccessLog = @Sendable (AccessLogEntry) -> Void

/// An HTTP/1.1 server on libmicrohttpd that answers every request with a `HTTPResponder`.
///
/// `start()` binds and serves on the worker threads; `shutdown()` stops accepting, lets in-flight requests finish
/// within the grace period, answers the rest 503 and stops. `run()` does both around task cancellation.
///
/// Each request's task starts on its connection's worker thread and prefers that thread as its executor: a
/// handler that never waits on another thread (no I/O, idle actors) is answered without leaving it, and one that
/// waits costs one suspend/resume of its connection while the worker serves other connections. Requests on
/// different connections run in parallel. Blocking calls in handlers block a worker: keep them off this path.
public final class HTTPServer: Sendable {
    public let settings: HTTPServerSettings
    private let core: ServerCore
    private let state = Mutex<ServerState>(ServerState())

    /// A server that will answer with `responder` and report each answer to `accessLog`.
    public init(settings: HTTPServerSettings = .default, responder: some HTTPResponder, accessLog: AccessLog? = nil) {
        self.settings = settings
        self.core = ServerCore(responder: responder, accessLog: accessLog, settings: settings)
    }

    /// The port the server listens on once started (the real one when the address asked for port 0), else 0.
    public var port: Int {
        state.withLock { if case .running(let daemon) = $0.phase { Int(daemon.port) } else { 0 } }
    }

    /// Requests between their headers arriving and their response being sent (or their connection dying).
    public var inFlightRequests: Int { core.inFlight.load(ordering: .relaxed) }

    /// Requests whose connection is suspended while their task waits (for tests and diagnostics).
    public var suspendedRequests: Int { core.suspendedCount }

    /// Binds the address and starts the worker threads; `.invalidArgument` for a bad address or settings,
    /// `.unavailable` when the address cannot be bound, `.failedPrecondition` when already started.
    public func start() throws(FabricError) {
        let address = try BindAddress(parsing: settings.address)
        guard settings.threadCount >= 1, settings.bodyBytesMax >= 0, settings.connectionsMax >= 1,
            settings.connectionMemoryBytesMax >= 4096
        else { throw FabricError(.invalidArgument, "HTTP server settings out of range: \(settings)") }
        try state.withLock { state throws(FabricError) in
            guard case .idle = state.phase else {
                throw FabricError(.failedPrecondition, "HTTP server already started")
            }
            state.phase = .running(try Self.startDaemon(address: address, settings: settings, core: core))
        }
    }

    /// Stops accepting, waits up to `gracePeriod` (default: the settings') for in-flight requests, answers the
    /// ones still running 503 (cancelling their tasks), then stops the worker threads. Safe to call twice.
    public func shutdown(gracePeriod: Duration? = nil) async {
        let grace = gracePeriod ?? settings.shutdownGracePeriod
        let daemon: Daemon? = state.withLock { state in
            guard case .running(let daemon) = state.phase else { return nil }
            state.phase = .stopping
            return daemon
        }
        guard let daemon else {
            await waitUntilStopped()
            return
        }
        // From now on every response says `Connection: close` (set here, not in the detached task, which may start
        // late on a busy machine).
        core.draining.store(true, ordering: .relaxed)
        // Detached: the waits inside must not end early because the caller's task was cancelled.
        await Task.detached { [core] in await core.stop(daemon, gracePeriod: grace) }.value
        let waiters = state.withLock { state in
            state.phase = .stopped
            defer { state.waiters.removeAll() }
            return state.waiters
        }
        for waiter in waiters { waiter.resume() }
    }

    /// Starts the server and serves until the calling task is cancelled, then shuts down gracefully.
    public func run() async throws {
        try start()
        await withTaskCancellationHandler {
            await waitUntilStopped()
        } onCancel: {
            Task.detached { await self.shutdown() }
        }
    }

    /// Returns once the server has stopped (at once if it never started).
    private func waitUntilStopped() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let waiting = state.withLock { state in
                switch state.phase {
                case .running, .stopping:
                    state.waiters.append(continuation)
                    return true
                case .idle, .stopped:
                    return false
                }
            }
            if !waiting { continuation.resume() }
        }
    }

    private static func startDaemon(
        address: BindAddress, settings: HTTPServerSettings, core: ServerCore
    ) throws(FabricError) -> Daemon {
        var flags = fabric_mhd_pool_flags()
        if address.isIPv6 { flags |= MHD_USE_IPv6.rawValue }
        let timeoutSeconds = max(1, Int(settings.connectionTimeout.components.seconds))
        let retained = Unmanaged.passRetained(core)
        let pointer: OpaquePointer? = address.withSockAddr { sockaddr in
            var options = fabric_mhd_options(
                flags: flags, port: address.port, bind_address: sockaddr,
                thread_pool_size: UInt32(clamping: settings.threadCount),
                connection_limit: UInt32(clamping: settings.connectionsMax),
                per_ip_connection_limit: UInt32(clamping: settings.connectionsPerClientMax),
                connection_timeout_s: UInt32(clamping: timeoutSeconds),
                connection_memory_limit: settings.connectionMemoryBytesMax,
                listen_backlog: Int32(clamping: settings.listenBacklog))
            return fabric_mhd_start(&options, accessHandler, retained.toOpaque(), requestCompleted, retained.toOpaque())
        }
        guard let pointer else {
            let reason = String(cString: strerror(errno))
            retained.release()
            throw FabricError(.unavailable, "cannot listen on \(address): \(reason)")
        }
        return Daemon(pointer: pointer, port: fabric_mhd_bound_port(pointer), core: retained)
    }
}

/// The started daemon: its handle, its port, and the reference to the core that libmicrohttpd holds.
struct Daemon: @unchecked Sendable {
    let pointer: OpaquePointer
    let port: UInt16
    let core: Unmanaged<ServerCore>
}

/// The server's lifecycle and the tasks waiting for it to stop.
struct ServerState: Sendable {
    enum Phase: Sendable {
        case idle
        case running(Daemon)
        case stopping
        case stopped
    }

    var phase = Phase.idle
    var waiters: [CheckedContinuation<Void, Never>] = []
}

// MARK: - libmicrohttpd callbacks (C function pointers: no captures)

private let accessHandler: MHD_AccessHandlerCallback = {
    cls, connection, url, method, _, uploadData, uploadDataSize, requestContext in
    let core = Unmanaged<ServerCore>.fromOpaque(cls!).takeUnretainedValue()
    return core.access(
        connection: connection!, url: url!, method: method!, uploadData: uploadData, uploadDataSize: uploadDataSize!,
        requestContext: requestContext!)
}

private let requestCompleted: MHD_RequestCompletedCallback = { cls, _, requestContext, _ in
    guard let requestContext, let raw = requestContext.pointee else { return }
    requestContext.pointee = nil
    let core = Unmanaged<ServerCore>.fromOpaque(cls!).takeUnretainedValue()
    core.completed(Unmanaged<RequestContext>.fromOpaque(raw).takeRetainedValue())
}

// MARK: - The core: everything the callbacks touch

/// State shared by the worker threads and the handler tasks of one server.
final class ServerCore: Sendable {
    let responder: any HTTPResponder
    let accessLog: AccessLog?
    let bodyBytesMax: Int
    let discardBytesMax: Int
    /// Live request contexts: created when headers arrive, released when the request completes.
    let inFlight = Atomic<Int>(0)
    /// Set by shutdown: responses carry `Connection: close` so that keep-alive clients go away.
    let draining = Atomic<Bool>(false)
    private let registry = Mutex<Registry>(Registry())

    /// Suspended requests (shutdown must resume every one before stopping the daemon) and whether new ones may
    /// still suspend.
    private struct Registry {
        var closing = false
        var suspended: [ObjectIdentifier: RequestContext] = [:]
    }

    /// How long shutdown waits for forced 503s to be written before stopping the worker threads.
    static let forcedFlushWait = Duration.milliseconds(500)
    /// How often shutdown looks at the in-flight count.
    static let drainPollInterval = Duration.milliseconds(5)

    init(responder: some HTTPResponder, accessLog: AccessLog?, settings: HTTPServerSettings) {
        self.responder = responder
        self.accessLog = accessLog
        self.bodyBytesMax = settings.bodyBytesMax
        self.discardBytesMax = max(settings.discardBytesMax, settings.bodyBytesMax)
    }

    // MARK: Access handler

    func access(
        connection: OpaquePointer, url: UnsafePointer<CChar>, method: UnsafePointer<CChar>,
        uploadData: UnsafePointer<CChar>?, uploadDataSize: UnsafeMutablePointer<Int>,
        requestContext: UnsafeMutablePointer<UnsafeMutableRawPointer?>
    ) -> MHD_Result {
        guard let raw = requestContext.pointee else {
            return headersArrived(connection: connection, url: url, method: method, requestContext: requestContext)
        }
        let context = Unmanaged<RequestContext>.fromOpaque(raw).takeUnretainedValue()
        let size = uploadDataSize.pointee
        if size > 0 {
            uploadDataSize.pointee = 0
            return bodyChunk(context, UnsafeRawBufferPointer(start: uploadData, count: size))
        }
        if !context.dispatched {
            if context.oversized { return queue(tooLarge(), context: context, connection: connection) }
            return dispatch(context, connection: connection)
        }
        // Called again after a resume: the connection runs; the work that woke it is in the context.
        let wasSuspended = context.state.withLock { state in
            defer {
                state.suspended = false
                state.resumeRequested = false
            }
            return state.suspended
        }
        if wasSuspended { unregister(context) }
        return pump(context, connection: connection)
    }

    private func headersArrived(
        connection: OpaquePointer, url: UnsafePointer<CChar>, method: UnsafePointer<CChar>,
        requestContext: UnsafeMutablePointer<UnsafeMutableRawPointer?>
    ) -> MHD_Result {
        let context = RequestContext(
            connection: connection, method: internMethod(method), path: String(cString: url),
            start: accessLog == nil ? nil : ContinuousClock.now)
        requestContext.pointee = Unmanaged.passRetained(context).toOpaque()
        inFlight.add(1, ordering: .relaxed)

        guard let contentLength = MHD_lookup_connection_value(connection, .HEADER_KIND, "Content-Length") else {
            return .YES
        }
        // Two Content-Length headers that disagree leave the body's end ambiguous (a proxy in front may read it
        // differently: request smuggling): refused at once, and the connection closes. Only requests that declare
        // a length pay for the look at every header.
        if Self.contentLengths(of: connection).count > 1 {
            context.oversized = true  // the body, if any, is not read
            return queue(
                .error(FabricError(.invalidArgument, "the request has Content-Length headers that disagree")),
                context: context, connection: connection)
        }
        // Answer only in the call after the body (libmicrohttpd treats an earlier response as a refusal of the body
        // and closes the connection after it), except when the declared body is too large.
        guard let length = Int(String(cString: contentLength)), length > 0 else { return .YES }
        if length <= bodyBytesMax {
            context.body.reserveCapacity(length)
            return .YES
        }
        context.oversized = true
        if length > discardBytesMax || MHD_lookup_connection_value(connection, .HEADER_KIND, "Expect") != nil {
            // Too large to read and drop, or the client waits for 100 Continue before sending it: answer at once;
            // libmicrohttpd closes the connection after this response.
            return queue(tooLarge(), context: context, connection: connection)
        }
        return .YES
    }

    private func bodyChunk(_ context: RequestContext, _ chunk: UnsafeRawBufferPointer) -> MHD_Result {
        context.bodyBytesReceived += chunk.count
        if context.oversized || context.bodyBytesReceived > bodyBytesMax {
            if !context.oversized {
                context.oversized = true
                context.body = Data()
            }
            // A response cannot be queued while a chunk is being delivered: past the discard limit, hang up.
            return context.bodyBytesReceived > discardBytesMax ? .NO : .YES
        }
        context.body.append(contentsOf: chunk)
        return .YES
    }

    private func tooLarge() -> Response {
        .error(FabricError(.payloadTooLarge, "request body exceeds \(bodyBytesMax) bytes"))
    }

    // MARK: Dispatch and pump

    private func dispatch(_ context: RequestContext, connection: OpaquePointer) -> MHD_Result {
        context.dispatched = true
        let request = Request(
            method: context.method, path: context.path, query: Self.query(of: connection),
            headers: Self.headers(of: connection), body: context.body)
        context.body = Data()
        let responder = self.responder
        let operation: @Sendable () async -> Void = {
            let response: Response
            do { response = try await responder.respond(to: request) } catch { response = .error(from: error) }
            context.finish(with: response)
        }
        let task: Task<Void, Never>
        if #available(macOS 26, *) {
            // Runs on this worker thread until the responder's first suspension; what follows runs on the context.
            task = Task.immediate(executorPreference: context, operation: operation)
        } else {
            task = Task(executorPreference: context, operation: operation)
        }
        context.state.withLock { $0.task = task }
        return pump(context, connection: connection)
    }

    /// Runs the request's queued jobs on this worker thread until the response is ready (then queues it) or the
    /// task waits for something outside (then suspends the connection until a job or the response arrives).
    private func pump(_ context: RequestContext, connection: OpaquePointer) -> MHD_Result {
        enum Step {
            case run([UnownedJob])
            case queue(Response)
            case wait
            case hangUp
        }
        while true {
            var cancel: Task<Void, Never>?
            let step: Step = context.state.withLock { state in
                if state.finished { return .hangUp }  // a response went out already
                if !state.jobs.isEmpty {
                    let jobs = state.jobs
                    state.jobs = []
                    return .run(jobs)
                }
                if let response = state.response {
                    state.finished = true
                    return .queue(response)
                }
                if register(context) {
                    MHD_suspend_connection(connection)
                    state.suspended = true
                    return .wait
                }
                state.finished = true
                cancel = state.task
                return .queue(.error(FabricError(.unavailable, "server is shutting down")))
            }
            cancel?.cancel()
            switch step {
            case .run(let jobs):
                for job in jobs { job.runSynchronously(on: context.asUnownedTaskExecutor()) }
            case .queue(let response):
                return queue(response, context: context, connection: connection)
            case .wait:
                return .YES
            case .hangUp:
                return .NO
            }
        }
    }

    private func queue(_ response: Response, context: RequestContext, connection: OpaquePointer) -> MHD_Result {
        let status = (100...999).contains(response.status) ? response.status : 500
        let body = response.body
        let mhdResponse = body.withUnsafeBytes { bytes in
            MHD_create_response_from_buffer(
                bytes.count, UnsafeMutableRawPointer(mutating: bytes.baseAddress),
                .RESPMEM_MUST_COPY)
        }
        guard let mhdResponse else { return .NO }
        for field in response.headers { _ = MHD_add_response_header(mhdResponse, field.name, field.value) }
        if draining.load(ordering: .relaxed) { _ = MHD_add_response_header(mhdResponse, "Connection", "close") }
        let result = MHD_queue_response(connection, UInt32(status), mhdResponse)
        MHD_destroy_response(mhdResponse)
        if let accessLog, let start = context.start {
            accessLog(
                AccessLogEntry(
                    method: context.method, path: context.path, status: status, duration: ContinuousClock.now - start))
        }
        return result
    }

    func completed(_ context: RequestContext) {
        inFlight.subtract(1, ordering: .relaxed)
        let (task, orphans, wasSuspended) = context.state.withLock { state in
            let pending = state.finished ? nil : state.task  // still running: the client is gone, stop it
            let jobs = state.jobs
            let wasSuspended = state.suspended  // resumed, then closed before the access handler ran again
            state.finished = true
            state.suspended = false
            state.jobs = []
            return (pending, jobs, wasSuspended)
        }
        if wasSuspended { unregister(context) }
        task?.cancel()
        for job in orphans { globalConcurrentExecutor.enqueue(ExecutorJob(job)) }
    }

    // MARK: Shutdown

    private func register(_ context: RequestContext) -> Bool {
        registry.withLock { registry in
            guard !registry.closing else { return false }
            registry.suspended[ObjectIdentifier(context)] = context
            return true
        }
    }

    var suspendedCount: Int { registry.withLock { $0.suspended.count } }

    private func unregister(_ context: RequestContext) {
        registry.withLock { _ = $0.suspended.removeValue(forKey: ObjectIdentifier(context)) }
    }

    func stop(_ daemon: Daemon, gracePeriod: Duration) async {
        draining.store(true, ordering: .relaxed)
        let listenSocket = MHD_quiesce_daemon(daemon.pointer)
        let clock = ContinuousClock()
        await waitForDrain(until: clock.now + gracePeriod, clock: clock)

        // Stragglers: no new suspensions from here on; answer every suspended request 503 and resume it.
        let stragglers = registry.withLock { registry in
            registry.closing = true
            return Array(registry.suspended.values)
        }
        for context in stragglers {
            let task = context.state.withLock { state -> Task<Void, Never>? in
                guard !state.finished, state.response == nil else { return nil }
                state.response = .error(FabricError(.unavailable, "server is shutting down"))
                context.resumeIfSuspended(&state)
                return state.task
            }
            task?.cancel()
        }
        if !stragglers.isEmpty { await waitForDrain(until: clock.now + Self.forcedFlushWait, clock: clock) }

        MHD_stop_daemon(daemon.pointer)
        if listenSocket >= 0 { close(listenSocket) }
        daemon.core.release()
    }

    private func waitForDrain(until deadline: ContinuousClock.Instant, clock: ContinuousClock) async {
        while inFlight.load(ordering: .relaxed) > 0, clock.now < deadline {
            try? await clock.sleep(for: Self.drainPollInterval)
        }
    }

    // MARK: Request parts

    private static func headers(of connection: OpaquePointer) -> HTTPHeaders {
        var fields: [HTTPHeaders.Field] = []
        withUnsafeMutablePointer(to: &fields) { pointer in
            _ = MHD_get_connection_values_n(
                connection, .HEADER_KIND,
                { cls, _, key, keySize, value, valueSize in
                    let fields = cls!.assumingMemoryBound(to: [HTTPHeaders.Field].self)
                    fields.pointee.append(
                        HTTPHeaders.Field(name: string(key, keySize), value: string(value, valueSize)))
                    return .YES
                }, pointer)
        }
        return HTTPHeaders(fields: fields)
    }

    /// The distinct values of the request's Content-Length headers.
    private static func contentLengths(of connection: OpaquePointer) -> Set<String> {
        var values = Set<String>()
        withUnsafeMutablePointer(to: &values) { pointer in
            _ = MHD_get_connection_values_n(
                connection, .HEADER_KIND,
                { cls, _, key, keySize, value, valueSize in
                    guard string(key, keySize).lowercased() == "content-length" else { return .YES }
                    let values = cls!.assumingMemoryBound(to: Set<String>.self)
                    values.pointee.insert(string(value, valueSize).trimmingCharacters(in: .whitespaces))
                    return .YES
                }, pointer)
        }
        return values
    }

    private static func query(of connection: OpaquePointer) -> QueryParameters {
        var items: [QueryParameters.Item] = []
        withUnsafeMutablePointer(to: &items) { pointer in
            _ = MHD_get_connection_values_n(
                connection, .GET_ARGUMENT_KIND,
                { cls, _, key, keySize, value, valueSize in
                    let items = cls!.assumingMemoryBound(to: [QueryParameters.Item].self)
                    items.pointee.append(
                        QueryParameters.Item(name: string(key, keySize), value: string(value, valueSize)))
                    return .YES
                }, pointer)
        }
        return QueryParameters(items: items)
    }
}

/// The shared constants for the common methods, so that most requests allocate no method string.
private func internMethod(_ method: UnsafePointer<CChar>) -> HTTPMethod {
    if strcmp(method, "GET") == 0 { return .get }
    if strcmp(method, "POST") == 0 { return .post }
    let text = String(cString: method)
    for known in [HTTPMethod.put, .delete, .head, .patch, .options] where known.rawValue == text { return known }
    return HTTPMethod(rawValue: text)
}

private func string(_ pointer: UnsafePointer<CChar>?, _ count: Int) -> String {
    guard let pointer, count > 0 else { return "" }
    return String(decoding: UnsafeRawBufferPointer(start: pointer, count: count), as: UTF8.self)
}

/// Per-request state, and the request task's executor.
///
/// The fields above `state` belong to the connection's worker thread (the access handler). `state` is shared with
/// the handler task and with whoever enqueues its jobs. As a `TaskExecutor`, the context runs the task's jobs on its
/// connection's worker thread: enqueueing a job on a suspended connection resumes it, and the access handler runs
/// the job there (`pump`). Work that never really leaves the process, such as a hop onto an idle actor, thus
/// finishes inside the access handler without any suspension; work that waits for a timer or another thread costs
/// one suspend/resume and no hop through the global pool. Jobs that arrive after the response went out run on
/// the global executor.
final class RequestContext: TaskExecutor, @unchecked Sendable {
    let connection: OpaquePointer
    let method: HTTPMethod
    let path: String
    let start: ContinuousClock.Instant?
    var body = Data()
    var bodyBytesReceived = 0
    var oversized = false
    var dispatched = false
    let state = Mutex<State>(State())

    struct State {
        /// Jobs of the request's task waiting for the worker thread.
        var jobs: [UnownedJob] = []
        /// Set by the task when the responder has answered.
        var response: Response?
        /// The connection is suspended (and registered with the server for shutdown).
        var suspended = false
        /// `MHD_resume_connection` was called since the last suspension.
        var resumeRequested = false
        /// The response was queued, or the connection is gone: jobs go to the global executor.
        var finished = false
        var task: Task<Void, Never>?
    }

    init(connection: OpaquePointer, method: HTTPMethod, path: String, start: ContinuousClock.Instant?) {
        self.connection = connection
        self.method = method
        self.path = path
        self.start = start
    }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        let accepted = state.withLock { state in
            guard !state.finished else { return false }
            state.jobs.append(job)
            resumeIfSuspended(&state)
            return true
        }
        if !accepted { globalConcurrentExecutor.enqueue(ExecutorJob(job)) }
    }

    /// Called by the task when the responder has answered.
    func finish(with response: Response) {
        state.withLock { state in
            // Already answered (503 by shutdown), or the connection is gone.
            guard !state.finished, state.response == nil else { return }
            state.response = response
            resumeIfSuspended(&state)
        }
    }

    /// Resumes the connection once per suspension. Under the state lock: a suspension and its resume are ordered.
    func resumeIfSuspended(_ state: inout State) {
        guard state.suspended, !state.resumeRequested else { return }
        state.resumeRequested = true
        MHD_resume_connection(connection)
    }
}
