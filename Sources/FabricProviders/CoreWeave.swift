// CoreWeave: a Kubernetes API driven through its console-issued kubeconfig; there is no separate compute API.
import FabricCore

extension KubernetesConfiguration {
    /// CoreWeave's settings: provider `coreweave`, pods pinned by required node affinity to the offer's
    /// `gpu.nvidia.com/class` (or `node.coreweave.cloud/cpu` for CPU types) and `topology.kubernetes.io/region`,
    /// offers from the catalog's `coreweave` rows (machine types `<class>-x<GPUs>`, `<cpu type>-<vCPUs>`).
    public static func coreWeave(
        connection: KubernetesConnection, namespace: String? = nil, catalog: OfferCatalog = .bundled,
        pendingTimeout: Duration = pendingTimeoutDefault, defaultImage: String? = nil
    ) -> KubernetesConfiguration {
        KubernetesConfiguration(
            provider: .coreweave, connection: connection, namespace: namespace, nodeLabels: .coreWeave,
            offerSource: .catalog(catalog), pendingTimeout: pendingTimeout, defaultImage: defaultImage)
    }
}

extension KubernetesDriver {
    /// A driver for CoreWeave (`KubernetesConfiguration.coreWeave`).
    public static func coreWeave(
        connection: KubernetesConnection, transport: any HTTPTransport, clock: any WallClock,
        namespace: String? = nil, catalog: OfferCatalog = .bundled,
        pendingTimeout: Duration = KubernetesConfiguration.pendingTimeoutDefault, defaultImage: String? = nil
    ) -> KubernetesDriver {
        KubernetesDriver(
            configuration: .coreWeave(
                connection: connection, namespace: namespace, catalog: catalog, pendingTimeout: pendingTimeout,
                defaultImage: defaultImage), transport: transport, clock: clock)
    }
}
