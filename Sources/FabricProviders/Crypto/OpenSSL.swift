// Hashes, MACs and signatures on OpenSSL 3 (libssl-dev) through the EVP API. Every OpenSSL failure becomes one
// `CryptoError` carrying OpenSSL's own error queue text, in one place (`openSSLError`).
import COpenSSL
import Foundation

/// A cryptographic operation failed (a malformed key, an OpenSSL error).
public struct CryptoError: Error, Sendable, Hashable, CustomStringConvertible {
    public var message: String
    public var file: String
    public var line: Int

    /// An error with a message and the call site.
    public init(_ message: String, file: String = #fileID, line: Int = #line) {
        self.message = message
        self.file = file
        self.line = line
    }

    public var description: String { "crypto: \(message) (\(file):\(line))" }
}

/// Drains OpenSSL's error queue into one `CryptoError` for `what`.
func openSSLError(_ what: String, file: String = #fileID, line: Int = #line) -> CryptoError {
    var reasons: [String] = []
    while true {
        let code = ERR_get_error()
        if code == 0 { break }
        var buffer = [CChar](repeating: 0, count: 256)
        ERR_error_string_n(code, &buffer, buffer.count)
        reasons.append(String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
    }
    let detail = reasons.isEmpty ? "" : ": " + reasons.joined(separator: "; ")
    return CryptoError("\(what) failed\(detail)", file: file, line: line)
}

/// SHA-256, HMAC-SHA256 and RS256 (RSASSA-PKCS1-v1_5 with SHA-256) on OpenSSL, plus hex and base64url.
public enum Crypto {
    /// Keeps OpenSSL's state alive until the process is gone: without this, OpenSSL's exit handler frees its locks
    /// while a provider call still signing on another thread crashes the exiting process. Call once, early.
    public static func keepStateUntilExit() {
        _ = OPENSSL_init_crypto(UInt64(OPENSSL_INIT_NO_ATEXIT), nil)
    }

    /// The SHA-256 digest of `data` (32 bytes).
    public static func sha256(_ data: some DataProtocol) -> [UInt8] {
        let bytes = Array(data)
        var out = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var length: UInt32 = 0
        let ok = bytes.withUnsafeBytes { b in EVP_Digest(b.baseAddress, b.count, &out, &length, EVP_sha256(), nil) }
        precondition(ok == 1, "EVP_Digest(SHA-256) failed: \(openSSLError("sha256"))")
        return Array(out.prefix(Int(length)))
    }

    /// HMAC-SHA256 of `data` under `key` (32 bytes).
    public static func hmacSHA256(key: some DataProtocol, data: some DataProtocol) -> [UInt8] {
        let k = Array(key)
        let d = Array(data)
        var out = [UInt8](repeating: 0, count: 32)
        var length = 0
        let result = k.withUnsafeBytes { kb in
            d.withUnsafeBytes { db in
                EVP_Q_mac(
                    nil, "HMAC", nil, "SHA256", nil, kb.baseAddress, kb.count,
                    db.baseAddress?.assumingMemoryBound(to: UInt8.self), db.count, &out, out.count, &length)
            }
        }
        precondition(result != nil && length == 32, "EVP_Q_mac(HMAC-SHA256) failed: \(openSSLError("hmac"))")
        return out
    }

    /// Lower-case hexadecimal.
    public static func hex(_ bytes: some Sequence<UInt8>) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        for b in bytes {
            out.append(digits[Int(b >> 4)])
            out.append(digits[Int(b & 0x0F)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Base64url without padding (RFC 7515 §2), as JWTs use.
    public static func base64URL(_ data: some DataProtocol) -> String {
        Data(data).base64EncodedString().replacingOccurrences(of: "+", with: "-")
            .replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
    }

    /// Decodes base64url with or without padding; nil when malformed.
    public static func base64URLDecode(_ text: some StringProtocol) -> Data? {
        var s = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while s.count % 4 != 0 { s += "=" }
        return Data(base64Encoded: s)
    }
}

/// An RSA private key read from PEM in memory (PKCS#8 `BEGIN PRIVATE KEY` or PKCS#1 `BEGIN RSA PRIVATE KEY`),
/// used for RS256 signatures (GCP service-account JWTs).
public final class RSAPrivateKey: @unchecked Sendable {
    // EVP_PKEY is reference-counted and safe to use from several threads for signing with separate contexts.
    let pkey: OpaquePointer

    /// The largest PEM accepted, in bytes.
    public static let pemBytesMax = 64 << 10

    /// Reads the key; throws `CryptoError` when the PEM is not an RSA private key.
    public init(pem: String) throws {
        let bytes = Array(pem.utf8)
        guard bytes.count <= Self.pemBytesMax else {
            throw CryptoError("private key PEM is over \(Self.pemBytesMax) bytes")
        }
        ERR_clear_error()
        let key: OpaquePointer? = bytes.withUnsafeBytes { b in
            guard let bio = BIO_new_mem_buf(b.baseAddress, Int32(b.count)) else { return nil }
            defer { BIO_free(bio) }
            return PEM_read_bio_PrivateKey(bio, nil, nil, nil)
        }
        guard let key else { throw openSSLError("reading the private key PEM") }
        guard EVP_PKEY_get_base_id(key) == EVP_PKEY_RSA else {
            EVP_PKEY_free(key)
            throw CryptoError("the private key is not an RSA key")
        }
        pkey = key
    }

    deinit { EVP_PKEY_free(pkey) }

    /// RSASSA-PKCS1-v1_5 with SHA-256 over `data` (JWS `RS256`).
    public func signRS256(_ data: some DataProtocol) throws -> Data {
        ERR_clear_error()
        guard let ctx = EVP_MD_CTX_new() else { throw openSSLError("EVP_MD_CTX_new") }
        defer { EVP_MD_CTX_free(ctx) }
        guard EVP_DigestSignInit(ctx, nil, EVP_sha256(), nil, pkey) == 1 else {
            throw openSSLError("EVP_DigestSignInit")
        }
        let message = Array(data)
        var length = 0
        guard message.withUnsafeBytes({ EVP_DigestSign(ctx, nil, &length, $0.baseAddress, $0.count) }) == 1 else {
            throw openSSLError("EVP_DigestSign (size)")
        }
        var signature = [UInt8](repeating: 0, count: length)
        guard message.withUnsafeBytes({ EVP_DigestSign(ctx, &signature, &length, $0.baseAddress, $0.count) }) == 1
        else { throw openSSLError("EVP_DigestSign") }
        return Data(signature.prefix(length))
    }
}

/// An RSA public key read from PEM (`BEGIN PUBLIC KEY`), for verifying RS256 signatures (the fake GCP token
/// endpoint in tests; a verifier of Fabric's own tokens).
public final class RSAPublicKey: @unchecked Sendable {
    let pkey: OpaquePointer

    /// Reads the key; throws `CryptoError` when the PEM is not an RSA public key.
    public init(pem: String) throws {
        let bytes = Array(pem.utf8)
        ERR_clear_error()
        let key: OpaquePointer? = bytes.withUnsafeBytes { b in
            guard let bio = BIO_new_mem_buf(b.baseAddress, Int32(b.count)) else { return nil }
            defer { BIO_free(bio) }
            return PEM_read_bio_PUBKEY(bio, nil, nil, nil)
        }
        guard let key else { throw openSSLError("reading the public key PEM") }
        guard EVP_PKEY_get_base_id(key) == EVP_PKEY_RSA else {
            EVP_PKEY_free(key)
            throw CryptoError("the public key is not an RSA key")
        }
        pkey = key
    }

    deinit { EVP_PKEY_free(pkey) }

    /// Whether `signature` is a valid RS256 signature of `data` under this key.
    public func verifyRS256(_ signature: some DataProtocol, of data: some DataProtocol) -> Bool {
        guard let ctx = EVP_MD_CTX_new() else { return false }
        defer { EVP_MD_CTX_free(ctx) }
        guard EVP_DigestVerifyInit(ctx, nil, EVP_sha256(), nil, pkey) == 1 else { return false }
        let sig = Array(signature)
        let message = Array(data)
        let ok = sig.withUnsafeBytes { s in
            message.withUnsafeBytes { m in
                EVP_DigestVerify(
                    ctx, s.baseAddress?.assumingMemoryBound(to: UInt8.self), s.count,
                    m.baseAddress?.assumingMemoryBound(to: UInt8.self), m.count)
            }
        }
        ERR_clear_error()
        return ok == 1
    }
}

/// Makes RSA keys in memory (tests make a throwaway service-account key with it).
public enum RSAKeyGenerator {
    /// A new RSA key pair of `bits` bits as PEM: PKCS#8 private key and SubjectPublicKeyInfo public key.
    public static func generate(bits: Int = 2048) throws -> (privatePEM: String, publicPEM: String) {
        ERR_clear_error()
        guard let ctx = EVP_PKEY_CTX_new_id(EVP_PKEY_RSA, nil) else { throw openSSLError("EVP_PKEY_CTX_new_id") }
        defer { EVP_PKEY_CTX_free(ctx) }
        guard EVP_PKEY_keygen_init(ctx) == 1, EVP_PKEY_CTX_set_rsa_keygen_bits(ctx, Int32(bits)) == 1 else {
            throw openSSLError("RSA keygen setup")
        }
        var key: OpaquePointer?
        guard EVP_PKEY_keygen(ctx, &key) == 1, let key else { throw openSSLError("EVP_PKEY_keygen") }
        defer { EVP_PKEY_free(key) }
        func pem(_ write: (OpaquePointer) -> Int32) throws -> String {
            guard let bio = BIO_new(BIO_s_mem()) else { throw openSSLError("BIO_new") }
            defer { BIO_free(bio) }
            guard write(bio) == 1 else { throw openSSLError("PEM write") }
            var pointer: UnsafeMutablePointer<CChar>?
            let length = BIO_ctrl(bio, BIO_CTRL_INFO, 0, &pointer)
            guard let pointer, length > 0 else { throw openSSLError("BIO read") }
            return String(decoding: UnsafeRawBufferPointer(start: pointer, count: length), as: UTF8.self)
        }
        let privatePEM = try pem { PEM_write_bio_PrivateKey($0, key, nil, nil, 0, nil, nil) }
        let publicPEM = try pem { PEM_write_bio_PUBKEY($0, key) }
        return (privatePEM, publicPEM)
    }
}
