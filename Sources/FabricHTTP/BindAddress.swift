// Listen addresses: "127.0.0.1:8080", ":8080", "0.0.0.0:0", "[::1]:8080", "localhost:8080".
import FabricCore
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// A parsed listen address: an IPv4 or IPv6 literal and a port (0 picks a free one).
public struct BindAddress: Sendable, Hashable, CustomStringConvertible {
    /// The IP literal: "0.0.0.0" when the address left the host out.
    public var host: String
    public var port: UInt16
    public var isIPv6: Bool

    /// Parses `host:port`, `:port` (every IPv4 interface), `[v6]:port` or `localhost:port`.
    public init(parsing text: String) throws(FabricError) {
        let field = "address"
        var host: Substring
        let portText: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]"), text[text.index(after: close)...].hasPrefix(":") else {
                throw FabricError.invalid(field, "address \(text) is not [ipv6]:port")
            }
            host = text[text.index(after: text.startIndex)..<close]
            portText = text[text.index(close, offsetBy: 2)...]
        } else {
            guard let colon = text.lastIndex(of: ":") else {
                throw FabricError.invalid(field, "address \(text) has no :port")
            }
            host = text[..<colon]
            portText = text[text.index(after: colon)...]
            guard !host.contains(":") else { throw FabricError.invalid(field, "IPv6 address \(text) needs [brackets]") }
        }
        guard let port = UInt16(portText) else {
            throw FabricError.invalid(field, "address \(text) has an invalid port")
        }
        if host.isEmpty { host = "0.0.0.0" }
        if host == "localhost" { host = "127.0.0.1" }
        let isIPv6 = host.contains(":")
        var probe = in6_addr()
        guard inet_pton(isIPv6 ? AF_INET6 : AF_INET, String(host), &probe) == 1 else {
            throw FabricError.invalid(field, "address \(text) has no IP literal host")
        }
        self.host = String(host)
        self.port = port
        self.isIPv6 = isIPv6
    }

    public var description: String { isIPv6 ? "[\(host)]:\(port)" : "\(host):\(port)" }

    /// Calls `body` with this address as a `sockaddr_in` or `sockaddr_in6`.
    func withSockAddr<R>(_ body: (UnsafePointer<sockaddr>) throws -> R) rethrows -> R {
        if isIPv6 {
            var address = sockaddr_in6()
            address.sin6_family = sa_family_t(AF_INET6)
            address.sin6_port = port.bigEndian
            _ = inet_pton(AF_INET6, host, &address.sin6_addr)
            return try withUnsafePointer(to: &address) {
                try $0.withMemoryRebound(to: sockaddr.self, capacity: 1, body)
            }
        }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        _ = inet_pton(AF_INET, host, &address.sin_addr)
        return try withUnsafePointer(to: &address) {
            try $0.withMemoryRebound(to: sockaddr.self, capacity: 1, body)
        }
    }
}
