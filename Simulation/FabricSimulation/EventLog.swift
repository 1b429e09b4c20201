import COpenSSL

/// The run's event log: one text line per event, hashed with SHA-256 as it is written (OpenSSL's EVP API).
///
/// The same seed gives the same lines and so the same `event-log sha256=<hex>`; lines are kept in memory only
/// when asked (`keepLines`), so long runs hash millions of lines without holding them.
public final class EventLog {
    private let ctx: OpaquePointer
    public private(set) var lineCount = 0
    /// The lines written, when `keepLines` was set (tests, `--log`).
    public private(set) var lines: [String] = []
    private let keepLines: Bool
    private var finished: String? = nil

    public init(keepLines: Bool = false) {
        self.keepLines = keepLines
        guard let c = EVP_MD_CTX_new() else { preconditionFailure("EVP_MD_CTX_new failed") }
        ctx = c
        guard EVP_DigestInit_ex(ctx, EVP_sha256(), nil) == 1 else { preconditionFailure("EVP_DigestInit_ex failed") }
    }

    deinit { EVP_MD_CTX_free(ctx) }

    /// Appends one line (a newline is added).
    public func write(_ line: String) {
        precondition(finished == nil, "event log already finished")
        var l = line
        l.append("\n")
        l.withUTF8 { buf in
            _ = EVP_DigestUpdate(ctx, buf.baseAddress, buf.count)
        }
        lineCount += 1
        if keepLines { lines.append(line) }
    }

    /// The SHA-256 of every line written, in lower-case hex. Ends the log.
    public func sha256Hex() -> String {
        if let finished { return finished }
        var digest = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var length: UInt32 = 0
        guard EVP_DigestFinal_ex(ctx, &digest, &length) == 1 else { preconditionFailure("EVP_DigestFinal_ex failed") }
        let hex = digest.prefix(Int(length)).map { b in
            let s = String(b, radix: 16)
            return b < 16 ? "0" + s : s
        }.joined()
        finished = hex
        return hex
    }

    /// SHA-256 of `text` in lower-case hex (for tests of the hashing itself).
    public static func sha256Hex(of text: String) -> String {
        var t = text
        return t.withUTF8 { buf in
            var digest = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
            var length: UInt32 = 0
            _ = EVP_Digest(buf.baseAddress, buf.count, &digest, &length, EVP_sha256(), nil)
            return digest.prefix(Int(length)).map { b in (b < 16 ? "0" : "") + String(b, radix: 16) }.joined()
        }
    }
}
