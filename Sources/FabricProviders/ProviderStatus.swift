import FabricCore

/// One provider's state as `GET /v1/providers` shows it: enabled or not, health, and how fresh its catalog is.
///
/// Pure: built from settings, a credentials check and the catalog, at a `now` the caller passes.
public struct ProviderStatus: Sendable, Hashable, Codable {
    /// Health when the provider is enabled and can launch machines.
    public static let healthOK = "ok"
    /// Health when settings turn the provider off.
    public static let healthDisabled = "disabled"
    /// Health when the provider is enabled without credentials: its catalog prices inform placement previews,
    /// but Fabric cannot launch machines there.
    public static let healthNoCredentials = "no credentials: catalog prices only"
    /// Health when a priced provider has credentials but no catalog rows, so the scheduler never picks it.
    public static let healthNoOffers = "no catalog offers"
    /// Health when the latest call to the provider's API failed (`lastError` says how): wrong credentials, an
    /// endpoint that cannot be reached. Placement still sees its offers; provisioning there fails over.
    public static let healthFailing = "failing: its API answered the last call with an error"

    public var name: ProviderName
    public var enabled: Bool
    public var health: String
    public var offerCount: Int
    /// The newest `as_of` date among the provider's catalog rows, `YYYY-MM-DD`; nil without rows.
    public var catalogAsOf: String?
    /// Whole days from `catalogAsOf` to `now`; nil without rows.
    public var catalogAgeDays: Int?
    /// When live prices were last read from the provider's API; nil when only the catalog's are known.
    public var livePricesAt: Timestamp?
    /// The error of the latest call to the provider's API when it failed (listing instances, reading offers).
    public var lastError: String?
    /// When that call failed.
    public var lastErrorAt: Timestamp?

    public init(
        name: ProviderName, enabled: Bool, health: String, offerCount: Int, catalogAsOf: String?,
        catalogAgeDays: Int?
    ) {
        self.name = name
        self.enabled = enabled
        self.health = health
        self.offerCount = offerCount
        self.catalogAsOf = catalogAsOf
        self.catalogAgeDays = catalogAgeDays
    }

    /// The providers whose machines Fabric buys at catalog prices (`local` and `k8s` run on capacity already paid).
    public static let pricedProviders: Set<ProviderName> = [.runpod, .coreweave, .aws, .gcp]

    /// Builds a provider's status. `hasCredentials` is whether the shell found usable credentials (pass true for
    /// providers that need none, such as `local`).
    public static func make(
        name: ProviderName, enabled: Bool, hasCredentials: Bool, catalog: OfferCatalog, now: Timestamp
    ) -> ProviderStatus {
        let offerCount = catalog.offers(provider: name).count
        let age = catalog.age(provider: name, now: now)
        let health: String
        if !enabled {
            health = healthDisabled
        } else if !hasCredentials {
            health = healthNoCredentials
        } else if offerCount == 0, pricedProviders.contains(name) {
            health = healthNoOffers
        } else {
            health = healthOK
        }
        return ProviderStatus(
            name: name, enabled: enabled, health: health, offerCount: offerCount, catalogAsOf: age?.newestAsOf,
            catalogAgeDays: age?.newestDays)
    }
}
