import FabricCore

/// Limits of the actor layer, each a named constant with its unit.
public enum ActorLimits {
    /// Longest node name, in UTF-8 bytes.
    public static let nodeNameBytesMax = 64
    /// Longest actor name, in UTF-8 bytes.
    public static let actorNameBytesMax = 256
    /// Largest encoded call or reply envelope, in bytes (NATS' default `max_payload` is 1 MiB).
    public static let messageBytesMax = 1 << 20
    /// Most arguments one distributed call may carry.
    public static let argumentsMax = 64
    /// Most generic substitutions one distributed call may carry.
    public static let genericSubstitutionsMax = 16
    /// Longest target identifier (a mangled function name), in UTF-8 bytes.
    public static let targetBytesMax = 4096
    /// Default deadline of every actor call.
    public static let callTimeoutDefault: Duration = .seconds(5)
    /// Default number of outgoing calls of one actor system that may await a reply at once.
    public static let inFlightCallsMax = 1024
    /// Default number of callers that may wait for an in-flight slot; callers beyond it fail with `.resourceExhausted`.
    public static let queuedCallsMax = 4096
    /// Default number of incoming calls one actor system executes at once; more are refused with `.resourceExhausted`.
    public static let inboundCallsMax = 4096
    /// Most requests one transport tracks at once (its reply table).
    public static let pendingRequestsMax = 65_536
}

/// The identity of a distributed actor: the node that hosts it and its name there, e.g. `weaver-1` + `/system/scheduler`.
///
/// Each actor is reached on its own NATS subject `fabric.actor.<node>.<name>`, where node and name are escaped to
/// single subject tokens (see `subjectToken(_:)`), so any name, slashes included, maps to exactly one subject.
public struct ActorID: Hashable, Sendable, Codable, CustomStringConvertible {
    /// The hosting node's name.
    public var node: String
    /// The actor's name on its node, e.g. `/system/scheduler` or `counter-0k3v9x2m4q8d1`.
    public var name: String

    /// An actor ID; `validate()` checks it.
    public init(node: String, name: String) {
        self.node = node
        self.name = name
    }

    /// The subject prefix every actor subject starts with.
    public static let subjectPrefix = "fabric.actor."

    /// The NATS subject this actor is served on.
    public var subject: String { Self.subjectPrefix + Self.subjectToken(node) + "." + Self.subjectToken(name) }

    public var description: String { "\(node)\(name.hasPrefix("/") ? "" : "/")\(name)" }

    /// Checks node and name against the limits: non-empty, not too long, no control characters.
    public func validate() throws(FabricError) {
        try Self.validate(node: node)
        try Self.validate(name: name, field: "name")
    }

    /// Checks a node name: 1 to `nodeNameBytesMax` bytes without control characters or whitespace.
    public static func validate(node: String) throws(FabricError) {
        try validate(name: node, field: "node", max: ActorLimits.nodeNameBytesMax)
        if node.unicodeScalars.contains(where: { $0.properties.isWhitespace }) {
            throw FabricError.invalid("node", "node name must not contain whitespace: \(node.debugDescription)")
        }
    }

    static func validate(name: String, field: String, max: Int = ActorLimits.actorNameBytesMax) throws(FabricError) {
        if name.isEmpty { throw FabricError.invalid(field, "\(field) must not be empty") }
        if name.utf8.count > max {
            throw FabricError.invalid(field, "\(field) is longer than \(max) bytes")
        }
        if name.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F }) {
            throw FabricError.invalid(field, "\(field) must not contain control characters")
        }
    }

    /// Escapes any string into one NATS subject token, injectively: `A-Z a-z 0-9 - _` stay, every other byte
    /// becomes `%XX` (so `/system/scheduler` is `%2Fsystem%2Fscheduler`).
    public static func subjectToken(_ s: String) -> String {
        var out: [UInt8] = []
        out.reserveCapacity(s.utf8.count)
        let hex = Array("0123456789ABCDEF".utf8)
        for b in s.utf8 {
            switch b {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "_"):
                out.append(b)
            default:
                out.append(UInt8(ascii: "%"))
                out.append(hex[Int(b >> 4)])
                out.append(hex[Int(b & 0xF)])
            }
        }
        return String(decoding: out, as: UTF8.self)
    }
}
