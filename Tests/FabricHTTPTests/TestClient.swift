// A small raw-socket HTTP/1.1 client for the server tests. Every blocking call runs on its own thread, never on
// the cooperative pool: the server's handler tasks need that pool to finish the very requests a test waits for.
import FabricCore
import Foundation
import Synchronization

@testable import FabricHTTP

#if canImport(Glibc)
    import Glibc
#endif

/// How long a test client waits for any one read or write.
let clientIOTimeoutSeconds = 10

/// One parsed response.
struct ClientResponse: Sendable {
    var status: Int
    var headers: HTTPHeaders
    var body: Data

    var text: String { String(decoding: body, as: UTF8.self) }

    /// The body as a JSON object.
    var json: [String: any Sendable] {
        get throws {
            let object = try JSONSerialization.jsonObject(with: body)
            guard let dictionary = object as? [String: any Sendable] else { throw ClientError("body is not an object") }
            return dictionary
        }
    }

    /// The `error` object of the JSON error shape.
    var errorObject: [String: String] {
        get throws {
            guard let error = try json["error"] as? [String: String] else { throw ClientError("no error object") }
            return error
        }
    }
}

struct ClientError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// Runs `body` on a new thread and returns its result without blocking the cooperative pool.
func offPool<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        let thread = Thread {
            do { continuation.resume(returning: try body()) } catch { continuation.resume(throwing: error) }
        }
        thread.stackSize = 1 << 20
        thread.start()
    }
}

/// A blocking TCP connection to 127.0.0.1 (or ::1).
final class RawConnection: @unchecked Sendable {
    let fd: Int32
    private var buffer: [UInt8] = []

    init(port: Int, ipv6: Bool = false) throws {
        fd = socket(ipv6 ? AF_INET6 : AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw ClientError("socket: \(errno)") }
        var timeout = timeval(tv_sec: clientIOTimeoutSeconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let address = try BindAddress(parsing: ipv6 ? "[::1]:\(port)" : "127.0.0.1:\(port)")
        let result = address.withSockAddr { sockaddr in
            connect(fd, sockaddr, socklen_t(ipv6 ? MemoryLayout<sockaddr_in6>.size : MemoryLayout<sockaddr_in>.size))
        }
        guard result == 0 else {
            let code = errno
            Glibc.close(fd)
            throw ClientError("connect: errno \(code)")
        }
    }

    deinit { Glibc.close(fd) }

    func send(_ text: String) throws { try send(Data(text.utf8)) }

    func send(_ data: Data) throws {
        try data.withUnsafeBytes { bytes in
            var offset = 0
            while offset < bytes.count {
                let n = Glibc.send(fd, bytes.baseAddress! + offset, bytes.count - offset, Int32(MSG_NOSIGNAL))
                guard n > 0 else { throw ClientError("send: errno \(errno)") }
                offset += n
            }
        }
    }

    /// Sends a whole request: request line, `Host`, the given headers, `Content-Length` when there is a body.
    func send(method: String, path: String, headers: [(String, String)] = [], body: Data? = nil) throws {
        var head = "\(method) \(path) HTTP/1.1\r\nHost: test\r\n"
        for (name, value) in headers { head += "\(name): \(value)\r\n" }
        if let body { head += "Content-Length: \(body.count)\r\n" }
        head += "\r\n"
        try send(Data(head.utf8) + (body ?? Data()))
    }

    /// Closes the sending half (the server sees end of input).
    func shutdownWrite() { Glibc.shutdown(fd, Int32(SHUT_WR)) }

    /// One response, or nil when the server closes (or resets) the connection before sending a byte.
    func readResponseOrClose() throws -> ClientResponse? {
        if buffer.isEmpty {
            var chunk = [UInt8](repeating: 0, count: 64 << 10)
            let n = recv(fd, &chunk, chunk.count, 0)
            if n < 0 && errno == ECONNRESET || n == 0 { return nil }
            if n < 0 { throw ClientError("recv: errno \(errno)") }
            buffer.append(contentsOf: chunk[0..<n])
        }
        return try readResponse()
    }

    private func fill() throws -> Bool {
        var chunk = [UInt8](repeating: 0, count: 64 << 10)
        let n = recv(fd, &chunk, chunk.count, 0)
        if n < 0 { throw ClientError("recv: errno \(errno)") }
        if n == 0 { return false }
        buffer.append(contentsOf: chunk[0..<n])
        return true
    }

    /// Reads one response (Content-Length or read-to-close bodies; the server does not chunk).
    func readResponse() throws -> ClientResponse {
        let separator: [UInt8] = Array("\r\n\r\n".utf8)
        var headerEnd: Int?
        while headerEnd == nil {
            headerEnd = buffer.firstRange(of: separator)?.lowerBound
            if headerEnd == nil, try !fill() { throw ClientError("connection closed before a response") }
        }
        let head = String(decoding: buffer[..<headerEnd!], as: UTF8.self)
        buffer.removeFirst(headerEnd! + separator.count)
        var lines = head.components(separatedBy: "\r\n")
        let statusLine = lines.removeFirst().split(separator: " ")
        guard statusLine.count >= 2, let status = Int(statusLine[1]) else { throw ClientError("status line: \(head)") }
        var headers = HTTPHeaders()
        for line in lines {
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers.add(
                name: String(line[..<colon]),
                value: line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces))
        }
        if let length = headers["Content-Length"].flatMap({ Int($0) }) {
            while buffer.count < length {
                if try !fill() { throw ClientError("connection closed inside a body") }
            }
            let body = Data(buffer[..<length])
            buffer.removeFirst(length)
            return ClientResponse(status: status, headers: headers, body: body)
        }
        while try fill() {}
        defer { buffer.removeAll() }
        return ClientResponse(status: status, headers: headers, body: Data(buffer))
    }
}

/// One request on a fresh connection, off the cooperative pool.
func fetch(
    _ port: Int, _ method: String, _ path: String, headers: [(String, String)] = [], body: Data? = nil
) async throws -> ClientResponse {
    try await offPool {
        let connection = try RawConnection(port: port)
        try connection.send(method: method, path: path, headers: headers, body: body)
        return try connection.readResponse()
    }
}

/// Starts a server for `router` on 127.0.0.1 port 0, runs `body`, and always shuts the server down.
func withServer<T>(
    _ router: Router, settings: HTTPServerSettings = HTTPServerSettings(address: "127.0.0.1:0"),
    accessLog: AccessLog? = nil, _ body: (HTTPServer) async throws -> T
) async throws -> T {
    let server = HTTPServer(settings: settings, responder: router, accessLog: accessLog)
    try server.start()
    do {
        let result = try await body(server)
        await server.shutdown(gracePeriod: .seconds(5))
        return result
    } catch {
        await server.shutdown(gracePeriod: .seconds(1))
        throw error
    }
}

/// Polls `condition` every few milliseconds for up to `timeout`; returns whether it became true.
func eventually(timeout: Duration = .seconds(5), _ condition: @Sendable () -> Bool) async -> Bool {
    let clock = ContinuousClock()
    let deadline = clock.now + timeout
    while clock.now < deadline {
        if condition() { return true }
        try? await clock.sleep(for: .milliseconds(5))
    }
    return condition()
}

/// A counter that also records its highest value: how many handlers ran at once.
final class ConcurrencyGauge: Sendable {
    private let state = Mutex<(current: Int, max: Int, total: Int)>((0, 0, 0))

    func enter() {
        state.withLock {
            $0.current += 1
            $0.total += 1
            $0.max = Swift.max($0.max, $0.current)
        }
    }

    func leave() { state.withLock { $0.current -= 1 } }

    var max: Int { state.withLock { $0.max } }
    var total: Int { state.withLock { $0.total } }
    var current: Int { state.withLock { $0.current } }
}
