// The production HTTPTransport: libcurl easy handles driven by one curl multi handle on a dedicated thread, so no
// Swift concurrency thread ever blocks on the network.
//
//   send(request) ── easy handle ──► CurlLoop.submit ──► [loop thread] curl_multi_perform / curl_multi_poll
//        ▲                                                     │ CURLMSG_DONE
//        └──────────── continuation resumed ◄──────────────────┘
import CCurl
import FabricCore
import Foundation
import Synchronization

/// Why an HTTP exchange ended without a complete response.
public struct HTTPTransportError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The class of failure, which decides whether a retry may help.
    public enum Kind: String, Sendable, Hashable {
        /// The whole call ran past `HTTPRequest.timeout`.
        case timeout
        /// No connection, or it broke before the response was complete.
        case connection
        /// TLS failed: an unknown CA, a bad client certificate or key, a handshake error.
        case tls
        /// The response body (or its headers) exceeded the client's limit.
        case responseTooLarge
        /// The calling task was cancelled.
        case cancelled
        /// The request cannot be sent as given (a bad URL, a header with a line break).
        case invalidRequest
        /// Any other libcurl failure.
        case other
    }

    public var kind: Kind
    public var message: String
    /// libcurl's CURLcode, where libcurl reported the failure.
    public var curlCode: Int?

    /// An error of `kind` with a message (no secrets: URLs in messages are redacted by the caller).
    public init(_ kind: Kind, _ message: String, curlCode: Int? = nil) {
        self.kind = kind
        self.message = message
        self.curlCode = curlCode
    }

    /// Whether the same request may succeed when sent again.
    public var isRetryable: Bool { kind == .timeout || kind == .connection || kind == .other }

    public var description: String { "\(kind.rawValue): \(message)" }
}

/// TLS material for a client, held in memory (kubeconfig `certificate-authority-data`, `client-certificate-data`,
/// `client-key-data`) and handed to libcurl as blobs, never written to disk.
public struct TLSSettings: Sendable, Hashable {
    /// PEM CA certificates trusted instead of the system bundle; nil trusts the system bundle.
    public var caPEM: Data?
    /// PEM client certificate for mutual TLS.
    public var clientCertificatePEM: Data?
    /// PEM private key of the client certificate (PKCS#8 or traditional).
    public var clientKeyPEM: Data?
    /// False skips peer and host verification (kubeconfig `insecure-skip-tls-verify`); never the default.
    public var verifyPeer: Bool

    /// TLS settings; the defaults trust the system CA bundle and send no client certificate.
    public init(
        caPEM: Data? = nil, clientCertificatePEM: Data? = nil, clientKeyPEM: Data? = nil, verifyPeer: Bool = true
    ) {
        self.caPEM = caPEM
        self.clientCertificatePEM = clientCertificatePEM
        self.clientKeyPEM = clientKeyPEM
        self.verifyPeer = verifyPeer
    }
}

/// An `HTTPTransport` on libcurl: per-request timeouts, TLS with in-memory CA and client certificate, response
/// headers collected, and a limit on the response size. Transfers run on a `CurlLoop` thread, never on the
/// cooperative pool; cancelling the calling task aborts the transfer.
public final class CurlHTTPClient: HTTPTransport {
    /// The largest response body a client accepts unless told otherwise, in bytes.
    public static let responseBytesMaxDefault = 32 << 20
    /// The most response header bytes accepted (all header lines of one response together).
    public static let responseHeaderBytesMax = 256 << 10
    /// The longest time spent connecting (TCP and TLS), within the request's own timeout.
    public static let connectTimeoutMax = Duration.seconds(10)
    /// The longest request timeout honoured; longer ones are cut to this.
    public static let requestTimeoutMax = Duration.seconds(600)

    /// TLS material used for every request of this client.
    public let tls: TLSSettings
    /// The largest response body accepted, in bytes; a larger one fails with `.responseTooLarge`.
    public let responseBytesMax: Int
    let loop: CurlLoop

    /// A client with the given TLS settings and body limit, on the process-wide curl thread by default.
    public init(
        tls: TLSSettings = TLSSettings(), responseBytesMax: Int = CurlHTTPClient.responseBytesMaxDefault,
        loop: CurlLoop = .shared
    ) {
        self.tls = tls
        self.responseBytesMax = responseBytesMax
        self.loop = loop
    }

    /// Sends the request and returns the response, whatever its status; throws `HTTPTransportError` when no
    /// complete response arrived in time.
    public func send(_ request: HTTPRequest) async throws -> HTTPResponse {
        try Task.checkCancellation()
        let transfer = try CurlTransfer(request, tls: tls, responseBytesMax: responseBytesMax)
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<HTTPResponse, any Error>) in
                transfer.continuation.withLock { $0 = continuation }
                loop.submit(transfer)
            }
        } onCancel: {
            transfer.cancelled.store(true, ordering: .releasing)
            loop.wake()
        }
    }
}

/// One thread driving a curl multi handle: it adds submitted transfers, runs them, and completes each one. One
/// process-wide loop (`shared`) serves every client; connections are reused across requests to the same host.
public final class CurlLoop: @unchecked Sendable {
    /// The process-wide loop, started on first use.
    public static let shared = CurlLoop(name: "fabric-curl")

    /// The longest one wait for socket activity lasts before the loop checks for new work anyway.
    static let pollIntervalMax = Duration.milliseconds(500)

    private struct Shared {
        var incoming: [CurlTransfer] = []
        var started = false
        var stopping = false
    }

    private let name: String
    // The multi handle and `active` are touched only by the loop thread (and by init before it starts).
    private let multi: UnsafeMutableRawPointer
    private var active: [UnsafeMutableRawPointer: CurlTransfer] = [:]
    private let shared = Mutex(Shared())

    /// A loop whose thread carries `name`; it starts on the first submitted transfer.
    public init(name: String) {
        _ = CurlGlobal.initialized
        guard let multi = curl_multi_init() else { preconditionFailure("curl_multi_init failed") }
        self.name = name
        self.multi = multi
    }

    /// Stops the loop: transfers in flight fail as cancelled and later submissions fail at once.
    public func shutdown() {
        shared.withLock { $0.stopping = true }
        wake()
    }

    func submit(_ transfer: CurlTransfer) {
        let (start, refused) = shared.withLock { s -> (Bool, Bool) in
            if s.stopping { return (false, true) }
            s.incoming.append(transfer)
            let start = !s.started
            s.started = true
            return (start, false)
        }
        if refused {
            transfer.finish(.failure(HTTPTransportError(.cancelled, "the HTTP client was shut down")))
            return
        }
        if start {
            let thread = Thread { [self] in run() }
            thread.name = name
            thread.stackSize = 1 << 20
            thread.start()
        }
        wake()
    }

    /// Interrupts the loop's wait so it notices new transfers, cancellations or shutdown.
    func wake() { curl_multi_wakeup(multi) }

    private func run() {
        var running: Int32 = 0
        while true {
            let (incoming, stopping) = shared.withLock { s -> ([CurlTransfer], Bool) in
                defer { s.incoming.removeAll() }
                return (s.incoming, s.stopping)
            }
            for t in incoming {
                if curl_multi_add_handle(multi, t.easy) == CURLM_OK {
                    active[t.easy] = t
                } else {
                    t.finish(.failure(HTTPTransportError(.other, "curl_multi_add_handle failed")))
                }
            }
            for (easy, t) in active where stopping || t.cancelled.load(ordering: .acquiring) {
                curl_multi_remove_handle(multi, easy)
                active[easy] = nil
                t.finish(.failure(HTTPTransportError(.cancelled, "the request was cancelled")))
            }
            if stopping && active.isEmpty { break }
            curl_multi_perform(multi, &running)
            var queued: Int32 = 0
            while let message = curl_multi_info_read(multi, &queued) {
                guard message.pointee.msg == CURLMSG_DONE, let easy = message.pointee.easy_handle else { continue }
                let code = fabric_curl_message_result(message)
                curl_multi_remove_handle(multi, easy)
                guard let t = active.removeValue(forKey: easy) else { continue }
                t.complete(code)
            }
            let waitMs = Int32(CurlLoop.pollIntervalMax.components.seconds * 1000)
            curl_multi_poll(multi, nil, 0, waitMs, nil)
        }
        shared.withLock { $0.started = false }
    }
}

/// Runs `curl_global_init` once per process, before the first handle.
enum CurlGlobal {
    static let initialized: Bool = {
        curl_global_init(Int(CURL_GLOBAL_DEFAULT)) == CURLE_OK
    }()
}

/// One request in flight: its easy handle, header list, and the response as it arrives. After `submit`, only the
/// loop thread touches the mutable parts (the callbacks run there).
final class CurlTransfer: @unchecked Sendable {
    let easy: UnsafeMutableRawPointer
    let continuation = Mutex<CheckedContinuation<HTTPResponse, any Error>?>(nil)
    let cancelled = Atomic<Bool>(false)
    private var headerList: UnsafeMutablePointer<curl_slist>?
    private let errorBuffer = UnsafeMutablePointer<CChar>.allocate(capacity: Int(CURL_ERROR_SIZE) + 1)
    private let responseBytesMax: Int
    private let timeout: Duration
    fileprivate var body = Data()
    fileprivate var headers: [String: String] = [:]
    fileprivate var headerBytes = 0
    fileprivate var tooLarge = false

    init(_ request: HTTPRequest, tls: TLSSettings, responseBytesMax: Int) throws {
        _ = CurlGlobal.initialized
        guard let easy = curl_easy_init() else { throw HTTPTransportError(.other, "curl_easy_init failed") }
        self.easy = easy
        self.responseBytesMax = responseBytesMax
        self.timeout = min(request.timeout, CurlHTTPClient.requestTimeoutMax)
        errorBuffer.initialize(repeating: 0, count: Int(CURL_ERROR_SIZE) + 1)
        try configure(request, tls: tls)
    }

    deinit {
        curl_easy_cleanup(easy)
        curl_slist_free_all(headerList)
        errorBuffer.deallocate()
    }

    private func configure(_ request: HTTPRequest, tls: TLSSettings) throws {
        func check(_ code: CURLcode, _ what: String) throws {
            guard code != CURLE_OK else { return }
            throw HTTPTransportError(
                .invalidRequest, "\(what): \(String(cString: curl_easy_strerror(code)))", curlCode: Int(code.rawValue))
        }
        let context = Unmanaged.passUnretained(self).toOpaque()
        let timeoutMs = max(
            1, Int(timeout.components.seconds * 1000 + timeout.components.attoseconds / 1_000_000_000_000_000))
        let connectMs = min(timeoutMs, Int(CurlHTTPClient.connectTimeoutMax.components.seconds * 1000))
        try check(fabric_curl_setopt_string(easy, CURLOPT_URL, request.url), "url")
        try check(fabric_curl_setopt_string(easy, CURLOPT_PROTOCOLS_STR, "http,https"), "protocols")
        try check(fabric_curl_setopt_long(easy, CURLOPT_NOSIGNAL, 1), "nosignal")
        try check(fabric_curl_setopt_long(easy, CURLOPT_TIMEOUT_MS, timeoutMs), "timeout")
        try check(fabric_curl_setopt_long(easy, CURLOPT_CONNECTTIMEOUT_MS, connectMs), "connect timeout")
        try check(fabric_curl_setopt_long(easy, CURLOPT_FOLLOWLOCATION, 0), "redirects")
        try check(fabric_curl_setopt_string(easy, CURLOPT_ACCEPT_ENCODING, ""), "encoding")
        try check(fabric_curl_setopt_off(easy, CURLOPT_MAXFILESIZE_LARGE, curl_off_t(responseBytesMax)), "size limit")
        try check(fabric_curl_setopt_pointer(easy, CURLOPT_ERRORBUFFER, errorBuffer), "error buffer")
        try check(fabric_curl_setopt_callback(easy, CURLOPT_WRITEFUNCTION, curlWriteBody), "write callback")
        try check(fabric_curl_setopt_pointer(easy, CURLOPT_WRITEDATA, context), "write context")
        try check(fabric_curl_setopt_callback(easy, CURLOPT_HEADERFUNCTION, curlWriteHeader), "header callback")
        try check(fabric_curl_setopt_pointer(easy, CURLOPT_HEADERDATA, context), "header context")

        let method = request.method.uppercased()
        switch method {
        case "GET" where request.body.isEmpty:
            try check(fabric_curl_setopt_long(easy, CURLOPT_HTTPGET, 1), "GET")
        case "HEAD":
            try check(fabric_curl_setopt_long(easy, CURLOPT_NOBODY, 1), "HEAD")
        default:
            if method != "POST" { try check(fabric_curl_setopt_string(easy, CURLOPT_CUSTOMREQUEST, method), "method") }
            if method == "POST" || !request.body.isEmpty {
                try check(
                    fabric_curl_setopt_off(easy, CURLOPT_POSTFIELDSIZE_LARGE, curl_off_t(request.body.count)),
                    "body size")
                let code = request.body.withUnsafeBytes { raw -> CURLcode in
                    // COPYPOSTFIELDS copies the bytes, so the Data need not outlive this call; an empty body still
                    // needs a valid pointer.
                    let empty: [CChar] = [0]
                    return empty.withUnsafeBufferPointer { e in
                        let p = raw.baseAddress ?? UnsafeRawPointer(e.baseAddress!)
                        return fabric_curl_setopt_pointer(
                            easy, CURLOPT_COPYPOSTFIELDS, UnsafeMutableRawPointer(mutating: p))
                    }
                }
                try check(code, "body")
            }
        }

        var sawExpect = false
        for (name, value) in request.headers {
            guard !name.isEmpty, !name.contains(where: { $0 == ":" || $0.isNewline || $0 == " " }),
                !value.contains(where: \.isNewline)
            else { throw HTTPTransportError(.invalidRequest, "header \(name.debugDescription) is malformed") }
            if name.lowercased() == "expect" { sawExpect = true }
            // "Name;" is libcurl's way to send a header with an empty value.
            headerList = curl_slist_append(headerList, value.isEmpty ? "\(name);" : "\(name): \(value)")
        }
        // No `Expect: 100-continue` round trip before large bodies.
        if !sawExpect { headerList = curl_slist_append(headerList, "Expect:") }
        try check(fabric_curl_setopt_pointer(easy, CURLOPT_HTTPHEADER, headerList), "headers")

        if let ca = tls.caPEM {
            try check(
                ca.withUnsafeBytes { fabric_curl_setopt_blob(easy, CURLOPT_CAINFO_BLOB, $0.baseAddress, $0.count) },
                "CA")
        }
        if let cert = tls.clientCertificatePEM {
            try check(fabric_curl_setopt_string(easy, CURLOPT_SSLCERTTYPE, "PEM"), "certificate type")
            try check(
                cert.withUnsafeBytes { fabric_curl_setopt_blob(easy, CURLOPT_SSLCERT_BLOB, $0.baseAddress, $0.count) },
                "client certificate")
        }
        if let key = tls.clientKeyPEM {
            try check(fabric_curl_setopt_string(easy, CURLOPT_SSLKEYTYPE, "PEM"), "key type")
            try check(
                key.withUnsafeBytes { fabric_curl_setopt_blob(easy, CURLOPT_SSLKEY_BLOB, $0.baseAddress, $0.count) },
                "client key")
        }
        if !tls.verifyPeer {
            try check(fabric_curl_setopt_long(easy, CURLOPT_SSL_VERIFYPEER, 0), "verify peer")
            try check(fabric_curl_setopt_long(easy, CURLOPT_SSL_VERIFYHOST, 0), "verify host")
        }
    }

    /// Resumes the caller exactly once.
    func finish(_ result: Result<HTTPResponse, any Error>) {
        let c = continuation.withLock { c -> CheckedContinuation<HTTPResponse, any Error>? in
            defer { c = nil }
            return c
        }
        c?.resume(with: result)
    }

    /// Turns a finished transfer's CURLcode into the response or an error.
    func complete(_ code: CURLcode) {
        guard code == CURLE_OK else {
            finish(.failure(error(for: code)))
            return
        }
        var status = 0
        _ = fabric_curl_getinfo_long(easy, CURLINFO_RESPONSE_CODE, &status)
        finish(.success(HTTPResponse(status: status, headers: headers, body: body)))
    }

    private func error(for code: CURLcode) -> HTTPTransportError {
        let detail = String(cString: errorBuffer)
        let message = detail.isEmpty ? String(cString: curl_easy_strerror(code)) : detail
        let kind: HTTPTransportError.Kind
        switch code {
        case CURLE_OPERATION_TIMEDOUT:
            kind = .timeout
        case CURLE_FILESIZE_EXCEEDED:
            kind = .responseTooLarge
        case CURLE_WRITE_ERROR where tooLarge:
            kind = .responseTooLarge
        case CURLE_COULDNT_CONNECT, CURLE_COULDNT_RESOLVE_HOST, CURLE_COULDNT_RESOLVE_PROXY, CURLE_SEND_ERROR,
            CURLE_RECV_ERROR, CURLE_GOT_NOTHING, CURLE_PARTIAL_FILE, CURLE_HTTP2, CURLE_HTTP2_STREAM:
            kind = .connection
        case CURLE_SSL_CONNECT_ERROR, CURLE_PEER_FAILED_VERIFICATION, CURLE_SSL_CERTPROBLEM, CURLE_SSL_CIPHER,
            CURLE_SSL_CACERT_BADFILE, CURLE_SSL_ENGINE_NOTFOUND, CURLE_SSL_ENGINE_SETFAILED, CURLE_SSL_ISSUER_ERROR,
            CURLE_SSL_CRL_BADFILE, CURLE_SSL_PINNEDPUBKEYNOTMATCH, CURLE_SSL_INVALIDCERTSTATUS,
            CURLE_SSL_CLIENTCERT:
            kind = .tls
        case CURLE_URL_MALFORMAT, CURLE_UNSUPPORTED_PROTOCOL:
            kind = .invalidRequest
        default:
            kind = .other
        }
        let text = kind == .responseTooLarge ? "the response exceeds \(responseBytesMax) bytes" : message
        return HTTPTransportError(kind, text, curlCode: Int(code.rawValue))
    }

    fileprivate func appendBody(_ bytes: UnsafeRawBufferPointer) -> Bool {
        guard body.count + bytes.count <= responseBytesMax else {
            tooLarge = true
            return false
        }
        body.append(contentsOf: bytes)
        return true
    }

    fileprivate func appendHeader(_ bytes: UnsafeRawBufferPointer) -> Bool {
        headerBytes += bytes.count
        guard headerBytes <= CurlHTTPClient.responseHeaderBytesMax else {
            tooLarge = true
            return false
        }
        let line = String(decoding: bytes, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        if line.hasPrefix("HTTP/") {
            // A new response (after 100 Continue, or a proxy's CONNECT reply): forget the earlier headers.
            headers.removeAll()
            return true
        }
        guard let colon = line.firstIndex(of: ":") else { return true }
        let name = line[..<colon].trimmingCharacters(in: .whitespaces).lowercased()
        let value = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        headers[name] = value
        return true
    }
}

/// CURLOPT_WRITEFUNCTION: appends body bytes; returning less than given makes libcurl abort the transfer.
private let curlWriteBody: fabric_curl_data_callback = { data, size, count, context in
    guard let context else { return 0 }
    let transfer = Unmanaged<CurlTransfer>.fromOpaque(context).takeUnretainedValue()
    let n = size * count
    guard n > 0, let data else { return 0 }
    return transfer.appendBody(UnsafeRawBufferPointer(start: data, count: n)) ? n : 0
}

/// CURLOPT_HEADERFUNCTION: collects one header line.
private let curlWriteHeader: fabric_curl_data_callback = { data, size, count, context in
    guard let context else { return 0 }
    let transfer = Unmanaged<CurlTransfer>.fromOpaque(context).takeUnretainedValue()
    let n = size * count
    guard n > 0, let data else { return n }
    return transfer.appendHeader(UnsafeRawBufferPointer(start: data, count: n)) ? n : 0
}
