// Retries, backoff, Retry-After, a concurrency bound and request logs around any HTTPTransport (one per provider).
//
//   attempt ─► [permit] inner.send ─► response ─┬─ not retryable / last attempt ─► return it
//                                               ├─ 429/503 + Retry-After ≤ max ─► sleep(Retry-After) ─► attempt
//                                               ├─ 429/503 + Retry-After > max ─► return it (caller maps rateLimited)
//                                               └─ 429/5xx ──────────────────────► sleep(jittered backoff) ─► attempt
//            transport error ─ retryable and attempts left ─► sleep(jittered backoff) ─► attempt, else rethrow
import FabricCore
import FabricLog
import Foundation
import Synchronization

/// How a `RetryingTransport` retries.
///
/// Every request Fabric's drivers send is safe to repeat (reads, deletes of named objects, and creates that carry
/// an idempotency key: ClientToken, requestId), so POSTs are retried like any other method.
public struct RetryPolicy: Sendable {
    /// Attempts in all, the first included.
    public var attemptsMax: Int
    /// The backoff before the second attempt; it doubles per attempt up to `backoffMax`.
    public var backoffBase: Duration
    /// The longest backoff between two attempts.
    public var backoffMax: Duration
    /// The longest Retry-After this transport waits out itself; a longer one ends the retries and the response
    /// goes back to the driver, which reports `rateLimited` with the wait.
    public var retryAfterMax: Duration
    /// Statuses worth another attempt.
    public var retryableStatuses: Set<Int>
    /// Statuses whose Retry-After header is honoured.
    public var retryAfterStatuses: Set<Int>
    /// A driver's own test for responses worth another attempt beyond `retryableStatuses` (GCP's 403
    /// `rateLimitExceeded`), or nil.
    public var isRetryableResponse: (@Sendable (HTTPResponse) -> Bool)?

    /// A policy; the defaults suit cloud control-plane APIs.
    public init(
        attemptsMax: Int = RetryPolicy.attemptsMaxDefault, backoffBase: Duration = .milliseconds(250),
        backoffMax: Duration = .seconds(20), retryAfterMax: Duration = .seconds(60),
        retryableStatuses: Set<Int> = [429, 500, 502, 503, 504], retryAfterStatuses: Set<Int> = [429, 503],
        isRetryableResponse: (@Sendable (HTTPResponse) -> Bool)? = nil
    ) {
        self.attemptsMax = max(1, min(attemptsMax, RetryPolicy.attemptsLimit))
        self.backoffBase = backoffBase
        self.backoffMax = backoffMax
        self.retryAfterMax = retryAfterMax
        self.retryableStatuses = retryableStatuses
        self.retryAfterStatuses = retryAfterStatuses
        self.isRetryableResponse = isRetryableResponse
    }

    /// The attempts a default policy makes.
    public static let attemptsMaxDefault = 5
    /// The most attempts any policy may make.
    public static let attemptsLimit = 20
    /// The policy drivers use unless told otherwise.
    public static let `default` = RetryPolicy()

    /// The backoff before attempt `attempt + 1` (after `attempt` failed, 1-based): "equal jitter", half of the
    /// capped exponential step plus a random part of the other half, so waits never collapse to zero.
    public func backoff(afterAttempt attempt: Int, using random: inout some RandomNumberGenerator) -> Duration {
        let base = Double(backoffBase.components.seconds) + Double(backoffBase.components.attoseconds) / 1e18
        let cap = Double(backoffMax.components.seconds) + Double(backoffMax.components.attoseconds) / 1e18
        let step = min(cap, base * pow(2, Double(max(0, attempt - 1))))
        let seconds = step / 2 + Double.random(in: 0...(step / 2), using: &random)
        return .milliseconds(Int64((seconds * 1000).rounded()))
    }
}

/// Reads `Retry-After`: delay-seconds or an HTTP-date (RFC 9110 §10.2.3).
public enum RetryAfter {
    /// The longest Retry-After read; a larger value is cut to this.
    public static let valueMax = Duration.seconds(86_400)

    /// The wait the header asks for, measured from `now` for a date; nil when absent or unreadable.
    public static func parse(_ value: String?, now: Timestamp) -> Duration? {
        guard let raw = value?.trimmingCharacters(in: .whitespaces), !raw.isEmpty else { return nil }
        if raw.allSatisfy(\.isASCII), raw.allSatisfy(\.isNumber) {
            guard let s = Int64(raw) else { return valueMax }
            return min(.seconds(s), valueMax)
        }
        guard let date = httpDate(raw) else { return nil }
        let ms = Int64((date.timeIntervalSince1970 * 1000).rounded()) - now.millisecondsSinceEpoch
        return min(.milliseconds(max(0, ms)), valueMax)
    }

    /// IMF-fixdate, and the obsolete RFC 850 and asctime forms.
    static func httpDate(_ text: String) -> Date? {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "GMT")
        for format in ["EEE, dd MMM yyyy HH:mm:ss zzz", "EEEE, dd-MMM-yy HH:mm:ss zzz", "EEE MMM d HH:mm:ss yyyy"] {
            formatter.dateFormat = format
            if let d = formatter.date(from: text) { return d }
        }
        return nil
    }
}

/// Wraps a transport with retries (jittered exponential backoff, Retry-After on 429/503, bounded attempts), a
/// bound on concurrent requests, and one log line per attempt with secrets redacted. One per provider.
public final class RetryingTransport: HTTPTransport {
    /// How the transport waits between attempts; tests pass one that records and returns at once.
    public typealias Sleep = @Sendable (Duration) async throws -> Void

    /// Requests one provider may have in flight at once unless told otherwise.
    public static let concurrencyMaxDefault = 8

    /// Sleeps on the continuous clock (production).
    public static let taskSleep: Sleep = { try await Task.sleep(for: $0) }

    let inner: any HTTPTransport
    /// The provider whose requests these are (in log lines).
    public let provider: String
    /// The retry rules.
    public let policy: RetryPolicy
    let semaphore: AsyncSemaphore
    let logger: Logger
    let clock: any WallClock
    let random: Mutex<any RandomNumberGenerator & Sendable>
    let sleep: Sleep

    /// - Parameters:
    ///   - inner: the transport that sends each attempt (`CurlHTTPClient` in production).
    ///   - provider: the provider name for log lines.
    ///   - concurrencyMax: requests in flight at once, across every caller of this transport.
    ///   - clock: the wall clock for HTTP-date Retry-After values.
    ///   - random: the generator for backoff jitter.
    ///   - sleep: how to wait between attempts.
    public init(
        _ inner: any HTTPTransport, provider: String, policy: RetryPolicy = .default,
        concurrencyMax: Int = RetryingTransport.concurrencyMaxDefault, logger: Logger, clock: any WallClock,
        random: some RandomNumberGenerator & Sendable, sleep: @escaping Sleep = RetryingTransport.taskSleep
    ) {
        self.inner = inner
        self.provider = provider
        self.policy = policy
        self.semaphore = AsyncSemaphore(permits: concurrencyMax)
        self.logger = logger
        self.clock = clock
        self.random = Mutex(random)
        self.sleep = sleep
    }

    /// Sends the request, retrying as the policy says; returns the last response (any status) or rethrows the
    /// last transport error.
    public func send(_ request: HTTPRequest) async throws -> HTTPResponse {
        let url = HTTPRedaction.url(request.url)
        var attempt = 0
        while true {
            attempt += 1
            let started = ContinuousClock.now
            let outcome: Result<HTTPResponse, any Error>
            do {
                let response = try await semaphore.withPermit { try await inner.send(request) }
                outcome = .success(response)
            } catch is CancellationError {
                throw CancellationError()
            } catch {
                outcome = .failure(error)
            }
            let elapsed = ContinuousClock.now - started
            let wait = retryDelay(outcome, attempt: attempt)
            log(request, url: url, outcome: outcome, attempt: attempt, elapsed: elapsed, retryIn: wait)
            guard let wait else { return try outcome.get() }
            try await sleep(wait)
        }
    }

    /// How long to wait before the next attempt, or nil when this outcome is final.
    func retryDelay(_ outcome: Result<HTTPResponse, any Error>, attempt: Int) -> Duration? {
        guard attempt < policy.attemptsMax else { return nil }
        switch outcome {
        case .success(let response):
            let retryable =
                policy.retryableStatuses.contains(response.status) || policy.isRetryableResponse?(response) == true
            guard retryable else { return nil }
            if policy.retryAfterStatuses.contains(response.status),
                let asked = RetryAfter.parse(response.header("retry-after"), now: clock.now())
            {
                return asked <= policy.retryAfterMax ? asked : nil
            }
            return jitteredBackoff(attempt)
        case .failure(let error):
            guard let e = error as? HTTPTransportError, e.isRetryable else { return nil }
            return jitteredBackoff(attempt)
        }
    }

    private func jitteredBackoff(_ attempt: Int) -> Duration {
        random.withLock { rng in policy.backoff(afterAttempt: attempt, using: &rng) }
    }

    private func log(
        _ request: HTTPRequest, url: String, outcome: Result<HTTPResponse, any Error>, attempt: Int,
        elapsed: Duration, retryIn: Duration?
    ) {
        let ms = elapsed.components.seconds * 1000 + elapsed.components.attoseconds / 1_000_000_000_000_000
        let result: String
        let level: LogLevel
        var detail = "-"
        switch outcome {
        case .success(let r):
            result = String(r.status)
            level = retryIn != nil ? .warn : (r.status >= 500 ? .warn : .info)
        case .failure(let e):
            result = (e as? HTTPTransportError)?.kind.rawValue ?? "error"
            detail = (e as? HTTPTransportError)?.message ?? String(describing: type(of: e))
            level = .warn
        }
        let retry = retryIn.map { d in
            String(d.components.seconds * 1000 + d.components.attoseconds / 1_000_000_000_000_000)
        }
        if logger.level <= .debug {
            logger.log(
                level, "http",
                [
                    "provider": provider, "method": request.method, "url": url, "result": result, "attempt": attempt,
                    "ms": ms, "retry_in_ms": retry ?? "-", "error": detail,
                    "headers": HTTPRedaction.headers(request.headers, extra: request.secretHeaders),
                ])
        } else {
            logger.log(
                level, "http",
                [
                    "provider": provider, "method": request.method, "url": url, "result": result, "attempt": attempt,
                    "ms": ms, "retry_in_ms": retry ?? "-", "error": detail,
                ])
        }
    }
}
