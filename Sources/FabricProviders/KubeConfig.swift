// Where a Kubernetes API server is and how to authenticate: a kubeconfig file, or the in-cluster service account.
import FabricCore
import FabricYAML
import Foundation

/// An API server and the credentials for it, ready for the Kubernetes driver. Its description never shows the
/// token or the client key.
public struct KubernetesConnection: Sendable, Hashable, CustomStringConvertible {
    /// `https://host:port` (or `http://` against a local fake), without a trailing slash.
    public var server: String
    /// The namespace pods go into, from the kubeconfig context (or the service account), else `default`.
    public var namespace: String
    /// CA, client certificate and key as bytes, for the libcurl client that talks to this server
    /// (`KubernetesDriver.transport(for:logger:clock:random:)`).
    public var tls: TLSSettings
    /// A bearer token, if the user authenticates with one.
    public var token: String?
    /// A file holding the bearer token, read again as it rotates (the service account's `token`, a kubeconfig
    /// `tokenFile`); wins over `token`.
    public var tokenFile: String?
    /// The kubeconfig context this came from; nil for in-cluster.
    public var context: String?

    /// A connection; a trailing slash on `server` is dropped.
    public init(
        server: String, namespace: String = KubeConfig.defaultNamespace, tls: TLSSettings = TLSSettings(),
        token: String? = nil, tokenFile: String? = nil, context: String? = nil
    ) {
        self.server = server.hasSuffix("/") ? String(server.dropLast()) : server
        self.namespace = namespace
        self.tls = tls
        self.token = token
        self.tokenFile = tokenFile
        self.context = context
    }

    /// Server, namespace, context and which credentials are set; never a token or key.
    public var description: String {
        var auth: [String] = []
        if let tokenFile { auth.append("token file \(tokenFile)") } else if token != nil { auth.append("token ****") }
        if tls.clientCertificatePEM != nil { auth.append("client certificate") }
        var trust = tls.caPEM.map { "ca \($0.count) bytes" } ?? "system CAs"
        if !tls.verifyPeer { trust = "insecure-skip-tls-verify" }
        return "\(server) namespace=\(namespace) context=\(context ?? "in-cluster") "
            + "auth=\(auth.isEmpty ? "none" : auth.joined(separator: "+")) tls=\(trust)"
    }
}

/// Reads kubeconfig files (`current-context` or a named one; clusters, contexts and users with embedded or file
/// certificates and tokens) and the in-cluster service account.
///
/// Supported user credentials: `token`, `tokenFile`, `client-certificate[-data]` + `client-key[-data]`. Exec and
/// auth-provider plugins are refused with a clear error (they run programs; use a token or certificate instead).
public enum KubeConfig {
    /// The namespace when neither the context nor the service account names one.
    public static let defaultNamespace = "default"
    /// The largest kubeconfig, certificate or token file read.
    public static let fileBytesMax = 1 << 20
    /// Where a pod finds its service account (`token`, `ca.crt`, `namespace`).
    public static let serviceAccountDirectory = "/var/run/secrets/kubernetes.io/serviceaccount"

    /// Parses kubeconfig YAML. `context` picks one context (default: `current-context`); relative file paths in
    /// the config resolve against `baseDirectory`. Errors are `.invalidArgument` naming `origin` and the problem.
    public static func parse(
        _ bytes: [UInt8], context: String? = nil, origin: String = "kubeconfig", baseDirectory: String? = nil
    ) throws(FabricError) -> KubernetesConnection {
        func fail(_ message: String) -> FabricError {
            FabricError(.invalidArgument, "\(origin): \(message)", field: "kubeconfig")
        }
        let root: YAMLNode?
        do { root = try YAMLReader.parse(bytes) } catch {
            throw fail("invalid YAML at line \(error.line) column \(error.column): \(error.message)")
        }
        guard let root, root.entries != nil else { throw fail("not a kubeconfig: expected a mapping") }
        guard let contextName = context ?? root["current-context"]?.scalar, !contextName.isEmpty else {
            throw fail("no current-context, and no context was named")
        }
        func named(_ list: String, _ name: String, _ field: String) throws(FabricError) -> YAMLNode {
            for item in root[list]?.items ?? [] where item["name"]?.scalar == name {
                guard let body = item[field], body.entries != nil else {
                    throw fail("\(list) entry \"\(name)\" has no \(field) mapping")
                }
                return body
            }
            throw fail("no \(list) entry named \"\(name)\"")
        }
        let ctx = try named("contexts", contextName, "context")
        guard let clusterName = ctx["cluster"]?.scalar else {
            throw fail("context \"\(contextName)\" names no cluster")
        }
        let cluster = try named("clusters", clusterName, "cluster")
        guard let server = cluster["server"]?.scalar, !server.isEmpty else {
            throw fail("cluster \"\(clusterName)\" has no server")
        }
        guard server.hasPrefix("https://") || server.hasPrefix("http://") else {
            throw fail("cluster \"\(clusterName)\" server \"\(server)\" is not an http(s) URL")
        }
        var tls = TLSSettings()
        tls.verifyPeer = cluster["insecure-skip-tls-verify"]?.scalar != "true"
        tls.caPEM = try material(
            cluster, data: "certificate-authority-data", file: "certificate-authority", base: baseDirectory,
            fail: fail)
        var token: String?
        var tokenFile: String?
        if let userName = ctx["user"]?.scalar {
            let user = try named("users", userName, "user")
            for plugin in ["exec", "auth-provider"] where user[plugin] != nil {
                throw fail(
                    "user \"\(userName)\" authenticates with \(plugin), which Fabric does not run; use a token or a "
                        + "client certificate")
            }
            tls.clientCertificatePEM = try material(
                user, data: "client-certificate-data", file: "client-certificate", base: baseDirectory, fail: fail)
            tls.clientKeyPEM = try material(
                user, data: "client-key-data", file: "client-key", base: baseDirectory, fail: fail)
            guard (tls.clientCertificatePEM == nil) == (tls.clientKeyPEM == nil) else {
                throw fail("user \"\(userName)\" has a client certificate without its key, or a key without one")
            }
            token = user["token"]?.scalar
            tokenFile = user["tokenFile"]?.scalar.map { resolve($0, base: baseDirectory) }
        }
        let namespace = ctx["namespace"]?.scalar ?? defaultNamespace
        return KubernetesConnection(
            server: server, namespace: namespace, tls: tls, token: token, tokenFile: tokenFile, context: contextName)
    }

    /// Reads and parses a kubeconfig file; relative paths inside resolve against its folder.
    public static func load(path: String, context: String? = nil) throws(FabricError) -> KubernetesConnection {
        let bytes = try readFile(path, what: "kubeconfig")
        let base = (path as NSString).deletingLastPathComponent
        return try parse(Array(bytes), context: context, origin: path, baseDirectory: base.isEmpty ? "." : base)
    }

    /// The connection a pod has to its own cluster: `https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`,
    /// the service account's CA and namespace, and its token file (read again as it rotates).
    public static func inCluster(
        environment: [String: String] = ProcessInfo.processInfo.environment,
        directory: String = serviceAccountDirectory
    ) throws(FabricError) -> KubernetesConnection {
        guard let host = environment["KUBERNETES_SERVICE_HOST"], !host.isEmpty,
            let port = environment["KUBERNETES_SERVICE_PORT"], !port.isEmpty
        else {
            throw FabricError(
                .invalidArgument, "not in a cluster: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set",
                field: "kubeconfig")
        }
        let hostPart = host.contains(":") ? "[\(host)]" : host
        let ca = try readFile(directory + "/ca.crt", what: "service account CA")
        let tokenPath = directory + "/token"
        _ = try readFile(tokenPath, what: "service account token")
        let namespaceText = (try? readFile(directory + "/namespace", what: "namespace")).map {
            String(decoding: $0, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        }
        let namespace = namespaceText.flatMap { $0.isEmpty ? nil : $0 } ?? defaultNamespace
        return KubernetesConnection(
            server: "https://\(hostPart):\(port)", namespace: namespace, tls: TLSSettings(caPEM: ca),
            tokenFile: tokenPath)
    }

    /// The bytes of `*-data` (base64) or of the file `file` names, nil when neither is set.
    private static func material(
        _ node: YAMLNode, data: String, file: String, base: String?, fail: (String) -> FabricError
    ) throws(FabricError) -> Data? {
        if let text = node[data]?.scalar {
            guard let bytes = Data(base64Encoded: text, options: .ignoreUnknownCharacters), !bytes.isEmpty else {
                throw fail("\(data) is not base64")
            }
            return bytes
        }
        if let path = node[file]?.scalar {
            return try readFile(resolve(path, base: base), what: file)
        }
        return nil
    }

    private static func resolve(_ path: String, base: String?) -> String {
        guard !path.hasPrefix("/"), let base else { return path }
        return base + "/" + path
    }

    /// A whole file up to `fileBytesMax`, or an `.invalidArgument` error naming it and what is wrong.
    static func readFile(_ path: String, what: String) throws(FabricError) -> Data {
        try SmallFile.read(path, what: what, bytesMax: fileBytesMax, field: "kubeconfig")
    }
}

extension KubernetesConnection {
    /// The kubeconfig value that selects the in-cluster service account.
    public static let inClusterKubeconfig = "in-cluster"

    /// The connection a provider's settings describe: `kubeconfig` is a file path, or `in-cluster` (or empty,
    /// inside a pod) for the service account; a non-empty `namespace` or `endpoint` overrides the context's
    /// namespace or server (tests, private endpoints).
    public static func fromSettings(
        kubeconfig: String, namespace: String = "", endpoint: String = "",
        environment: [String: String] = ProcessInfo.processInfo.environment
    ) throws(FabricError) -> KubernetesConnection {
        var connection: KubernetesConnection
        if kubeconfig == inClusterKubeconfig || kubeconfig.isEmpty {
            connection = try KubeConfig.inCluster(environment: environment)
        } else {
            connection = try KubeConfig.load(path: kubeconfig)
        }
        if !namespace.isEmpty { connection.namespace = namespace }
        if !endpoint.isEmpty { connection.server = endpoint.hasSuffix("/") ? String(endpoint.dropLast()) : endpoint }
        return connection
    }
}
