import FabricCore

/// A distributed call on the wire: who is called, which method, with which encoded arguments.
public struct CallEnvelope: Sendable, Equatable, Codable {
    /// The caller's ID for this call (unique per calling system; echoed in the reply).
    public var callID: UInt64
    /// The actor being called.
    public var recipient: ActorID
    /// The target identifier (the mangled name of the distributed method).
    public var target: String
    /// Mangled names of the generic substitutions (e.g. the actor system of a generic actor).
    public var genericSubstitutions: [String]
    /// Each argument, encoded with the argument codec (JSON).
    public var arguments: [[UInt8]]
    /// What is left of the caller's deadline when the call was sent, in milliseconds.
    public var timeoutMilliseconds: UInt32

    /// A call envelope from its parts.
    public init(
        callID: UInt64, recipient: ActorID, target: String, genericSubstitutions: [String], arguments: [[UInt8]],
        timeoutMilliseconds: UInt32
    ) {
        self.callID = callID
        self.recipient = recipient
        self.target = target
        self.genericSubstitutions = genericSubstitutions
        self.arguments = arguments
        self.timeoutMilliseconds = timeoutMilliseconds
    }
}

/// The answer to one call: the encoded value, nothing (a `Void` method), or a typed error.
public struct ReplyEnvelope: Sendable, Equatable, Codable {
    /// The ways a call can end.
    public enum Outcome: Sendable, Equatable, Codable {
        case value([UInt8])
        case void
        case error(RemoteError)
    }

    /// The call this answers.
    public var callID: UInt64
    /// How the call ended.
    public var outcome: Outcome

    /// A reply envelope from its parts.
    public init(callID: UInt64, outcome: Outcome) {
        self.callID = callID
        self.outcome = outcome
    }
}

/// The one Codable wire message: a call or a reply.
public enum WireMessage: Sendable, Equatable, Codable {
    case call(CallEnvelope)
    case reply(ReplyEnvelope)
}

/// The compact binary encoding of `WireMessage` used on every transport.
///
/// ```
/// message  = magic 'F' (u8), version (u8), kind (u8: 1 call, 2 reply), body
/// call     = callID u64, timeoutMs u32, node str, name str, target str, n u16, n * str, m u16, m * bytes
/// reply    = callID u64, outcome u8 (0 void, 1 value, 2 error), value bytes | error
/// error    = kind u8, code str, message str, hasField u8, [field str], type str, file str, line u32
/// str/bytes = length u32 (big endian), then the bytes
/// ```
/// Arguments and values inside are JSON (see `ArgumentCodec`); the frame itself is binary so that a call carries no
/// base64 or escaping overhead.
public enum WireCodec {
    static let magic: UInt8 = 0x46
    static let version: UInt8 = 1
    static let kindCall: UInt8 = 1
    static let kindReply: UInt8 = 2

    /// Encodes a wire message.
    public static func encode(_ message: WireMessage) -> [UInt8] {
        var w = Writer()
        w.u8(magic)
        w.u8(version)
        switch message {
        case .call(let c):
            w.u8(kindCall)
            w.u64(c.callID)
            w.u32(c.timeoutMilliseconds)
            w.string(c.recipient.node)
            w.string(c.recipient.name)
            w.string(c.target)
            w.u16(UInt16(truncatingIfNeeded: c.genericSubstitutions.count))
            for g in c.genericSubstitutions { w.string(g) }
            w.u16(UInt16(truncatingIfNeeded: c.arguments.count))
            for a in c.arguments { w.bytes(a) }
        case .reply(let r):
            w.u8(kindReply)
            w.u64(r.callID)
            switch r.outcome {
            case .void:
                w.u8(0)
            case .value(let v):
                w.u8(1)
                w.bytes(v)
            case .error(let e):
                w.u8(2)
                w.u8(e.kind.rawValue)
                w.string(e.code)
                w.string(e.message)
                if let f = e.field {
                    w.u8(1)
                    w.string(f)
                } else {
                    w.u8(0)
                }
                w.string(e.type)
                w.string(e.file)
                w.u32(UInt32(truncatingIfNeeded: max(0, e.line)))
            }
        }
        return w.out
    }

    /// Decodes a wire message, checking every length against the buffer and the limits.
    public static func decode(_ bytes: [UInt8]) throws(ActorCallError) -> WireMessage {
        var r = Reader(bytes)
        guard try r.u8() == magic else { throw ActorCallError(.serialization, "not a Fabric actor message") }
        let v = try r.u8()
        guard v == version else { throw ActorCallError(.serialization, "unsupported wire version \(v)") }
        switch try r.u8() {
        case kindCall:
            let callID = try r.u64()
            let timeout = try r.u32()
            let node = try r.string()
            let name = try r.string()
            let target = try r.string()
            let gCount = Int(try r.u16())
            guard gCount <= ActorLimits.genericSubstitutionsMax else {
                throw ActorCallError(.serialization, "too many generic substitutions: \(gCount)")
            }
            var generics: [String] = []
            for _ in 0..<gCount { generics.append(try r.string()) }
            let aCount = Int(try r.u16())
            guard aCount <= ActorLimits.argumentsMax else {
                throw ActorCallError(.serialization, "too many arguments: \(aCount)")
            }
            var args: [[UInt8]] = []
            args.reserveCapacity(aCount)
            for _ in 0..<aCount { args.append(try r.bytes()) }
            try r.end()
            return .call(
                CallEnvelope(
                    callID: callID, recipient: ActorID(node: node, name: name), target: target,
                    genericSubstitutions: generics, arguments: args, timeoutMilliseconds: timeout))
        case kindReply:
            let callID = try r.u64()
            let outcome: ReplyEnvelope.Outcome
            switch try r.u8() {
            case 0: outcome = .void
            case 1: outcome = .value(try r.bytes())
            case 2:
                guard let kind = RemoteError.Kind(rawValue: try r.u8()) else {
                    throw ActorCallError(.serialization, "unknown remote error kind")
                }
                let code = try r.string()
                let message = try r.string()
                let field: String? = try r.u8() == 1 ? try r.string() : nil
                let type = try r.string()
                let file = try r.string()
                let line = Int(try r.u32())
                outcome = .error(
                    RemoteError(
                        kind: kind, code: code, message: message, field: field, type: type, file: file, line: line))
            default:
                throw ActorCallError(.serialization, "unknown reply outcome")
            }
            try r.end()
            return .reply(ReplyEnvelope(callID: callID, outcome: outcome))
        default:
            throw ActorCallError(.serialization, "unknown message kind")
        }
    }

    struct Writer {
        var out: [UInt8] = []

        init() { out.reserveCapacity(128) }

        mutating func u8(_ v: UInt8) { out.append(v) }
        mutating func u16(_ v: UInt16) { withUnsafeBytes(of: v.bigEndian) { out.append(contentsOf: $0) } }
        mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.bigEndian) { out.append(contentsOf: $0) } }
        mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.bigEndian) { out.append(contentsOf: $0) } }
        mutating func bytes(_ b: [UInt8]) {
            u32(UInt32(truncatingIfNeeded: b.count))
            out.append(contentsOf: b)
        }
        mutating func string(_ s: String) {
            u32(UInt32(truncatingIfNeeded: s.utf8.count))
            out.append(contentsOf: s.utf8)
        }
    }

    struct Reader {
        let buf: [UInt8]
        var pos = 0

        init(_ buf: [UInt8]) { self.buf = buf }

        mutating func take(_ n: Int) throws(ActorCallError) -> ArraySlice<UInt8> {
            guard n >= 0, buf.count - pos >= n else { throw ActorCallError(.serialization, "truncated message") }
            defer { pos += n }
            return buf[pos..<(pos + n)]
        }
        mutating func int<T: FixedWidthInteger>(_: T.Type) throws(ActorCallError) -> T {
            var v: T = 0
            for b in try take(MemoryLayout<T>.size) { v = v << 8 | T(b) }
            return v
        }
        mutating func u8() throws(ActorCallError) -> UInt8 { try int(UInt8.self) }
        mutating func u16() throws(ActorCallError) -> UInt16 { try int(UInt16.self) }
        mutating func u32() throws(ActorCallError) -> UInt32 { try int(UInt32.self) }
        mutating func u64() throws(ActorCallError) -> UInt64 { try int(UInt64.self) }
        mutating func bytes() throws(ActorCallError) -> [UInt8] { Array(try take(Int(try u32()))) }
        mutating func string() throws(ActorCallError) -> String {
            String(decoding: try take(Int(try u32())), as: UTF8.self)
        }
        func end() throws(ActorCallError) {
            guard pos == buf.count else { throw ActorCallError(.serialization, "trailing bytes after message") }
        }
    }
}
