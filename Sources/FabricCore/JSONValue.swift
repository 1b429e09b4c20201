import Foundation

/// A parsed JSON document, kept exact enough to validate strictly (unknown fields, types, ranges) and name the
/// offending field.
public enum JSONValue: Sendable, Hashable, Decodable {
    case null
    case bool(Bool)
    case int(Int64)
    case double(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    public init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() {
            self = .null
        } else if let b = try? c.decode(Bool.self) {
            self = .bool(b)
        } else if let i = try? c.decode(Int64.self) {
            self = .int(i)
        } else if let d = try? c.decode(Double.self) {
            self = .double(d)
        } else if let s = try? c.decode(String.self) {
            self = .string(s)
        } else if let a = try? c.decode([JSONValue].self) {
            self = .array(a)
        } else {
            self = .object(try c.decode([String: JSONValue].self))
        }
    }

    /// Parses bytes as JSON, or throws a 400-style error that says where the syntax broke.
    ///
    /// Uses JSONSerialization (several times faster than JSONDecoder on Linux) and converts its result exactly:
    /// booleans stay booleans, integers stay integers.
    public static func parse(_ data: Data) throws(FabricError) -> JSONValue {
        guard !data.isEmpty else {
            throw FabricError(.invalidArgument, "request body is empty; expected a JSON object")
        }
        let object: Any
        do {
            object = try JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed])
        } catch {
            let detail = (error as NSError).userInfo[NSDebugDescriptionErrorKey] as? String
            throw FabricError(.invalidArgument, "malformed JSON" + (detail.map { ": \($0)" } ?? ""))
        }
        return convert(object)
    }

    private static let booleanType = type(of: NSNumber(value: true))

    private static func convert(_ v: Any) -> JSONValue {
        switch v {
        case let s as String: return .string(s)
        case let a as [Any]: return .array(a.map(convert))
        case let o as [String: Any]: return .object(o.mapValues(convert))
        case let n as NSNumber:
            if type(of: n) == booleanType { return .bool(n.boolValue) }
            switch String(cString: n.objCType) {
            case "d", "f": return .double(n.doubleValue)
            default: return .int(n.int64Value)
            }
        default: return .null
        }
    }

    var typeName: String {
        switch self {
        case .null: "null"
        case .bool: "boolean"
        case .int, .double: "number"
        case .string: "string"
        case .array: "array"
        case .object: "object"
        }
    }
}
