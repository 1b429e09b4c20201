// SigV4 against the official AWS signature test suite (provider-apis.md §4.2: aws-sdk-js-v3 suite.fixture.ts,
// the same cases as awslabs/aws-c-auth tests/aws-signing-test-suite/v4), and the OpenSSL primitives under it.
import FabricCore
import Foundation
import Testing

@testable import FabricProviders

/// One case of the suite: the request as sent and what the signature must be.
struct SigV4Vector: Sendable, CustomTestStringConvertible {
    var name: String
    var method: String
    var pathAndQuery: String
    var headers: [(name: String, value: String)] = []
    var body: String = ""
    var signedHeaders: String
    var signature: String

    var testDescription: String { name }
}

/// Every case listed in provider-apis.md §4.2. All use the suite's key, secret, time, region, service and host.
let sigV4Vectors: [SigV4Vector] = [
    SigV4Vector(
        name: "get-vanilla", method: "GET", pathAndQuery: "/", signedHeaders: "host;x-amz-date",
        signature: "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"),
    SigV4Vector(
        name: "get-vanilla-query-order-key-case", method: "GET", pathAndQuery: "/?Param2=value2&Param1=value1",
        signedHeaders: "host;x-amz-date",
        signature: "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"),
    SigV4Vector(
        name: "get-vanilla-empty-query-key", method: "GET", pathAndQuery: "/?Param1=value1",
        signedHeaders: "host;x-amz-date",
        signature: "a67d582fa61cc504c4bae71f336f98b97f1ea3c7a6bfe1b6e45aec72011b9aeb"),
    SigV4Vector(
        name: "get-unreserved", method: "GET",
        pathAndQuery: "/-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
        signedHeaders: "host;x-amz-date",
        signature: "07ef7494c76fa4850883e2b006601f940f8a34d404d0cfa977f52a65bbf5f24f"),
    SigV4Vector(
        name: "get-utf8", method: "GET", pathAndQuery: "/ሴ", signedHeaders: "host;x-amz-date",
        signature: "8318018e0b0f223aa2bbf98705b62bb787dc9c0e678f255a891fd03141be5d85"),
    SigV4Vector(
        name: "get-header-value-trim", method: "GET", pathAndQuery: "/",
        headers: [("My-Header1", "value1"), ("My-Header2", "\"a   b   c\"")],
        signedHeaders: "host;my-header1;my-header2;x-amz-date",
        signature: "acc3ed3afb60bb290fc8d2dd0098b9911fcaa05412b367055dee359757a9c736"),
    SigV4Vector(
        name: "post-vanilla", method: "POST", pathAndQuery: "/", signedHeaders: "host;x-amz-date",
        signature: "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"),
    SigV4Vector(
        name: "post-vanilla-query", method: "POST", pathAndQuery: "/?Param1=value1", signedHeaders: "host;x-amz-date",
        signature: "28038455d6de14eafc1f9222cf5aa6f1a96197d7deb8263271d420d138af7f11"),
    SigV4Vector(
        name: "post-x-www-form-urlencoded", method: "POST", pathAndQuery: "/",
        headers: [("Content-Type", "application/x-www-form-urlencoded")], body: "Param1=value1",
        signedHeaders: "content-type;host;x-amz-date",
        signature: "ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a"),
    SigV4Vector(
        name: "post-x-www-form-urlencoded-parameters", method: "POST", pathAndQuery: "/",
        headers: [("Content-Type", "application/x-www-form-urlencoded; charset=utf8")], body: "Param1=value1",
        signedHeaders: "content-type;host;x-amz-date",
        signature: "1a72ec8f64bd914b0e42e42607c7fbce7fb2c7465f63e3092b3b0d39fa77a6fe"),
]

/// The suite's fixed inputs.
enum SigV4Suite {
    static let credentials = AWSCredentials(
        accessKeyID: "AKIDEXAMPLE", secretAccessKey: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
    static let signer = SigV4Signer(credentials: credentials, region: "us-east-1", service: "service")
    /// 2015-08-30T12:36:00Z.
    static let time = Timestamp(millisecondsSinceEpoch: 1_440_938_160_000)
    static let host = "example.amazonaws.com"
}

@Suite("SigV4")
struct SigV4Tests {
    @Test("the official test-suite vectors", arguments: sigV4Vectors)
    func vector(_ v: SigV4Vector) {
        let request = HTTPRequest(
            method: v.method, url: "https://\(SigV4Suite.host)\(v.pathAndQuery)", headers: v.headers,
            body: Data(v.body.utf8))
        let signed = SigV4Suite.signer.sign(request, at: SigV4Suite.time)
        #expect(signed.header("x-amz-date") == "20150830T123600Z")
        #expect(signed.header("host") == SigV4Suite.host)
        #expect(
            signed.header("authorization")
                == "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
                + "SignedHeaders=\(v.signedHeaders), Signature=\(v.signature)")
    }

    @Test("get-vanilla step by step: canonical request, its hash, string to sign")
    func getVanillaIntermediates() {
        let canonical = SigV4Signer.canonicalRequest(
            method: "GET", path: "/", query: "",
            headers: [("Host", SigV4Suite.host), ("X-Amz-Date", "20150830T123600Z")],
            payloadHash: Crypto.hex(Crypto.sha256(Data())))
        #expect(
            canonical.text
                == "GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\n"
                + "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        #expect(canonical.signedHeaders == "host;x-amz-date")
        #expect(
            Crypto.hex(Crypto.sha256(Data(canonical.text.utf8)))
                == "bb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63")
        #expect(
            SigV4Suite.signer.stringToSign(canonicalRequest: canonical.text, amzDate: "20150830T123600Z")
                == "AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/service/aws4_request\n"
                + "bb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63")
        #expect(
            SigV4Suite.signer.signature(canonicalRequest: canonical.text, amzDate: "20150830T123600Z")
                == "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31")
    }

    @Test("canonical forms: sorted query, trimmed headers, encoded UTF-8 path")
    func canonicalParts() {
        #expect(SigV4Signer.canonicalQuery("Param2=value2&Param1=value1") == "Param1=value1&Param2=value2")
        #expect(SigV4Signer.canonicalQuery("b=2&a=x%20y&a=a") == "a=a&a=x%20y&b=2")
        #expect(SigV4Signer.canonicalURI("/ሴ") == "/%E1%88%B4")
        #expect(SigV4Signer.canonicalURI("/a/./b/../c") == "/a/c")
        #expect(SigV4Signer.collapseSpaces("  \"a   b   c\" ") == "\"a b c\"")
        #expect(SigV4Signer.amzDate(SigV4Suite.time) == "20150830T123600Z")
    }

    @Test("session credentials add a signed X-Amz-Security-Token, redacted from logs; re-signing replaces old headers")
    func sessionToken() {
        let signer = SigV4Signer(
            credentials: AWSCredentials(accessKeyID: "AKID", secretAccessKey: "s", sessionToken: "TOKEN"),
            region: "eu-west-1", service: "ec2")
        let request = HTTPRequest(method: "POST", url: "http://127.0.0.1:5000/", body: Data("Action=X".utf8))
        let once = signer.sign(request, at: SigV4Suite.time)
        #expect(once.header("host") == "127.0.0.1:5000")
        #expect(once.header("x-amz-security-token") == "TOKEN")
        #expect(once.header("authorization")?.contains("SignedHeaders=host;x-amz-date;x-amz-security-token,") == true)
        #expect(once.secretHeaders.contains("x-amz-security-token"))
        let twice = signer.sign(once, at: SigV4Suite.time.adding(.seconds(1)))
        #expect(twice.headers.filter { $0.name.lowercased() == "authorization" }.count == 1)
        #expect(twice.header("x-amz-date") == "20150830T123601Z")
    }
}

@Suite("OpenSSL primitives")
struct CryptoTests {
    @Test("SHA-256 and HMAC-SHA256 known answers (FIPS 180-2, RFC 4231 case 2)")
    func knownAnswers() {
        #expect(Crypto.hex(Crypto.sha256(Data())) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        #expect(
            Crypto.hex(Crypto.sha256(Data("abc".utf8)))
                == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(
            Crypto.hex(Crypto.hmacSHA256(key: Data("Jefe".utf8), data: Data("what do ya want for nothing?".utf8)))
                == "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
    }

    @Test("base64url round trip without padding")
    func base64URL() {
        let bytes = Data([0xfb, 0xff, 0xfe, 0x00, 0x01])
        #expect(Crypto.base64URL(bytes) == "-__-AAE")
        #expect(Crypto.base64URLDecode("-__-AAE") == bytes)
    }

    @Test("RS256: a generated PKCS#8 key signs, its public key verifies, a changed message or key does not")
    func rs256() throws {
        let pair = try RSAKeyGenerator.generate(bits: 2048)
        #expect(pair.privatePEM.hasPrefix("-----BEGIN PRIVATE KEY-----"))
        #expect(pair.publicPEM.hasPrefix("-----BEGIN PUBLIC KEY-----"))
        let key = try RSAPrivateKey(pem: pair.privatePEM)
        let message = Data("header.claims".utf8)
        let signature = try key.signRS256(message)
        #expect(signature.count == 256)
        #expect(try key.signRS256(message) == signature)  // PKCS#1 v1.5 is deterministic
        let publicKey = try RSAPublicKey(pem: pair.publicPEM)
        #expect(publicKey.verifyRS256(signature, of: message))
        #expect(!publicKey.verifyRS256(signature, of: Data("header.claimz".utf8)))
        let other = try RSAPublicKey(pem: try RSAKeyGenerator.generate(bits: 2048).publicPEM)
        #expect(!other.verifyRS256(signature, of: message))
    }

    @Test("a PEM that is not an RSA private key is a CryptoError naming OpenSSL's reason")
    func badKey() {
        #expect(throws: CryptoError.self) {
            try RSAPrivateKey(pem: "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
        }
        #expect(throws: CryptoError.self) { try RSAPrivateKey(pem: "not a key") }
    }
}
