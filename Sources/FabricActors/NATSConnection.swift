import CNATS
import FabricCore
import FabricLog
import Foundation
import Synchronization

/// Limits and defaults of the NATS transport.
public enum NATSLimits {
    /// The server tried when no URL is given.
    public static let urlDefault = "nats://127.0.0.1:4222"
    /// Most server URLs in one connection's list.
    public static let urlsMax = 32
    /// How long one connection attempt may take.
    public static let connectTimeoutDefault: Duration = .seconds(2)
    /// Wait between reconnect attempts.
    public static let reconnectWaitDefault: Duration = .milliseconds(500)
    /// Random extra wait added to each reconnect wait.
    public static let reconnectJitterDefault: Duration = .milliseconds(100)
    /// Bytes published while reconnecting that are kept and sent after the reconnect.
    public static let reconnectBufferBytesDefault = 8 << 20
    /// Interval of the client's PINGs (a dead server is noticed after `pingInterval * maxPingsOut`).
    public static let pingIntervalDefault: Duration = .seconds(5)
    /// Unanswered PINGs before the client treats the connection as broken.
    public static let maxPingsOutDefault = 2
    /// Threads of cnats' shared message delivery pool (all subscriptions of the process share them).
    public static let deliveryThreads = 4
    /// How long `close()` waits for published messages to leave.
    public static let closeFlushTimeout: Duration = .seconds(1)
}

/// How to reach and authenticate with NATS.
public struct NATSOptions: Sendable, Equatable {
    /// How the client proves who it is.
    public enum Credentials: Sendable, Equatable {
        case none
        case userPassword(user: String, password: String)
        case token(String)
    }

    /// TLS settings; any non-nil value turns TLS on.
    public struct TLS: Sendable, Equatable {
        /// PEM file of the CAs trusted to sign the server's certificate (nil: the system's).
        public var caFile: String?
        /// PEM client certificate chain, for mutual TLS.
        public var certificateFile: String?
        /// PEM private key of the client certificate.
        public var keyFile: String?
        /// Accepts any server certificate. Tests only: never in production.
        public var skipServerVerification: Bool

        /// TLS settings from their parts.
        public init(
            caFile: String? = nil, certificateFile: String? = nil, keyFile: String? = nil,
            skipServerVerification: Bool = false
        ) {
            self.caFile = caFile
            self.certificateFile = certificateFile
            self.keyFile = keyFile
            self.skipServerVerification = skipServerVerification
        }
    }

    /// What the client does after losing its server.
    public enum Reconnect: Sendable, Equatable {
        /// Close at once.
        case never
        /// Try `attempts` times per server, `wait` apart, then close.
        case bounded(attempts: Int, wait: Duration)
        /// Keep trying, `wait` apart (the default: a control plane must outlive any NATS outage).
        case unlimited(wait: Duration)
    }

    /// Servers to try, e.g. `nats://10.0.0.1:4222`; `tls://` URLs imply TLS.
    public var urls: [String]
    /// The connection's name as the server shows it.
    public var name: String?
    /// User/password or token, if the server wants one.
    public var credentials: Credentials
    /// TLS settings; nil for plain TCP (unless a URL says `tls://`).
    public var tls: TLS?
    /// How long one connection attempt may take.
    public var connectTimeout: Duration
    /// What to do after losing the server.
    public var reconnect: Reconnect
    /// Random extra wait added to each reconnect wait.
    public var reconnectJitter: Duration
    /// Bytes published while reconnecting that are kept and sent after the reconnect.
    public var reconnectBufferBytes: Int
    /// Interval of the client's PINGs.
    public var pingInterval: Duration
    /// Unanswered PINGs before the connection counts as broken.
    public var maxPingsOut: Int
    /// Keep trying in the background when no server answers at connect time (instead of failing `connect`).
    public var retryOnFailedConnect: Bool
    /// Write each publish to the socket at once instead of letting cnats' flusher batch it (lower latency for
    /// request/reply, which is what actor calls are; batching only pays for bulk publishing).
    public var sendAsap: Bool

    /// Options from their parts; everything but the URLs has a default.
    public init(
        urls: [String] = [NATSLimits.urlDefault], name: String? = nil, credentials: Credentials = .none,
        tls: TLS? = nil, connectTimeout: Duration = NATSLimits.connectTimeoutDefault,
        reconnect: Reconnect = .unlimited(wait: NATSLimits.reconnectWaitDefault),
        reconnectJitter: Duration = NATSLimits.reconnectJitterDefault,
        reconnectBufferBytes: Int = NATSLimits.reconnectBufferBytesDefault,
        pingInterval: Duration = NATSLimits.pingIntervalDefault, maxPingsOut: Int = NATSLimits.maxPingsOutDefault,
        retryOnFailedConnect: Bool = false, sendAsap: Bool = true
    ) {
        self.urls = urls
        self.name = name
        self.credentials = credentials
        self.tls = tls
        self.connectTimeout = connectTimeout
        self.reconnect = reconnect
        self.reconnectJitter = reconnectJitter
        self.reconnectBufferBytes = reconnectBufferBytes
        self.pingInterval = pingInterval
        self.maxPingsOut = maxPingsOut
        self.retryOnFailedConnect = retryOnFailedConnect
        self.sendAsap = sendAsap
    }

    /// `nats://127.0.0.1:4222`, no authentication, unlimited reconnects.
    public static let `default` = NATSOptions()
}

/// Turns a cnats status into a `FabricError` carrying the library's own text (the one place cnats errors are wrapped).
func natsCheck(
    _ status: natsStatus, _ what: @autoclosure () -> String, file: String = #fileID, line: Int = #line
) throws(FabricError) {
    guard status != NATS_OK else { return }
    throw natsError(status, what(), file: file, line: line)
}

func natsError(_ status: natsStatus, _ what: String, file: String = #fileID, line: Int = #line) -> FabricError {
    let text = String(cString: natsStatus_GetText(status))
    var detail = ""
    if let last = nats_GetLastError(nil) {
        let l = String(cString: last)
        if !l.isEmpty && l != text { detail = " (\(l))" }
    }
    let code: FabricError.Code =
        switch status {
        case NATS_INVALID_ARG, NATS_INVALID_SUBJECT, NATS_INVALID_TIMEOUT, NATS_ADDRESS_MISSING: .invalidArgument
        case NATS_MAX_PAYLOAD: .payloadTooLarge
        case NATS_NOT_PERMITTED, NATS_CONNECTION_AUTH_FAILED, NATS_SECURE_CONNECTION_WANTED,
            NATS_SECURE_CONNECTION_REQUIRED, NATS_ILLEGAL_STATE:
            .failedPrecondition
        case NATS_NO_MEMORY, NATS_INSUFFICIENT_BUFFER, NATS_SLOW_CONSUMER, NATS_MAX_DELIVERED_MSGS: .resourceExhausted
        case NATS_ERR, NATS_PROTOCOL_ERROR, NATS_SYS_ERROR, NATS_NOT_INITIALIZED: .internalError
        default: .unavailable
        }
    return FabricError(code, "nats: \(what): \(text)\(detail)", file: file, line: line)
}

/// Milliseconds of a duration for cnats (at least 1 when positive).
func natsMillis(_ d: Duration) -> Int64 {
    let (s, atto) = d.components
    let ms = s * 1000 + atto / 1_000_000_000_000_000
    return d > .zero ? max(1, ms) : 0
}

/// A C pointer that this module guards itself (cnats objects are thread-safe).
struct CPointer: @unchecked Sendable {
    let raw: OpaquePointer
}

/// Runs a blocking call on a thread of its own, so the cooperative pool never blocks.
func offload<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { (cont: CheckedContinuation<T, any Error>) in
        let thread = Thread { cont.resume(with: Result { try body() }) }
        thread.name = "fabric-nats-blocking"
        thread.start()
    }
}

/// What cnats' connection callbacks need; retained for the connection's life and released by the closed callback.
final class ConnectionEvents: Sendable {
    let mux: ReplyMux
    let logger: Logger
    let name: String

    init(mux: ReplyMux, logger: Logger, name: String) {
        self.mux = mux
        self.logger = logger
        self.name = name
    }
}

/// What a subscription's message callback needs; released by cnats' on-complete callback.
final class SubscriptionBox: Sendable {
    let deliver: @Sendable (OpaquePointer) -> Void
    init(_ deliver: @escaping @Sendable (OpaquePointer) -> Void) { self.deliver = deliver }
}

private func eventsOf(_ closure: UnsafeMutableRawPointer?) -> ConnectionEvents? {
    closure.map { Unmanaged<ConnectionEvents>.fromOpaque($0).takeUnretainedValue() }
}

/// A connection to NATS on cnats: publish, subscribe, and non-blocking request/reply with a deadline per request.
///
/// Message callbacks run on cnats' shared delivery threads and only copy the message and resume a continuation or
/// start a task. Replies to `request` arrive on one wildcard inbox subscription (`_INBOX.<nuid>.*`) and are matched
/// by token in a `ReplyMux`. While the connection is not established (reconnecting), `request` fails at once with
/// `.unavailable`, and a disconnect fails the requests awaiting replies (their replies are lost with the connection).
public final class NATSConnection: MessageTransport {
    private let conn: CPointer
    private let inboxPrefix: String
    let mux: ReplyMux
    let logger: Logger
    private let closed = Atomic<Bool>(false)
    private let subscriptions = Mutex<[UInt64: CPointer]>([:])
    private let nextSubscription = Atomic<UInt64>(0)
    private let inboxSubscription: CPointer

    private static let deliveryPool: Void = { _ = nats_SetMessageDeliveryPoolSize(Int32(NATSLimits.deliveryThreads)) }()

    /// Connects to NATS (the blocking connect runs off the cooperative pool).
    public static func connect(
        _ options: NATSOptions = .default, clock: CallClock = .continuous,
        logger: Logger = Logger(component: "nats")
    ) async throws -> NATSConnection {
        try await offload { try NATSConnection(options: options, clock: clock, logger: logger) }
    }

    /// Connects to NATS, blocking the calling thread for up to the connect timeout; prefer `connect(_:)`.
    public init(options: NATSOptions, clock: CallClock = .continuous, logger: Logger = Logger(component: "nats"))
        throws(FabricError)
    {
        _ = Self.deliveryPool
        guard !options.urls.isEmpty, options.urls.count <= NATSLimits.urlsMax else {
            throw FabricError.invalid("urls", "give 1 to \(NATSLimits.urlsMax) NATS URLs")
        }
        self.logger = logger
        let mux = ReplyMux(clock: clock)
        self.mux = mux
        var opts: OpaquePointer?
        try natsCheck(natsOptions_Create(&opts), "create options")
        defer { natsOptions_Destroy(opts) }
        try Self.apply(options, to: opts!)

        let events = Unmanaged.passRetained(
            ConnectionEvents(mux: mux, logger: logger, name: options.name ?? options.urls.joined(separator: ",")))
        let ctx = events.toOpaque()
        try natsCheck(
            natsOptions_SetDisconnectedCB(
                opts,
                { _, closure in
                    guard let e = eventsOf(closure) else { return }
                    e.logger.warn("disconnected from NATS", ["connection": e.name])
                    e.mux.failAll(ActorCallError(.unavailable, "disconnected from NATS"))
                }, ctx), "set disconnected callback")
        try natsCheck(
            natsOptions_SetReconnectedCB(
                opts,
                { _, closure in
                    guard let e = eventsOf(closure) else { return }
                    e.logger.info("reconnected to NATS", ["connection": e.name])
                }, ctx), "set reconnected callback")
        try natsCheck(
            natsOptions_SetClosedCB(
                opts,
                { _, closure in
                    guard let closure else { return }
                    let e = Unmanaged<ConnectionEvents>.fromOpaque(closure)
                    e.takeUnretainedValue().mux.close(ActorCallError(.unavailable, "NATS connection closed"))
                    e.takeUnretainedValue().logger.debug("NATS connection closed")
                    e.release()  // the last callback cnats makes for this connection
                }, ctx), "set closed callback")
        try natsCheck(
            natsOptions_SetErrorHandler(
                opts,
                { _, _, status, closure in
                    guard let e = eventsOf(closure) else { return }
                    e.logger.warn(
                        "NATS asynchronous error",
                        ["connection": e.name, "error": String(cString: natsStatus_GetText(status))])
                }, ctx), "set error handler")

        var nc: OpaquePointer?
        let s = natsConnection_Connect(&nc, opts)
        guard let nc, s == NATS_OK || s == NATS_NOT_YET_CONNECTED else {
            // No callback will ever run for a connection that was never made; the events box is left to leak
            // (a few bytes) rather than risk a use after free.
            throw natsError(s, "connect to \(options.urls.joined(separator: ","))")
        }
        conn = CPointer(raw: nc)

        var inbox: UnsafeMutablePointer<natsInbox>?
        do {
            try natsCheck(natsInbox_Create(&inbox), "create inbox")
        } catch {
            natsConnection_Destroy(nc)
            throw error
        }
        let prefix = String(cString: inbox!) + "."
        natsInbox_Destroy(inbox)
        inboxPrefix = prefix
        do {
            inboxSubscription = try Self.subscribe(nc, prefix + "*") { msg in
                guard let subject = natsMsg_GetSubject(msg),
                    let token = UInt64(String(cString: subject).dropFirst(prefix.count))
                else { return }
                if natsMsg_IsNoResponders(msg) {
                    mux.complete(token, with: .failure(ActorCallError(.noResponders, "no responders")))
                } else {
                    mux.complete(token, with: .success(Self.payload(msg)))
                }
            }
        } catch {
            natsConnection_Destroy(nc)
            throw error
        }
    }

    deinit {
        // The C connection lives as long as this object, so calls racing with `close()` meet a closed connection
        // (cnats answers NATS_CONNECTION_CLOSED), never a freed one.
        natsConnection_Close(conn.raw)
        for s in subscriptions.withLock({ $0.values }) { natsSubscription_Destroy(s.raw) }
        natsSubscription_Destroy(inboxSubscription.raw)
        natsConnection_Destroy(conn.raw)
    }

    private static func apply(_ o: NATSOptions, to opts: OpaquePointer) throws(FabricError) {
        var servers = o.urls.map { strdup($0) }
        defer { servers.forEach { free($0) } }
        let s = servers.withUnsafeMutableBufferPointer { buf in
            buf.baseAddress!.withMemoryRebound(to: UnsafePointer<CChar>?.self, capacity: buf.count) {
                natsOptions_SetServers(opts, $0, Int32(buf.count))
            }
        }
        try natsCheck(s, "set servers")
        if let name = o.name { try natsCheck(natsOptions_SetName(opts, name), "set name") }
        switch o.credentials {
        case .none: break
        case .userPassword(let user, let password):
            try natsCheck(natsOptions_SetUserInfo(opts, user, password), "set user and password")
        case .token(let token):
            try natsCheck(natsOptions_SetToken(opts, token), "set token")
        }
        if let tls = o.tls {
            try natsCheck(natsOptions_SetSecure(opts, true), "enable TLS")
            if let ca = tls.caFile {
                try natsCheck(natsOptions_LoadCATrustedCertificates(opts, ca), "load CA file \(ca)")
            }
            if tls.certificateFile != nil || tls.keyFile != nil {
                guard let cert = tls.certificateFile, let key = tls.keyFile else {
                    throw FabricError.invalid("tls", "a client certificate needs both certificateFile and keyFile")
                }
                try natsCheck(natsOptions_LoadCertificatesChain(opts, cert, key), "load client certificate \(cert)")
            }
            if tls.skipServerVerification {
                try natsCheck(natsOptions_SkipServerVerification(opts, true), "skip server verification")
            }
        }
        try natsCheck(natsOptions_SetTimeout(opts, natsMillis(o.connectTimeout)), "set connect timeout")
        switch o.reconnect {
        case .never:
            try natsCheck(natsOptions_SetAllowReconnect(opts, false), "disable reconnect")
        case .bounded(let attempts, let wait):
            try natsCheck(natsOptions_SetAllowReconnect(opts, true), "enable reconnect")
            try natsCheck(natsOptions_SetMaxReconnect(opts, Int32(clamping: max(0, attempts))), "set max reconnect")
            try natsCheck(natsOptions_SetReconnectWait(opts, natsMillis(wait)), "set reconnect wait")
        case .unlimited(let wait):
            try natsCheck(natsOptions_SetAllowReconnect(opts, true), "enable reconnect")
            try natsCheck(natsOptions_SetMaxReconnect(opts, -1), "set unlimited reconnect")
            try natsCheck(natsOptions_SetReconnectWait(opts, natsMillis(wait)), "set reconnect wait")
        }
        let jitter = natsMillis(o.reconnectJitter)
        try natsCheck(natsOptions_SetReconnectJitter(opts, jitter, jitter), "set reconnect jitter")
        try natsCheck(
            natsOptions_SetReconnectBufSize(opts, Int32(clamping: o.reconnectBufferBytes)), "set reconnect buffer")
        try natsCheck(natsOptions_SetPingInterval(opts, natsMillis(o.pingInterval)), "set ping interval")
        try natsCheck(natsOptions_SetMaxPingsOut(opts, Int32(clamping: o.maxPingsOut)), "set max pings out")
        try natsCheck(natsOptions_UseGlobalMessageDelivery(opts, true), "use global message delivery")
        try natsCheck(natsOptions_SetSendAsap(opts, o.sendAsap), "set send asap")
        if o.retryOnFailedConnect {
            try natsCheck(natsOptions_SetRetryOnFailedConnect(opts, true, nil, nil), "retry on failed connect")
        }
    }

    static func payload(_ msg: OpaquePointer) -> [UInt8] {
        let n = Int(natsMsg_GetDataLength(msg))
        guard n > 0, let p = natsMsg_GetData(msg) else { return [] }
        return [UInt8](UnsafeRawBufferPointer(start: p, count: n))
    }

    /// Subscribes with a callback box that cnats releases once the subscription is done.
    private static func subscribe(
        _ nc: OpaquePointer, _ subject: String, _ deliver: @escaping @Sendable (OpaquePointer) -> Void
    ) throws(FabricError) -> CPointer {
        let box = Unmanaged.passRetained(SubscriptionBox(deliver))
        var sub: OpaquePointer?
        let s = natsConnection_Subscribe(
            &sub, nc, subject,
            { _, _, msg, closure in
                guard let msg else { return }
                if let closure { Unmanaged<SubscriptionBox>.fromOpaque(closure).takeUnretainedValue().deliver(msg) }
                natsMsg_Destroy(msg)
            }, box.toOpaque())
        guard s == NATS_OK, let sub else {
            box.release()
            throw natsError(s, "subscribe to \(subject)")
        }
        let c = natsSubscription_SetOnCompleteCB(
            sub, { closure in if let closure { Unmanaged<SubscriptionBox>.fromOpaque(closure).release() } },
            box.toOpaque())
        // If the subscription closed before the callback was set, the box is left to leak rather than freed while
        // a message callback might still use it.
        _ = c
        return CPointer(raw: sub)
    }

    // MARK: MessageTransport

    /// Whether the connection is established now (not connecting, reconnecting or closed).
    public var isConnected: Bool { natsConnection_Status(conn.raw) == NATS_CONN_STATUS_CONNECTED }

    /// Publishes `data` to `subject` (buffered by cnats unless `sendAsap`).
    public func publish(subject: String, data: [UInt8]) throws {
        let s = data.withUnsafeBytes { natsConnection_Publish(conn.raw, subject, $0.baseAddress, Int32($0.count)) }
        try natsCheck(s, "publish to \(subject)")
    }

    /// Publishes `data` to `subject` asking for replies on `replyTo`.
    public func publish(subject: String, replyTo: String, data: [UInt8]) throws {
        let s = data.withUnsafeBytes {
            natsConnection_PublishRequest(conn.raw, subject, replyTo, $0.baseAddress, Int32($0.count))
        }
        try natsCheck(s, "publish to \(subject)")
    }

    /// Sends a request and awaits its first reply without blocking a thread (the raw path the actor systems use).
    ///
    /// Throws `ActorCallError`: `.deadlineExceeded` after `timeout`, `.noResponders` when nobody subscribes to
    /// `subject`, `.unavailable` when not connected or when the connection drops before the reply.
    public func request(subject: String, data: [UInt8], timeout: Duration) async throws -> [UInt8] {
        let status = natsConnection_Status(conn.raw)
        guard status == NATS_CONN_STATUS_CONNECTED else {
            throw ActorCallError(
                .unavailable,
                status == NATS_CONN_STATUS_CLOSED ? "NATS connection is closed" : "not connected to NATS (reconnecting)"
            )
        }
        let prefix = inboxPrefix
        return try await mux.request(subject: subject, timeout: timeout) { token in
            try publish(subject: subject, replyTo: prefix + String(token), data: data)
        }
    }

    /// cnats' own blocking request (`natsConnection_Request`): blocks the calling thread; for benchmarks and
    /// dedicated threads only, never from the cooperative pool.
    public func requestBlocking(subject: String, data: [UInt8], timeout: Duration) throws -> [UInt8] {
        var reply: OpaquePointer?
        let s = data.withUnsafeBytes {
            natsConnection_Request(&reply, conn.raw, subject, $0.baseAddress, Int32($0.count), natsMillis(timeout))
        }
        defer { natsMsg_Destroy(reply) }
        switch s {
        case NATS_OK: return reply.map(Self.payload) ?? []
        case NATS_TIMEOUT: throw ActorCallError(.deadlineExceeded, "no reply from \(subject) within \(timeout)")
        case NATS_NO_RESPONDERS: throw ActorCallError(.noResponders, "nobody serves \(subject)")
        default: throw natsError(s, "request to \(subject)")
        }
    }

    /// Calls `handler` on a cnats delivery thread for each message on `subject` (wildcards allowed).
    public func subscribe(subject: String, handler: @escaping @Sendable (InboundMessage) -> Void) throws
        -> any TransportSubscription
    {
        let sub = try Self.subscribe(conn.raw, subject) { msg in
            let subject = natsMsg_GetSubject(msg).map { String(cString: $0) } ?? ""
            let reply = natsMsg_GetReply(msg).map { String(cString: $0) }
            handler(InboundMessage(subject: subject, data: Self.payload(msg), replyTo: reply))
        }
        let id = nextSubscription.add(1, ordering: .relaxed).newValue
        subscriptions.withLock { $0[id] = sub }
        return Subscription(connection: self, id: id)
    }

    func unsubscribe(_ id: UInt64) {
        guard let sub = subscriptions.withLock({ $0.removeValue(forKey: id) }) else { return }
        _ = natsSubscription_Unsubscribe(sub.raw)
        natsSubscription_Destroy(sub.raw)
    }

    /// Waits (off the cooperative pool) until the server has processed everything sent so far.
    public func flush(timeout: Duration) async throws {
        if closed.load(ordering: .acquiring) { throw ActorCallError(.unavailable, "NATS connection is closed") }
        let c = conn
        try await offload {
            try natsCheck(natsConnection_FlushTimeout(c.raw, natsMillis(timeout)), "flush")
        }
    }

    /// Flushes, closes the connection and ends its subscriptions; pending requests fail with `.unavailable`.
    public func close() async {
        guard !closed.exchange(true, ordering: .acquiringAndReleasing) else { return }
        let c = conn
        let subs = subscriptions.withLock { s -> [CPointer] in
            defer { s = [:] }
            return Array(s.values)
        }
        _ = try? await offload {
            _ = natsConnection_FlushTimeout(c.raw, natsMillis(NATSLimits.closeFlushTimeout))
            natsConnection_Close(c.raw)
            for s in subs { natsSubscription_Destroy(s.raw) }
        }
        mux.close(ActorCallError(.unavailable, "NATS connection closed"))
    }

    struct Subscription: TransportSubscription {
        let connection: NATSConnection
        let id: UInt64
        func cancel() { connection.unsubscribe(id) }
    }
}
