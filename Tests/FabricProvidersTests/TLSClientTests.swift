// CurlHTTPClient over TLS against a real `openssl s_server` that demands a client certificate: the CA, the client
// certificate and its key are handed to libcurl from memory, as a kubeconfig's *-data fields are.
import Foundation
import Testing

@testable import FabricProviders

/// A throwaway CA, a server certificate for 127.0.0.1 and a client certificate, made with the openssl CLI.
struct TLSFixture {
    /// An `openssl s_server` on `port` with this fixture's server certificate, requiring a client certificate
    /// signed by its CA.
    func mutualTLSServer(port: Int) throws -> ServerProcess {
        func path(_ name: String) -> String { folder.appendingPathComponent(name).path }
        return try ServerProcess(
            "openssl s_server", executable: "/usr/bin/openssl",
            arguments: [
                "s_server", "-accept", "127.0.0.1:\(port)", "-cert", path("server.pem"), "-key", path("server.key"),
                "-CAfile", path("ca.pem"), "-Verify", "1", "-verify_return_error", "-www", "-quiet",
            ], logFile: folder.appendingPathComponent("s_server.log"))
    }

    var folder: URL
    var caPEM: Data
    var clientCertificatePEM: Data
    var clientKeyPEM: Data
    var otherCAPEM: Data

    static func make() async throws -> TLSFixture {
        let dir = try makeTempFolder("fabric-tls")
        let openssl = "/usr/bin/openssl"
        func ec(_ key: String) async throws {
            try await runCommand(
                openssl, ["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", key], in: dir)
        }
        for key in ["ca.key", "other-ca.key", "server.key", "client.key"] { try await ec(key) }
        for (key, cert, cn) in [("ca.key", "ca.pem", "fabric-test-ca"), ("other-ca.key", "other-ca.pem", "other-ca")] {
            try await runCommand(
                openssl, ["req", "-x509", "-new", "-key", key, "-out", cert, "-days", "1", "-subj", "/CN=\(cn)"],
                in: dir)
        }
        try "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n".write(
            to: dir.appendingPathComponent("server.ext"), atomically: true, encoding: .utf8)
        try "extendedKeyUsage=clientAuth\n".write(
            to: dir.appendingPathComponent("client.ext"), atomically: true, encoding: .utf8)
        for (name, cn) in [("server", "127.0.0.1"), ("client", "fabric-test-client")] {
            try await runCommand(
                openssl, ["req", "-new", "-key", "\(name).key", "-out", "\(name).csr", "-subj", "/CN=\(cn)"], in: dir)
            try await runCommand(
                openssl,
                [
                    "x509", "-req", "-in", "\(name).csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                    "-out", "\(name).pem", "-days", "1", "-extfile", "\(name).ext",
                ], in: dir)
        }
        func read(_ name: String) throws -> Data { try Data(contentsOf: dir.appendingPathComponent(name)) }
        return TLSFixture(
            folder: dir, caPEM: try read("ca.pem"), clientCertificatePEM: try read("client.pem"),
            clientKeyPEM: try read("client.key"), otherCAPEM: try read("other-ca.pem"))
    }
}

@Suite("CurlHTTPClient TLS", .serialized)
struct TLSClientTests {
    @Test("CA and client certificate from memory: accepted; a wrong CA or no client certificate: refused")
    func mutualTLS() async throws {
        let fixture = try await TLSFixture.make()
        defer { try? FileManager.default.removeItem(at: fixture.folder) }
        let port = try freeLoopbackPort()
        let server = try fixture.mutualTLSServer(port: port)
        do {
            try await server.waitUntilListening(port: port)
            let url = "https://127.0.0.1:\(port)/"

            let good = CurlHTTPClient(
                tls: TLSSettings(
                    caPEM: fixture.caPEM, clientCertificatePEM: fixture.clientCertificatePEM,
                    clientKeyPEM: fixture.clientKeyPEM))
            let response = try await good.send(HTTPRequest(method: "GET", url: url, timeout: .seconds(10)))
            #expect(response.status == 200)
            #expect(String(decoding: response.body, as: UTF8.self).contains("fabric-test-client"))

            let wrongCA = CurlHTTPClient(
                tls: TLSSettings(
                    caPEM: fixture.otherCAPEM, clientCertificatePEM: fixture.clientCertificatePEM,
                    clientKeyPEM: fixture.clientKeyPEM))
            let untrusted = await #expect(throws: HTTPTransportError.self) {
                try await wrongCA.send(HTTPRequest(method: "GET", url: url, timeout: .seconds(10)))
            }
            #expect(untrusted?.kind == .tls)
            #expect(untrusted?.isRetryable == false)

            let anonymous = CurlHTTPClient(tls: TLSSettings(caPEM: fixture.caPEM))
            let refused = await #expect(throws: HTTPTransportError.self) {
                try await anonymous.send(HTTPRequest(method: "GET", url: url, timeout: .seconds(10)))
            }
            #expect(refused != nil)

            let insecure = CurlHTTPClient(
                tls: TLSSettings(
                    clientCertificatePEM: fixture.clientCertificatePEM, clientKeyPEM: fixture.clientKeyPEM,
                    verifyPeer: false))
            #expect(try await insecure.send(HTTPRequest(method: "GET", url: url, timeout: .seconds(10))).status == 200)
        } catch {
            await server.stop()
            throw error
        }
        await server.stop()
    }
}
