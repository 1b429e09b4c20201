import Distributed
import FabricCore
import Foundation

/// The codec for arguments and results inside an envelope: JSON, one document per value.
public enum ArgumentCodec {
    /// Encodes one argument or result.
    public static func encode<T: Encodable>(_ value: T) throws(ActorCallError) -> [UInt8] {
        do { return Array(try JSONEncoder().encode(value)) } catch {
            throw ActorCallError(.serialization, "could not encode \(T.self): \(error)")
        }
    }

    /// Decodes one argument or result.
    public static func decode<T: Decodable>(_ type: T.Type, from bytes: [UInt8]) throws(ActorCallError) -> T {
        do { return try JSONDecoder().decode(type, from: Data(bytes)) } catch {
            throw ActorCallError(.serialization, "could not decode \(T.self): \(error)")
        }
    }
}

/// Records a distributed call's generic substitutions and arguments, each encoded at once with `ArgumentCodec`.
public struct FabricInvocationEncoder: DistributedTargetInvocationEncoder, Sendable {
    public typealias SerializationRequirement = any Codable

    /// Mangled names of the generic substitutions, in order.
    public private(set) var genericSubstitutions: [String] = []
    /// The encoded arguments, in order.
    public private(set) var arguments: [[UInt8]] = []

    /// An empty invocation.
    public init() {}

    public mutating func recordGenericSubstitution<T>(_ type: T.Type) throws {
        guard let name = _mangledTypeName(type) else {
            throw ActorCallError(.serialization, "type \(type) has no mangled name")
        }
        genericSubstitutions.append(name)
    }

    public mutating func recordArgument<Value: Codable>(_ argument: RemoteCallArgument<Value>) throws {
        guard arguments.count < ActorLimits.argumentsMax else {
            throw ActorCallError(.serialization, "more than \(ActorLimits.argumentsMax) arguments")
        }
        arguments.append(try ArgumentCodec.encode(argument.value))
    }

    public mutating func recordReturnType<R: Codable>(_ type: R.Type) throws {}
    public mutating func recordErrorType<E: Error>(_ type: E.Type) throws {}
    public mutating func doneRecording() throws {}
}

/// Replays a received call envelope's generic substitutions and arguments to `executeDistributedTarget`.
public final class FabricInvocationDecoder: DistributedTargetInvocationDecoder {
    public typealias SerializationRequirement = any Codable

    let envelope: CallEnvelope
    var next = 0

    /// A decoder over one received call.
    public init(envelope: CallEnvelope) { self.envelope = envelope }

    public func decodeGenericSubstitutions() throws -> [Any.Type] {
        try envelope.genericSubstitutions.map { name in
            guard let t = _typeByName(name) else {
                throw ActorCallError(.serialization, "unknown generic substitution \(name)")
            }
            return t
        }
    }

    public func decodeNextArgument<Argument: Codable>() throws -> Argument {
        guard next < envelope.arguments.count else {
            throw ActorCallError(
                .serialization, "call carries \(envelope.arguments.count) arguments, target wants more")
        }
        defer { next += 1 }
        return try ArgumentCodec.decode(Argument.self, from: envelope.arguments[next])
    }

    public func decodeReturnType() throws -> Any.Type? { nil }
    public func decodeErrorType() throws -> Any.Type? { nil }
}

/// Turns the outcome of an executed distributed target into a reply envelope outcome and hands it on.
public struct FabricResultHandler: DistributedTargetInvocationResultHandler {
    public typealias SerializationRequirement = any Codable

    let deliver: @Sendable (ReplyEnvelope.Outcome) -> Void

    /// A handler that passes each outcome to `deliver`.
    public init(deliver: @escaping @Sendable (ReplyEnvelope.Outcome) -> Void) { self.deliver = deliver }

    public func onReturn<Success: Codable>(value: Success) async throws {
        do {
            deliver(.value(try ArgumentCodec.encode(value)))
        } catch {
            deliver(.error(RemoteError(error)))
        }
    }

    public func onReturnVoid() async throws { deliver(.void) }

    public func onThrow<Err: Error>(error: Err) async throws { deliver(.error(RemoteError(error))) }
}
