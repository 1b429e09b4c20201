import Distributed
import FabricCore
import Foundation
import Testing

@testable import FabricActors

/// Behaviour that only a real nats-server shows: lost peers, restarts, raw requests, TLS and authentication.
@Suite(.serialized) struct NATSTests {
    @Test("a peer that vanishes without a goodbye costs the caller at most its deadline")
    func abruptPeerLoss() async throws {
        let settings = ActorSystemSettings(callTimeout: .milliseconds(800))
        try await withNATSServer { server in
            let serving = try await NATSActorSystem.connect(
                node: "n1", options: testOptions(server, name: "serving"), settings: settings, logger: quietLogger())
            let calling = try await NATSActorSystem.connect(
                node: "n2", options: testOptions(server, name: "calling"), settings: settings, logger: quietLogger())
            let local = Counter(actorSystem: serving)
            defer { withExtendedLifetime(local) {} }
            try await serving.flush()
            let remote = try Counter.resolve(id: local.id, using: calling)
            #expect(try await remote.add(1) == 1)

            let clock = ContinuousClock()
            let start = clock.now
            let call = Task { try await remote.sleep(milliseconds: 3000) }
            try await Task.sleep(for: .milliseconds(150))
            await serving.connection!.close()  // the connection drops; the system never says goodbye
            let result = await call.result
            let elapsed = start.duration(to: clock.now)
            if case .failure(let e) = result {
                #expect(callCode(e) == .deadlineExceeded)
            } else {
                Issue.record("the call succeeded after its peer vanished")
            }
            #expect(elapsed >= .milliseconds(750))
            #expect(elapsed < .milliseconds(2500))  // the deadline, not the 3 s the call would take
            let (after, afterElapsed) = await failure { try await remote.get() }
            #expect(callCode(after) == .noResponders)
            #expect(afterElapsed < .seconds(2))
            await serving.shutdown()
            await calling.shutdown()
        }
    }

    @Test("after nats-server restarts on the same port, calls succeed again within a bounded wait")
    func serverRestart() async throws {
        try await withNATSServer { server in
            let serving = try await NATSActorSystem.connect(
                node: "n1", options: testOptions(server, name: "serving"), logger: quietLogger())
            let calling = try await NATSActorSystem.connect(
                node: "n2", options: testOptions(server, name: "calling"), logger: quietLogger())
            let local = try serving.makeActor(named: "/system/counter") { Counter(actorSystem: serving) }
            defer { withExtendedLifetime(local) {} }
            try await serving.flush()
            let remote = try Counter.resolve(id: local.id, using: calling)
            #expect(try await remote.add(1) == 1)

            server.stop()
            try await waitUntil { !calling.connection!.isConnected && !serving.connection!.isConnected }
            // While NATS is away, calls fail at once instead of waiting out their 5 s deadline.
            let (down, downElapsed) = await failure { try await remote.add(1) }
            #expect(callCode(down) == .unavailable)
            #expect(downElapsed < .milliseconds(500))

            try await server.start()
            let clock = ContinuousClock()
            let start = clock.now
            let bound: Duration = .seconds(10)
            var value: Int?
            while value == nil && start.duration(to: clock.now) < bound {
                value = try? await ActorCall.$timeout.withValue(.milliseconds(500)) { try await remote.add(1) }
                if value == nil { try await Task.sleep(for: .milliseconds(50)) }
            }
            let v = try #require(value, "no successful call within \(bound) of the restart")
            #expect(v >= 2)  // the actor kept its state; a timed-out attempt may also have counted
            #expect(try await remote.get() == v)
            #expect(calling.connection!.isConnected)
            #expect(serving.connection!.isConnected)
            await serving.shutdown()
            await calling.shutdown()
        }
    }

    @Test("raw request/reply: async and blocking, no responders, deadline, closed")
    func rawRequests() async throws {
        try await withNATSServer { server in
            let conn = try await NATSConnection.connect(testOptions(server, name: "raw"), logger: quietLogger())
            let echo = try conn.subscribe(subject: "fabric.test.echo") { msg in
                if let reply = msg.replyTo { try? conn.publish(subject: reply, data: msg.data.reversed()) }
            }
            let silent = try conn.subscribe(subject: "fabric.test.silent") { _ in }
            try await conn.flush(timeout: .seconds(1))

            #expect(
                try await conn.request(subject: "fabric.test.echo", data: [1, 2, 3], timeout: .seconds(1)) == [3, 2, 1])
            #expect(try await conn.request(subject: "fabric.test.echo", data: [], timeout: .seconds(1)) == [])
            let big = [UInt8](repeating: 7, count: 200_000) + [1]
            #expect(
                try await conn.request(subject: "fabric.test.echo", data: big, timeout: .seconds(2)) == big.reversed())
            async let many = withThrowingTaskGroup(of: Bool.self) { group in
                for i in 0..<200 {
                    group.addTask {
                        let d: [UInt8] = [UInt8(i & 0xFF), UInt8(i >> 8)]
                        return try await conn.request(subject: "fabric.test.echo", data: d, timeout: .seconds(2))
                            == d.reversed()
                    }
                }
                return try await group.reduce(true) { $0 && $1 }
            }
            #expect(try await many)

            let blocking = try await offload {
                try conn.requestBlocking(subject: "fabric.test.echo", data: [9, 8], timeout: .seconds(1))
            }
            #expect(blocking == [8, 9])

            let (none, noneElapsed) = await failure {
                try await conn.request(subject: "fabric.test.nobody", data: [1], timeout: .seconds(5))
            }
            #expect(callCode(none) == .noResponders)
            #expect(noneElapsed < .milliseconds(500))
            let (silence, silenceElapsed) = await failure {
                try await conn.request(subject: "fabric.test.silent", data: [1], timeout: .milliseconds(200))
            }
            #expect(callCode(silence) == .deadlineExceeded)
            #expect(silenceElapsed >= .milliseconds(190))
            #expect(conn.mux.pendingCount == 0)

            echo.cancel()
            echo.cancel()
            try await conn.flush(timeout: .seconds(1))
            let (gone, _) = await failure {
                try await conn.request(subject: "fabric.test.echo", data: [1], timeout: .seconds(1))
            }
            #expect(callCode(gone) == .noResponders)

            silent.cancel()
            await conn.close()
            await conn.close()
            let (closed, _) = await failure {
                try await conn.request(subject: "fabric.test.echo", data: [1], timeout: .seconds(1))
            }
            #expect(callCode(closed) == .unavailable)
            #expect(throws: FabricError.self) { try conn.publish(subject: "fabric.test.echo", data: [1]) }
        }
    }

    @Test("connecting to a port where nobody listens fails with the library's text")
    func connectFailure() async throws {
        let port = freePort()
        let (error, _) = await failure {
            try await NATSConnection.connect(
                NATSOptions(urls: ["nats://127.0.0.1:\(port)"], connectTimeout: .milliseconds(500)),
                logger: quietLogger())
        }
        let fabric = try #require(error as? FabricError)
        #expect(fabric.code == .unavailable)
        #expect(fabric.message.hasPrefix("nats: connect to nats://127.0.0.1:\(port): "))
        #expect(fabric.message.contains("No server available"))
        #expect(throws: FabricError.self) { try NATSConnection(options: NATSOptions(urls: [])) }
    }

    @Test("user/password and token authentication")
    func authentication() async throws {
        try await withNATSServer(extraArguments: ["--user", "fabric", "--pass", "s3cret"]) { server in
            var options = testOptions(server, name: "auth")
            options.reconnect = .never
            let (refused, _) = await failure { try await NATSConnection.connect(options, logger: quietLogger()) }
            #expect(refused is FabricError)
            options.credentials = .userPassword(user: "fabric", password: "wrong")
            let (wrong, _) = await failure { try await NATSConnection.connect(options, logger: quietLogger()) }
            #expect(wrong is FabricError)
            options.credentials = .userPassword(user: "fabric", password: "s3cret")
            let conn = try await NATSConnection.connect(options, logger: quietLogger())
            #expect(conn.isConnected)
            await conn.close()
        }
        try await withNATSServer(extraArguments: ["--auth", "t0ken"]) { server in
            var options = testOptions(server, name: "token")
            options.credentials = .token("t0ken")
            let system = try await NATSActorSystem.connect(node: "n1", options: options, logger: quietLogger())
            let local = Counter(actorSystem: system)
            try await system.flush()
            let remote = try Counter.resolve(id: local.id, using: system)
            #expect(try await remote.add(2) == 2)
            await system.shutdown()
        }
    }

    @Test("TLS with a CA file, and skip-verify for tests", .enabled(if: TestCertificates.opensslAvailable))
    func tls() async throws {
        let certs = try TestCertificates()
        defer { certs.remove() }
        let args = ["--tls", "--tlscert", certs.serverCert, "--tlskey", certs.serverKey]
        try await withNATSServer(extraArguments: args) { server in
            var options = testOptions(server, name: "tls")
            options.reconnect = .never
            options.tls = NATSOptions.TLS(caFile: certs.caCert)
            let system = try await NATSActorSystem.connect(node: "n1", options: options, logger: quietLogger())
            let local = Counter(actorSystem: system)
            try await system.flush()
            let remote = try Counter.resolve(id: local.id, using: system)
            #expect(try await remote.echo("over tls") == "over tls")
            await system.shutdown()

            options.tls = NATSOptions.TLS(skipServerVerification: true)
            let skipping = try await NATSConnection.connect(options, logger: quietLogger())
            #expect(skipping.isConnected)
            await skipping.close()

            options.tls = NATSOptions.TLS(caFile: certs.caCert, certificateFile: certs.serverCert)
            let (halfPair, _) = await failure { try await NATSConnection.connect(options, logger: quietLogger()) }
            #expect((halfPair as? FabricError)?.field == "tls")

            options.tls = nil
            let (plain, _) = await failure { try await NATSConnection.connect(options, logger: quietLogger()) }
            #expect(plain is FabricError)
        }
    }
}

/// A throwaway CA and a server certificate for 127.0.0.1, made with the openssl command.
struct TestCertificates {
    static var opensslAvailable: Bool { FileManager.default.isExecutableFile(atPath: "/usr/bin/openssl") }

    let dir: URL
    var caCert: String { dir.appendingPathComponent("ca.pem").path }
    var serverCert: String { dir.appendingPathComponent("server.pem").path }
    var serverKey: String { dir.appendingPathComponent("server.key").path }

    init() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("fabric-tls-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        try "subjectAltName=IP:127.0.0.1,DNS:localhost\n".write(
            to: dir.appendingPathComponent("san.ext"), atomically: true, encoding: .utf8)
        try Self.openssl(
            [
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=fabric-test-ca", "-keyout",
                "ca.key", "-out", "ca.pem",
            ], in: dir)
        try Self.openssl(
            [
                "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", "server.key", "-out",
                "server.csr",
            ], in: dir)
        try Self.openssl(
            [
                "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days",
                "2",
                "-extfile", "san.ext", "-out", "server.pem",
            ], in: dir)
    }

    func remove() { try? FileManager.default.removeItem(at: dir) }

    static func openssl(_ args: [String], in dir: URL) throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
        p.arguments = args
        p.currentDirectoryURL = dir
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else {
            throw FabricError(.internalError, "openssl \(args.first ?? "") failed with \(p.terminationStatus)")
        }
    }
}
