// moto_server (PyPI moto[server,ec2], installed by scripts/bootstrap into .venv) on a free loopback port.
import Foundation
import Testing

/// A moto_server this test started; stop it with `stop()`.
struct MotoServer {
    /// `.venv/bin/moto_server` in the repository.
    static let executable: String = {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<4 { url.deleteLastPathComponent() }  // Support, FabricProvidersTests, Tests → repo root
        return url.appendingPathComponent(".venv/bin/moto_server").path
    }()

    /// Whether moto is installed; the tests that need it are skipped with a message when not.
    static var available: Bool { FileManager.default.isExecutableFile(atPath: executable) }

    /// Why the moto tests are skipped when they are.
    static let missingMessage: Comment =
        "moto_server is not installed at .venv/bin/moto_server: run scripts/bootstrap (scripts/test runs it)"

    let process: ServerProcess
    let folder: URL
    /// The EC2 Query endpoint, `http://127.0.0.1:<port>/`.
    let endpoint: String

    /// Starts moto_server on a free port and waits until it answers.
    static func start() async throws -> MotoServer {
        let folder = try makeTempFolder("fabric-moto")
        let port = try freeLoopbackPort()
        let process = try ServerProcess(
            "moto_server", executable: executable, arguments: ["-H", "127.0.0.1", "-p", String(port)],
            logFile: folder.appendingPathComponent("moto.log"))
        do {
            try await process.waitUntilListening(port: port, timeout: .seconds(60))
        } catch {
            await process.stop()
            let log = (try? String(contentsOf: folder.appendingPathComponent("moto.log"), encoding: .utf8)) ?? ""
            throw TestProcessError("\(error); moto.log: \(log.suffix(2000))")
        }
        return MotoServer(process: process, folder: folder, endpoint: "http://127.0.0.1:\(port)/")
    }

    /// Stops the server by its PID and removes its folder.
    func stop() async {
        await process.stop()
        try? FileManager.default.removeItem(at: folder)
    }
}

/// Runs `body` with a fresh moto_server and always stops it.
func withMoto<T>(_ body: (MotoServer) async throws -> T) async throws -> T {
    let moto = try await MotoServer.start()
    do {
        let result = try await body(moto)
        await moto.stop()
        return result
    } catch {
        await moto.stop()
        throw error
    }
}
