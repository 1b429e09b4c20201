import FabricCore
import FabricProviders
import FabricScheduler
import Foundation
import Synchronization

/// What weaver knows about providers: which are enabled, whether they have credentials, the offer catalog, and the
/// offers their drivers reported (which replace that provider's catalog rows).
public struct ProviderService: Sendable {
    public struct Entry: Sendable {
        public var name: ProviderName
        public var enabled: Bool
        public var hasCredentials: Bool
    }

    public let catalog: OfferCatalog
    public let entries: [Entry]
    let clock: any WallClock
    /// Drivers of the providers weaver can provision on, by name.
    public let drivers: [ProviderName: any Provider]
    /// How the latest call to each provider's API went (offers here; the reconciler's listings in the service).
    public let calls = ProviderCallLog()
    private let live = LiveOffers()

    public init(
        catalog: OfferCatalog, entries: [Entry], clock: any WallClock, drivers: [any Provider] = []
    ) {
        self.catalog = catalog
        self.entries = entries
        self.clock = clock
        self.drivers = Dictionary(drivers.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
    }

    /// The offers of enabled providers (live where reported, else the catalog's), for placement and dry runs.
    public var offerView: OfferView {
        let enabled = Set(entries.filter(\.enabled).map(\.name.rawValue))
        return OfferView(offers: merged.offers, enabledProviders: enabled)
    }

    /// The catalog, where a driver reported its offers with that provider's rows replaced by the driver's: live
    /// prices where its API gives them, else the catalog rows it can serve (its configured regions).
    public var merged: OfferCatalog {
        let reported = live.all
        guard !reported.isEmpty else { return catalog }
        var offers = catalog.offers.filter { o in ProviderName(rawValue: o.provider).map { reported[$0] == nil } ?? true
        }
        for p in ProviderName.allCases { offers += reported[p]?.offers ?? [] }
        return OfferCatalog(origin: catalog.origin, offers: offers)
    }

    /// When a provider's live offers were read, if its driver reads them from the provider's API.
    public func liveAsOf(_ p: ProviderName) -> Timestamp? {
        live.all[p].flatMap { $0.origin == Self.liveOrigin ? $0.asOf : nil }
    }

    /// Reads every driver's offers once; a failure keeps what was read before (and is returned for the log).
    public func refreshOffers() async -> [ProviderName: any Error] {
        var failures: [ProviderName: any Error] = [:]
        for (name, driver) in drivers.sorted(by: { $0.key.rawValue < $1.key.rawValue }) {
            do {
                live.set(name, try await driver.offers())
                calls.succeeded(name.rawValue)
            } catch {
                failures[name] = error
                calls.failed(name.rawValue, error, at: clock.now())
            }
        }
        return failures
    }

    /// `OfferList.origin` of offers read from a provider's API.
    public static let liveOrigin = "live"

    /// Every provider's state for `GET /v1/providers`.
    public func statuses() -> [ProviderStatus] {
        let now = clock.now()
        let catalog = merged
        return entries.map {
            var s = ProviderStatus.make(
                name: $0.name, enabled: $0.enabled, hasCredentials: $0.hasCredentials, catalog: catalog, now: now)
            s.livePricesAt = liveAsOf($0.name)
            if $0.enabled, $0.hasCredentials, let failure = calls.failure($0.name.rawValue) {
                s.health = ProviderStatus.healthFailing
                s.lastError = failure.message
                s.lastErrorAt = failure.at
            }
            return s
        }
    }

    /// A provider's machine types (live or catalog), cheapest first, each with how old its price is.
    public func machineTypes(_ p: ProviderName, region: String?) -> [PricedOffer] {
        let now = clock.now()
        let liveAt = liveAsOf(p)
        return merged.machineTypes(provider: p, region: region).map { o in
            PricedOffer(offer: o, liveAt: liveAt != nil && o.source == Self.liveOrigin ? liveAt : nil, now: now)
        }
    }

    /// A provider's regions with their cheapest machine and how fresh their prices are.
    public func regions(_ p: ProviderName) -> [PricedRegion] {
        let types = machineTypes(p, region: nil)
        return merged.regions(provider: p).map { r in
            let inRegion = types.filter { $0.offer.region == r.region }
            return PricedRegion(
                summary: r, liveOffers: inRegion.filter { $0.priceSource == Self.liveOrigin }.count,
                newestPriceAgeSeconds: inRegion.map(\.priceAgeSeconds).min())
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

/// The latest failed call to each provider's API, cleared by the next call that succeeds.
public final class ProviderCallLog: Sendable {
    /// The longest error message kept.
    static let messageBytesMax = 300

    private let failures = Mutex<[String: (message: String, at: Timestamp)]>([:])

    public init() {}

    public func succeeded(_ provider: String) { _ = failures.withLock { $0.removeValue(forKey: provider) } }

    public func failed(_ provider: String, _ error: any Error, at: Timestamp) {
        let text = (error as? ProviderError)?.message ?? "\(error)"
        let message = text.utf8.count <= Self.messageBytesMax ? text : String(text.prefix(Self.messageBytesMax)) + "…"
        failures.withLock { $0[provider] = (message, at) }
    }

    public func failure(_ provider: String) -> (message: String, at: Timestamp)? {
        failures.withLock { $0[provider] }
    }
}

/// The live offers drivers reported, shared by copies of the service.
final class LiveOffers: Sendable {
    private let lists = Mutex<[ProviderName: OfferList]>([:])
    var all: [ProviderName: OfferList] { lists.withLock { $0 } }
    func set(_ p: ProviderName, _ l: OfferList) { lists.withLock { $0[p] = l } }
}

/// An offer as `GET /v1/providers/:name/machine-types` shows it: the row, where its price came from and its age.
public struct PricedOffer: Sendable, Hashable, Encodable {
    public var offer: Offer
    /// `live` (read from the provider's API) or `catalog`.
    public var priceSource: String
    /// When the price was observed: the live read, or the catalog row's `asOf` date (midnight UTC).
    public var priceObservedAt: Timestamp?
    /// Whole seconds from `priceObservedAt` to now.
    public var priceAgeSeconds: Int64

    init(offer: Offer, liveAt: Timestamp?, now: Timestamp) {
        self.offer = offer
        if let liveAt {
            priceSource = ProviderService.liveOrigin
            priceObservedAt = liveAt
        } else {
            priceSource = "catalog"
            priceObservedAt = CatalogDate.millisecondsSinceEpoch(offer.asOf).map(Timestamp.init)
        }
        priceAgeSeconds = priceObservedAt.map { max(0, now.since($0).components.seconds) } ?? 0
    }

    enum CodingKeys: String, CodingKey { case priceSource, priceObservedAt, priceAgeSeconds }

    public func encode(to encoder: Encoder) throws {
        try offer.encode(to: encoder)
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(priceSource, forKey: .priceSource)
        try c.encodeIfPresent(priceObservedAt, forKey: .priceObservedAt)
        try c.encode(priceAgeSeconds, forKey: .priceAgeSeconds)
    }
}

/// A region as `GET /v1/providers/:name/regions` shows it.
public struct PricedRegion: Sendable, Hashable, Encodable {
    public var summary: RegionSummary
    /// How many of its machine types have live prices.
    public var liveOffers: Int
    /// The age of its freshest price.
    public var newestPriceAgeSeconds: Int64?

    enum CodingKeys: String, CodingKey { case liveOffers, newestPriceAgeSeconds }

    public func encode(to encoder: Encoder) throws {
        try summary.encode(to: encoder)
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(liveOffers, forKey: .liveOffers)
        try c.encodeIfPresent(newestPriceAgeSeconds, forKey: .newestPriceAgeSeconds)
    }
}
