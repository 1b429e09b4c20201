import Foundation

/// The one JSON encoding of Fabric's documents (API bodies and stored documents): sorted keys, RFC 3339 times.
public enum FabricJSON {
    /// Encodes a value as compact JSON with sorted keys. Encoding Fabric's own types cannot fail; a failure is a
    /// programming error and is reported as an internal error.
    public static func encode<T: Encodable>(_ value: T) throws(FabricError) -> Data {
        do { return try encoder().encode(value) } catch {
            throw FabricError(.internalError, "could not encode \(T.self): \(error)")
        }
    }

    /// Decodes a document Fabric wrote itself (stored rows, catalog files).
    public static func decode<T: Decodable>(_ type: T.Type, from data: Data) throws(FabricError) -> T {
        do { return try JSONDecoder().decode(type, from: data) } catch {
            throw FabricError(.internalError, "could not decode stored \(T.self): \(error)")
        }
    }

    public static func encoder() -> JSONEncoder {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return e
    }
}
