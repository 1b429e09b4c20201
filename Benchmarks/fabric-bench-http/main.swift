// fabric-bench-http: a bare libmicrohttpd responder, the ceiling of Fabric's HTTP engine in `make bench-api`.
//
// It starts the daemon with the same flags and thread pool as FabricHTTP's HTTPServer (`fabric_mhd_pool_flags`)
// and answers every request with the same fixed bytes as `application/json`, from one response object built at
// start. Whatever FabricHTTP adds on top (routing, Swift request/response values, tasks) is measured against it.
//
//   fabric-bench-http --body FILE [--address 127.0.0.1:8080] [--threads N]
import CMicroHTTPD
import CShims
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// Upper bound on the body file: this responder serves API-sized documents.
let bodyFileBytesMax = 16 << 20

func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data("fabric-bench-http: \(message)\n".utf8))
    exit(2)
}

var bodyPath: String?
var address = "127.0.0.1:8080"
var threads = max(1, ProcessInfo.processInfo.activeProcessorCount)
var arguments = CommandLine.arguments.dropFirst()
while let flag = arguments.popFirst() {
    guard let value = arguments.popFirst() else { fail("\(flag) needs a value") }
    switch flag {
    case "--body": bodyPath = value
    case "--address": address = value
    case "--threads": threads = Int(value) ?? 0
    default: fail("unknown flag \(flag) (usage: --body FILE [--address HOST:PORT] [--threads N])")
    }
}
guard let bodyPath, let body = FileManager.default.contents(atPath: bodyPath), body.count <= bodyFileBytesMax
else { fail("--body FILE is required, readable and at most \(bodyFileBytesMax) bytes") }
guard threads >= 1 else { fail("--threads must be at least 1") }

// IPv4 "host:port" or ":port" is all a benchmark needs.
guard let colon = address.lastIndex(of: ":"), let port = UInt16(address[address.index(after: colon)...]) else {
    fail("--address must be HOST:PORT")
}
var socketAddress = sockaddr_in()
socketAddress.sin_family = sa_family_t(AF_INET)
socketAddress.sin_port = port.bigEndian
let host = address[..<colon].isEmpty ? "0.0.0.0" : String(address[..<colon])
guard inet_pton(AF_INET, host, &socketAddress.sin_addr) == 1 else { fail("--address host must be an IPv4 literal") }

// One response for every request: libmicrohttpd reference-counts it and never copies the bytes.
let bodyBuffer = UnsafeMutableRawBufferPointer.allocate(byteCount: max(body.count, 1), alignment: 1)
body.copyBytes(to: bodyBuffer)
guard let response = MHD_create_response_from_buffer(body.count, bodyBuffer.baseAddress, .RESPMEM_PERSISTENT) else {
    fail("cannot create the response")
}
_ = MHD_add_response_header(response, "Content-Type", "application/json")

// libmicrohttpd calls once when the headers are in, once per body chunk, and once when the request is complete.
// A response queued before that last call counts as early and closes the connection, so answer only then.
let handler: MHD_AccessHandlerCallback = { cls, connection, _, _, _, _, uploadDataSize, requestContext in
    if requestContext!.pointee == nil {
        requestContext!.pointee = UnsafeMutableRawPointer(bitPattern: 1)  // "headers seen"; nothing to free
        return .YES
    }
    if uploadDataSize!.pointee > 0 {
        uploadDataSize!.pointee = 0  // read and dropped
        return .YES
    }
    return MHD_queue_response(connection, 200, OpaquePointer(cls!))
}

let daemon: OpaquePointer? = withUnsafePointer(to: &socketAddress) { pointer in
    pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { sockaddr in
        var options = fabric_mhd_options(
            flags: fabric_mhd_pool_flags(), port: port, bind_address: sockaddr, thread_pool_size: UInt32(threads),
            connection_limit: 4096, per_ip_connection_limit: 256, connection_timeout_s: 60,
            connection_memory_limit: 32 << 10, listen_backlog: 1024)
        return fabric_mhd_start(&options, handler, UnsafeMutableRawPointer(response), nil, nil)
    }
}
guard let daemon else { fail("cannot listen on \(address): \(String(cString: strerror(errno)))") }
FileHandle.standardOutput.write(
    Data("fabric-bench-http listening on \(host):\(fabric_mhd_bound_port(daemon)) threads=\(threads)\n".utf8))

// Serve until killed (the benchmark script stops it by its PID).
while true { pause() }
