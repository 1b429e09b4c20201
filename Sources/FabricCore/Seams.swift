import Synchronization

/// Wall-clock time as milliseconds since the Unix epoch. Fabric stores and compares timestamps in this unit.
public struct Timestamp: Sendable, Hashable, Comparable, Codable, CustomStringConvertible {
    public var millisecondsSinceEpoch: Int64

    public init(millisecondsSinceEpoch: Int64) { self.millisecondsSinceEpoch = millisecondsSinceEpoch }

    public static func < (a: Timestamp, b: Timestamp) -> Bool { a.millisecondsSinceEpoch < b.millisecondsSinceEpoch }

    /// This timestamp moved by `d` (sub-millisecond parts are dropped).
    public func adding(_ d: Duration) -> Timestamp {
        let (s, atto) = d.components
        return Timestamp(millisecondsSinceEpoch: millisecondsSinceEpoch + s * 1000 + atto / 1_000_000_000_000_000)
    }

    /// The duration from `earlier` to this timestamp.
    public func since(_ earlier: Timestamp) -> Duration {
        .milliseconds(millisecondsSinceEpoch - earlier.millisecondsSinceEpoch)
    }

    /// RFC 3339 in UTC with milliseconds, e.g. `2026-12-03T18:28:58.123Z`.
    public var rfc3339: String { RFC3339.format(millisecondsSinceEpoch) }
    public var description: String { rfc3339 }

    public init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        if let ms = try? c.decode(Int64.self) {
            self.millisecondsSinceEpoch = ms
            return
        }
        let s = try c.decode(String.self)
        guard let ms = RFC3339.parse(s) else {
            throw DecodingError.dataCorruptedError(in: c, debugDescription: "not an RFC 3339 UTC timestamp: \(s)")
        }
        self.millisecondsSinceEpoch = ms
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(rfc3339)
    }
}

/// Formats and parses RFC 3339 UTC timestamps without Foundation (pure, allocation-light).
public enum RFC3339 {
    public static func format(_ ms: Int64) -> String {
        var days = ms >= 0 ? ms / 86_400_000 : (ms - 86_399_999) / 86_400_000
        let msOfDay = ms - days * 86_400_000
        // Civil-from-days (Howard Hinnant).
        days += 719_468
        let era = (days >= 0 ? days : days - 146_096) / 146_097
        let doe = days - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365
        var y = yoe + era * 400
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let d = doy - (153 * mp + 2) / 5 + 1
        let m = mp < 10 ? mp + 3 : mp - 9
        if m <= 2 { y += 1 }
        let h = msOfDay / 3_600_000
        let mi = (msOfDay / 60_000) % 60
        let s = (msOfDay / 1000) % 60
        let milli = msOfDay % 1000
        func p(_ v: Int64, _ w: Int) -> String {
            let s = String(v)
            return s.count >= w ? s : String(repeating: "0", count: w - s.count) + s
        }
        return "\(p(y, 4))-\(p(m, 2))-\(p(d, 2))T\(p(h, 2)):\(p(mi, 2)):\(p(s, 2)).\(p(milli, 3))Z"
    }

    /// Parses `YYYY-MM-DDTHH:MM:SS[.fff]Z` (UTC only). Returns nil on anything else.
    public static func parse(_ s: String) -> Int64? {
        let u = Array(s.utf8)
        guard u.count >= 20, u.last == UInt8(ascii: "Z") else { return nil }
        func num(_ a: Int, _ n: Int) -> Int64? {
            var v: Int64 = 0
            for i in a..<(a + n) {
                guard i < u.count, u[i] >= 48, u[i] <= 57 else { return nil }
                v = v * 10 + Int64(u[i] - 48)
            }
            return v
        }
        guard let y = num(0, 4), let m = num(5, 2), let d = num(8, 2), let h = num(11, 2), let mi = num(14, 2),
            let sec = num(17, 2), (1...12).contains(m), (1...31).contains(d), h < 24, mi < 60, sec < 61
        else { return nil }
        let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)
        let monthDays: [Int64] = [31, leap ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]
        guard d <= monthDays[Int(m - 1)] else { return nil }
        var milli: Int64 = 0
        if u.count > 20 {
            guard u[19] == UInt8(ascii: "."), u.count >= 22 else { return nil }
            let digits = u.count - 21
            guard let f = num(20, digits) else { return nil }
            milli = f
            var n = digits
            while n > 3 {
                milli /= 10
                n -= 1
            }
            while n < 3 {
                milli *= 10
                n += 1
            }
        }
        let yy = m <= 2 ? y - 1 : y
        let era = (yy >= 0 ? yy : yy - 399) / 400
        let yoe = yy - era * 400
        let mp = m > 2 ? m - 3 : m + 9
        let doy = (153 * mp + 2) / 5 + d - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        let days = era * 146_097 + doe - 719_468
        return days * 86_400_000 + h * 3_600_000 + mi * 60_000 + sec * 1000 + milli
    }
}

/// The wall-clock seam: production reads the system clock, tests and the simulator own a manual one.
public protocol WallClock: Sendable {
    func now() -> Timestamp
}

/// A clock whose time only moves when told to (tests, simulation).
public final class ManualClock: WallClock {
    private let current: Mutex<Int64>

    public init(_ start: Timestamp = Timestamp(millisecondsSinceEpoch: 1_800_000_000_000)) {
        current = Mutex(start.millisecondsSinceEpoch)
    }

    public func now() -> Timestamp { Timestamp(millisecondsSinceEpoch: current.withLock { $0 }) }

    public func advance(by d: Duration) {
        let ms = Timestamp(millisecondsSinceEpoch: 0).adding(d).millisecondsSinceEpoch
        current.withLock { $0 += ms }
    }
}

/// The sleeping seam: every wait and every elapsed-time measure of a component goes through one of these.
/// Production sleeps on the system's continuous clock; the simulator hands in its virtual clock, so that a wait of
/// an hour takes no wall time and the same seed gives the same interleaving.
public struct TaskClock: Sendable {
    let elapsedSinceStart: @Sendable () -> Duration
    let sleepFor: @Sendable (Duration) async throws -> Void

    /// A task clock reading `clock` (production: `ContinuousClock()`; tests and simulation: their own).
    public init<C: Clock>(_ clock: C) where C.Duration == Duration {
        let origin = clock.now
        elapsedSinceStart = { origin.duration(to: clock.now) }
        sleepFor = { d in try await clock.sleep(until: clock.now.advanced(by: d), tolerance: nil) }
    }

    /// Time since this task clock was made.
    public func elapsed() -> Duration { elapsedSinceStart() }

    /// Sleeps for `duration` (throws `CancellationError` when the task is cancelled).
    public func sleep(for duration: Duration) async throws { try await sleepFor(duration) }

    /// The system's continuous clock.
    public static let continuous = TaskClock(ContinuousClock())
}

/// The ID seam: every new ID of a component comes from one of these.
public protocol IDGenerator: Sendable {
    /// A new unique ID with the given prefix, e.g. `wl-3k9x2m4q8d1f`.
    func next(prefix: String) -> String
}

/// IDs drawn from a seeded SplitMix64 stream: the same seed gives the same IDs (tests, simulation).
/// Production seeds it from the system's entropy once at start.
public final class SeededIDGenerator: IDGenerator {
    private let rng: Mutex<SplitMix64>

    public init(seed: UInt64) { rng = Mutex(SplitMix64(seed: seed)) }

    public func next(prefix: String) -> String {
        let v = rng.withLock { $0.next() }
        return prefix + "-" + Base32.encode(v, digits: 13)
    }
}

/// Lower-case Crockford base32 (no i, l, o, u): short, URL-safe and DNS-label-safe IDs.
public enum Base32 {
    static let alphabet = Array("0123456789abcdefghjkmnpqrstvwxyz".utf8)

    public static func encode(_ value: UInt64, digits: Int) -> String {
        var v = value
        var out = [UInt8](repeating: 0, count: digits)
        for i in stride(from: digits - 1, through: 0, by: -1) {
            out[i] = alphabet[Int(v & 31)]
            v >>= 5
        }
        return String(decoding: out, as: UTF8.self)
    }
}

/// SplitMix64: a tiny, fast, seedable generator (the seam for all randomness in pure code).
public struct SplitMix64: RandomNumberGenerator, Sendable {
    private var state: UInt64

    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
