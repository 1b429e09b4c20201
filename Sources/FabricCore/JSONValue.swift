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
        if hasTrailingComma(data) {
            // Foundation's parser accepts `[1,]` and `{"a":1,}`; JSON (RFC 8259) does not.
            throw FabricError(.invalidArgument, "malformed JSON: a comma before a closing } or ]")
        }
        if let key = firstDuplicateKey(in: data) {
            throw FabricError(.invalidArgument, "\(key) appears twice in one object", field: key)
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
            // Integers above Int64.max come as unsigned: kept as a (huge) double, never wrapped to a negative one.
            case "Q" where n.uint64Value > UInt64(Int64.max): return .double(Double(n.uint64Value))
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

extension JSONValue {
    /// Whether a syntactically valid (for Foundation) JSON text has a comma right before a closing `}` or `]`.
    public static func hasTrailingComma(_ data: Data) -> Bool {
        var last: UInt8 = 0  // the last byte outside strings that is not white space
        var inString = false
        var escaped = false
        for c in data {
            if inString {
                if escaped {
                    escaped = false
                } else if c == UInt8(ascii: "\\") {
                    escaped = true
                } else if c == UInt8(ascii: "\"") {
                    inString = false
                    last = c
                }
                continue
            }
            switch c {
            case UInt8(ascii: " "), UInt8(ascii: "\n"), UInt8(ascii: "\r"), UInt8(ascii: "\t"): continue
            case UInt8(ascii: "\""): inString = true
            case UInt8(ascii: "}"), UInt8(ascii: "]"): if last == UInt8(ascii: ",") { return true }
            default: break
            }
            last = c
        }
        return false
    }

    /// The path (`resources.cpu`, `command[2].x`) of the first key that appears twice in one object of a
    /// syntactically valid JSON text, or nil. JSONSerialization keeps only one of them silently; strict input
    /// handling refuses such a body instead. Keys are compared after their escapes are decoded.
    public static func firstDuplicateKey(in data: Data) -> String? {
        struct Frame {
            var isObject: Bool
            var path: String
            var keys: Set<String> = []
            var expectingKey = false
            var currentKey: String? = nil
            var index = 0
        }
        let b = [UInt8](data)
        var stack: [Frame] = []
        var i = 0
        func childPath() -> String {
            guard let top = stack.last else { return "" }
            if top.isObject {
                let k = top.currentKey ?? ""
                return top.path.isEmpty ? k : top.path + "." + k
            }
            return top.path + "[\(top.index)]"
        }
        while i < b.count {
            switch b[i] {
            case UInt8(ascii: "{"), UInt8(ascii: "["):
                let path = childPath()
                let isObject = b[i] == UInt8(ascii: "{")
                stack.append(Frame(isObject: isObject, path: path, expectingKey: isObject))
                i += 1
            case UInt8(ascii: "}"), UInt8(ascii: "]"):
                stack.removeLast()
                i += 1
            case UInt8(ascii: ","):
                if stack[stack.count - 1].isObject {
                    stack[stack.count - 1].expectingKey = true
                } else {
                    stack[stack.count - 1].index += 1
                }
                i += 1
            case UInt8(ascii: ":"):
                stack[stack.count - 1].expectingKey = false
                i += 1
            case UInt8(ascii: "\""):
                let (text, next) = decodeString(b, from: i + 1)
                i = next
                guard let top = stack.last, top.isObject, top.expectingKey else { continue }
                if !stack[stack.count - 1].keys.insert(text).inserted {
                    return top.path.isEmpty ? text : top.path + "." + text
                }
                stack[stack.count - 1].currentKey = text
            default:
                i += 1
            }
        }
        return nil
    }

    /// Decodes the JSON string whose body starts at `start` (after the opening quote); returns it and the index
    /// after the closing quote.
    private static func decodeString(_ b: [UInt8], from start: Int) -> (String, Int) {
        var out: [UInt8] = []
        var i = start
        var pendingHigh: UInt32? = nil
        func append(_ scalar: UInt32) {
            if let u = Unicode.Scalar(scalar) { out.append(contentsOf: Array(String(Character(u)).utf8)) }
        }
        while i < b.count, b[i] != UInt8(ascii: "\"") {
            guard b[i] == UInt8(ascii: "\\"), i + 1 < b.count else {
                out.append(b[i])
                i += 1
                continue
            }
            let e = b[i + 1]
            i += 2
            switch e {
            case UInt8(ascii: "b"): out.append(8)
            case UInt8(ascii: "f"): out.append(12)
            case UInt8(ascii: "n"): out.append(10)
            case UInt8(ascii: "r"): out.append(13)
            case UInt8(ascii: "t"): out.append(9)
            case UInt8(ascii: "u"):
                guard i + 4 <= b.count, let v = UInt32(String(decoding: b[i..<(i + 4)], as: UTF8.self), radix: 16)
                else { continue }
                i += 4
                if (0xD800...0xDBFF).contains(v) {
                    pendingHigh = v
                } else if (0xDC00...0xDFFF).contains(v), let high = pendingHigh {
                    append(0x10000 + ((high - 0xD800) << 10) + (v - 0xDC00))
                    pendingHigh = nil
                } else {
                    append(v)
                }
            default: out.append(e)  // \" \\ \/
            }
        }
        return (String(decoding: out, as: UTF8.self), i + 1)
    }
}
