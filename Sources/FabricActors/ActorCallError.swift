import FabricCore

/// Why a distributed actor call failed: a code, a message and the call site (where it was raised, possibly remotely).
///
/// Errors thrown by the remote method itself arrive as they were thrown when they are `FabricError`s or
/// `ActorCallError`s; any other error arrives as `.remote` with the remote type name in the message.
public struct ActorCallError: Error, Sendable, Equatable, CustomStringConvertible {
    /// A stable, machine-readable reason.
    public enum Code: String, Sendable, Codable, CaseIterable {
        /// The call's deadline passed before a reply came back.
        case deadlineExceeded = "deadline_exceeded"
        /// Nobody serves the recipient's subject (no such node or actor).
        case noResponders = "no_responders"
        /// The recipient's node serves calls but hosts no live actor with that name.
        case actorNotFound = "actor_not_found"
        /// Too many calls are in flight or queued (caller side), or executing (recipient side).
        case resourceExhausted = "resource_exhausted"
        /// The transport is closed or reconnecting, or the recipient's actor system shut down mid-call.
        case unavailable = "unavailable"
        /// Arguments, result or envelope could not be encoded or decoded.
        case serialization = "serialization"
        /// The encoded call or reply is larger than `ActorLimits.messageBytesMax`.
        case payloadTooLarge = "payload_too_large"
        /// The recipient does not know the target (a different build of the actor).
        case unknownTarget = "unknown_target"
        /// The remote method threw an error that is neither a `FabricError` nor an `ActorCallError`.
        case remote = "remote"
    }

    /// Why the call failed.
    public var code: Code
    /// What happened, for people.
    public var message: String
    /// The file where the error was raised (remote errors keep the remote file).
    public var file: String
    /// The line where the error was raised.
    public var line: Int

    /// An actor call error raised here.
    public init(_ code: Code, _ message: String, file: String = #fileID, line: Int = #line) {
        self.code = code
        self.message = message
        self.file = file
        self.line = line
    }

    /// Equality ignores the call site.
    public static func == (a: ActorCallError, b: ActorCallError) -> Bool { a.code == b.code && a.message == b.message }

    public var description: String { "\(code.rawValue): \(message) (at \(file):\(line))" }

    /// The same failure as Fabric's one error shape (for HTTP and logs).
    public var fabricError: FabricError {
        let c: FabricError.Code =
            switch code {
            case .deadlineExceeded, .noResponders, .unavailable: .unavailable
            case .actorNotFound: .notFound
            case .resourceExhausted: .resourceExhausted
            case .payloadTooLarge: .payloadTooLarge
            case .serialization, .unknownTarget, .remote: .internalError
            }
        return FabricError(c, "actor call failed: \(code.rawValue): \(message)", file: file, line: line)
    }
}

/// An error as it crosses the wire: which family it belongs to, its code, message, field and origin.
public struct RemoteError: Sendable, Equatable, Codable {
    /// The family of the original error, which decides the type it is rebuilt as.
    public enum Kind: UInt8, Sendable, Codable {
        case fabric = 1
        case actorCall = 2
        case other = 3
    }

    /// Which type to rebuild.
    public var kind: Kind
    /// The original error's code (`FabricError.Code` or `ActorCallError.Code` raw value).
    public var code: String
    /// The original error's message.
    public var message: String
    /// The field a `FabricError` concerns.
    public var field: String?
    /// The Swift type name of the original error.
    public var type: String
    /// Where the original error was raised.
    public var file: String
    /// The line where the original error was raised.
    public var line: Int

    /// A wire error from its parts.
    public init(
        kind: Kind, code: String, message: String, field: String? = nil, type: String, file: String, line: Int
    ) {
        self.kind = kind
        self.code = code
        self.message = message
        self.field = field
        self.type = type
        self.file = file
        self.line = line
    }

    /// Captures any error for the wire.
    public init(_ error: any Error) {
        switch error {
        case let e as FabricError:
            self.init(
                kind: .fabric, code: e.code.rawValue, message: e.message, field: e.field, type: "FabricError",
                file: e.file, line: e.line)
        case let e as ActorCallError:
            self.init(
                kind: .actorCall, code: e.code.rawValue, message: e.message, type: "ActorCallError", file: e.file,
                line: e.line)
        default:
            self.init(
                kind: .other, code: ActorCallError.Code.remote.rawValue, message: String(describing: error),
                type: String(reflecting: Swift.type(of: error)), file: "", line: 0)
        }
    }

    /// The error to throw at the caller: a `FabricError` or `ActorCallError` as thrown, else `ActorCallError(.remote)`.
    public var rebuilt: any Error {
        switch kind {
        case .fabric:
            let c = FabricError.Code(rawValue: code) ?? .internalError
            return FabricError(c, message, field: field, file: file, line: line)
        case .actorCall:
            let c = ActorCallError.Code(rawValue: code) ?? .remote
            return ActorCallError(c, message, file: file, line: line)
        case .other:
            return ActorCallError(.remote, "\(type): \(message)", file: file, line: line)
        }
    }
}
