// Kubeconfig and in-cluster service account reading, and the credentials the driver sends.
import FabricCore
import Foundation
import Testing

@testable import FabricProviders

/// Base64 of a string, as kubeconfigs embed certificates.
func base64(_ s: String) -> String { Data(s.utf8).base64EncodedString() }

let caPEM = "-----BEGIN CERTIFICATE-----\nMIIBdummyCA\n-----END CERTIFICATE-----\n"
let certPEM = "-----BEGIN CERTIFICATE-----\nMIIBdummyClient\n-----END CERTIFICATE-----\n"
let keyPEM = "-----BEGIN EC PRIVATE KEY-----\nMHcdummyKey\n-----END EC PRIVATE KEY-----\n"

/// A kubeconfig with two clusters, two users and two contexts, like `kind` and a cloud console write them.
func kubeconfigYAML(server: String = "https://10.0.0.1:6443", current: String = "prod") -> String {
    """
    apiVersion: v1
    kind: Config
    preferences: {}
    current-context: \(current)
    clusters:
    - name: dev-cluster
      cluster:
        server: https://127.0.0.1:40000
        insecure-skip-tls-verify: true
    - name: prod-cluster
      cluster:
        certificate-authority-data: \(base64(caPEM))
        server: \(server)
    contexts:
    - name: dev
      context:
        cluster: dev-cluster
        user: dev-user
    - name: prod
      context:
        cluster: prod-cluster
        namespace: gpu-jobs
        user: prod-user
    users:
    - name: dev-user
      user:
        token: dev-token-123
    - name: prod-user
      user:
        client-certificate-data: \(base64(certPEM))
        client-key-data: \(base64(keyPEM))
        token: prod-token-456
    """
}

@Suite("KubeConfig")
struct KubeConfigTests {
    @Test("current-context with embedded CA, client certificate, key and token")
    func embedded() throws {
        let c = try KubeConfig.parse(Array(kubeconfigYAML().utf8))
        #expect(c.server == "https://10.0.0.1:6443")
        #expect(c.namespace == "gpu-jobs")
        #expect(c.context == "prod")
        #expect(c.token == "prod-token-456")
        #expect(c.tls.caPEM == Data(caPEM.utf8))
        #expect(c.tls.clientCertificatePEM == Data(certPEM.utf8))
        #expect(c.tls.clientKeyPEM == Data(keyPEM.utf8))
        #expect(c.tls.verifyPeer)
        // Neither the token nor the key shows up in logs.
        #expect(!c.description.contains("prod-token-456"))
        #expect(!c.description.contains("MHcdummyKey"))
        #expect(c.description.contains("token ****"))
    }

    @Test("a named context wins over current-context; its namespace defaults to default")
    func namedContext() throws {
        let c = try KubeConfig.parse(Array(kubeconfigYAML().utf8), context: "dev")
        #expect(c.server == "https://127.0.0.1:40000")
        #expect(c.namespace == "default")
        #expect(c.token == "dev-token-123")
        #expect(c.tls.caPEM == nil)
        #expect(!c.tls.verifyPeer)
    }

    @Test(
        "refusals name the problem",
        arguments: [
            ("current-context: nowhere\ncontexts: []\n", "no contexts entry named \"nowhere\""),
            ("clusters: []\n", "no current-context"),
            ("- a\n- b\n", "expected a mapping"),
            ("a: [\n", "invalid YAML"),
            (
                """
                current-context: c
                contexts: [{name: c, context: {cluster: k, user: u}}]
                clusters: [{name: k, cluster: {server: "https://x"}}]
                users: [{name: u, user: {exec: {command: aws}}}]
                """, "authenticates with exec"
            ),
            (
                """
                current-context: c
                contexts: [{name: c, context: {cluster: k}}]
                clusters: [{name: k, cluster: {server: "ftp://x"}}]
                """, "is not an http(s) URL"
            ),
            (
                """
                current-context: c
                contexts: [{name: c, context: {cluster: k}}]
                clusters: [{name: k, cluster: {server: "https://x", certificate-authority-data: "%%%"}}]
                """, "certificate-authority-data is not base64"
            ),
        ])
    func refusals(yaml: String, expected: String) {
        #expect {
            try KubeConfig.parse(Array(yaml.utf8), origin: "test.yaml")
        } throws: { error in
            guard let e = error as? FabricError else { return false }
            return e.code == .invalidArgument && e.message.hasPrefix("test.yaml: ") && e.message.contains(expected)
        }
    }

    @Test("certificate and token files resolve against the kubeconfig's folder")
    func files() throws {
        let dir = try temporaryDirectory()
        try Data(caPEM.utf8).write(to: URL(fileURLWithPath: dir + "/ca.pem"))
        try Data(certPEM.utf8).write(to: URL(fileURLWithPath: dir + "/client.pem"))
        try Data(keyPEM.utf8).write(to: URL(fileURLWithPath: dir + "/client.key"))
        let yaml = """
            current-context: c
            contexts: [{name: c, context: {cluster: k, user: u, namespace: ml}}]
            clusters: [{name: k, cluster: {server: "https://k:443", certificate-authority: ca.pem}}]
            users: [{name: u, user: {client-certificate: client.pem, client-key: client.key, tokenFile: tok}}]
            """
        try Data(yaml.utf8).write(to: URL(fileURLWithPath: dir + "/config"))
        let c = try KubeConfig.load(path: dir + "/config")
        #expect(c.tls.caPEM == Data(caPEM.utf8))
        #expect(c.tls.clientCertificatePEM == Data(certPEM.utf8))
        #expect(c.tls.clientKeyPEM == Data(keyPEM.utf8))
        #expect(c.tokenFile == dir + "/tok")
        #expect(c.namespace == "ml")
    }

    @Test("in-cluster: service host and port from the environment, CA, namespace and token file from the folder")
    func inCluster() throws {
        let dir = try temporaryDirectory()
        try Data(caPEM.utf8).write(to: URL(fileURLWithPath: dir + "/ca.crt"))
        try Data("sa-token\n".utf8).write(to: URL(fileURLWithPath: dir + "/token"))
        try Data("fabric-system\n".utf8).write(to: URL(fileURLWithPath: dir + "/namespace"))
        let env = ["KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"]
        let c = try KubeConfig.inCluster(environment: env, directory: dir)
        #expect(c.server == "https://10.96.0.1:443")
        #expect(c.namespace == "fabric-system")
        #expect(c.tls.caPEM == Data(caPEM.utf8))
        #expect(c.tokenFile == dir + "/token")
        let v6 = try KubeConfig.inCluster(
            environment: ["KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"], directory: dir)
        #expect(v6.server == "https://[fd00::1]:443")
        #expect(throws: FabricError.self) { try KubeConfig.inCluster(environment: [:], directory: dir) }
    }

    @Test("the driver sends the kubeconfig's bearer token to the namespace of its context")
    func driverSendsToken() async throws {
        let clock = ManualClock()
        let fake = FakeKubernetes(clock: clock, token: "prod-token-456")
        try fake.start()
        let baseURL = fake.baseURL
        let connection = try KubeConfig.parse(Array(kubeconfigYAML(server: baseURL).utf8))
        let transport = RecordingTransport(CurlHTTPClient())
        let driver = KubernetesDriver(
            configuration: KubernetesConfiguration(connection: connection), transport: transport, clock: clock)
        let listed = try await driver.list()
        await fake.stop()
        #expect(listed.isEmpty)
        let sent = try #require(transport.requests.first)
        #expect(sent.header("Authorization") == "Bearer prod-token-456")
        #expect(sent.url.hasPrefix(baseURL + "/api/v1/namespaces/gpu-jobs/pods?"))
    }

    @Test("over real TLS: the kubeconfig's embedded CA, client certificate and key reach libcurl")
    func mutualTLSFromKubeconfig() async throws {
        let fixture = try await TLSFixture.make()
        defer { try? FileManager.default.removeItem(at: fixture.folder) }
        let port = try freeLoopbackPort()
        let server = try fixture.mutualTLSServer(port: port)
        func kubeconfig(ca: Data) -> [UInt8] {
            let yaml = """
                current-context: tls
                contexts: [{name: tls, context: {cluster: c, user: u}}]
                clusters: [{name: c, cluster: {server: "https://127.0.0.1:\(port)", certificate-authority-data: \(ca.base64EncodedString())}}]
                users:
                - name: u
                  user:
                    client-certificate-data: \(fixture.clientCertificatePEM.base64EncodedString())
                    client-key-data: \(fixture.clientKeyPEM.base64EncodedString())
                """
            return Array(yaml.utf8)
        }
        func driver(_ connection: KubernetesConnection) -> KubernetesDriver {
            let transport = KubernetesDriver.transport(
                for: connection, provider: .k8s, logger: memoryLogger().0, clock: ManualClock(),
                random: SplitMix64(seed: 1), policy: RetryPolicy(attemptsMax: 1))
            return KubernetesDriver(
                configuration: KubernetesConfiguration(connection: connection), transport: transport,
                clock: ManualClock())
        }
        do {
            try await server.waitUntilListening(port: port)
            let good = try KubeConfig.parse(kubeconfig(ca: fixture.caPEM))
            #expect(good.tls.caPEM == fixture.caPEM && good.tls.clientKeyPEM == fixture.clientKeyPEM)
            // `s_server -www` answers every request with an HTML status page: the handshake (which demands the
            // client certificate) worked, and the page is not a PodList.
            let answered = await providerError { _ = try await driver(good).list() }
            #expect(answered?.code == "MalformedResponse")
            #expect(answered?.message.contains("HTTP 200") == true)
            #expect(answered?.message.contains("s_server") == true)
            let wrongCA = try KubeConfig.parse(kubeconfig(ca: fixture.otherCAPEM))
            let refused = await providerError { _ = try await driver(wrongCA).list() }
            #expect(refused?.kind == .authFailed && refused?.code == ProviderHTTP.tlsErrorCode)
        } catch {
            await server.stop()
            throw error
        }
        await server.stop()
    }

    @Test("settings: a kubeconfig path with namespace and endpoint overrides; in-cluster by name")
    func fromSettings() throws {
        let dir = try temporaryDirectory()
        try Data(kubeconfigYAML().utf8).write(to: URL(fileURLWithPath: dir + "/config"))
        let c = try KubernetesConnection.fromSettings(
            kubeconfig: dir + "/config", namespace: "batch", endpoint: "http://127.0.0.1:9/")
        #expect(c.server == "http://127.0.0.1:9" && c.namespace == "batch" && c.token == "prod-token-456")
        let plain = try KubernetesConnection.fromSettings(kubeconfig: dir + "/config")
        #expect(plain.server == "https://10.0.0.1:6443" && plain.namespace == "gpu-jobs")
        #expect(throws: FabricError.self) {
            try KubernetesConnection.fromSettings(kubeconfig: "in-cluster", environment: [:])
        }
    }

    @Test("a token file is read again after it rotates")
    func tokenRotation() async throws {
        let dir = try temporaryDirectory()
        try Data("first\n".utf8).write(to: URL(fileURLWithPath: dir + "/token"))
        let clock = ManualClock()
        let fake = FakeKubernetes(clock: clock)
        try fake.start()
        defer { Task { await fake.stop() } }
        let transport = RecordingTransport(CurlHTTPClient())
        let driver = KubernetesDriver(
            configuration: KubernetesConfiguration(
                connection: KubernetesConnection(server: fake.baseURL, tokenFile: dir + "/token")),
            transport: transport, clock: clock)
        _ = try await driver.list()
        try Data("second\n".utf8).write(to: URL(fileURLWithPath: dir + "/token"))
        _ = try await driver.list()  // still cached
        clock.advance(by: KubernetesDriver.tokenFileRereadInterval)
        _ = try await driver.list()
        #expect(
            transport.requests.map { $0.header("Authorization") } == ["Bearer first", "Bearer first", "Bearer second"])
    }
}

/// A fresh empty folder under the system's temporary directory.
func temporaryDirectory() throws -> String {
    let path = NSTemporaryDirectory() + "fabric-providers-\(UInt64.random(in: 0...UInt64.max))"
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}
