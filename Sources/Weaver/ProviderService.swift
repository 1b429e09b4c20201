import FabricCore
import FabricProviders

/// What weaver knows about providers: which are enabled, whether they have credentials, and the offer catalog.
public struct ProviderService: Sendable {
    public struct Entry: Sendable {
        public var name: ProviderName
        public var enabled: Bool
        public var hasCredentials: Bool
    }

    public let catalog: OfferCatalog
    public let entries: [Entry]
    let clock: any WallClock

    public init(catalog: OfferCatalog, entries: [Entry], clock: any WallClock) {
        self.catalog = catalog
        self.entries = entries
        self.clock = clock
    }

    /// The offers of enabled providers, for dry runs.
    public var offerView: OfferView {
        let enabled = Set(entries.filter(\.enabled).map(\.name.rawValue))
        return OfferView(offers: catalog.offers, enabledProviders: enabled)
    }

    /// Every provider's state for `GET /v1/providers`.
    public func statuses() -> [ProviderStatus] {
        let now = clock.now()
        return entries.map {
            ProviderStatus.make(
                name: $0.name, enabled: $0.enabled, hasCredentials: $0.hasCredentials, catalog: catalog, now: now)
        }
    }

    /// A provider by its configuration name, or a 404 naming the known ones.
    public func provider(_ name: String) throws(FabricError) -> ProviderName {
        guard let p = ProviderName(rawValue: name), entries.contains(where: { $0.name == p }) else {
            let known = entries.map(\.name.rawValue).joined(separator: ", ")
            throw FabricError(.notFound, "unknown provider \"\(name)\"; known: \(known)", field: "name")
        }
        return p
    }
}
