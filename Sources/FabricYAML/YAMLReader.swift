// Reads one YAML document into a small tree with line numbers, on libyaml's event API. libyaml's errors are
// turned into `YAMLSyntaxError` in one place, `YAMLReader.syntaxError(_:)`. Shared by weaver's settings loader and
// the Kubernetes drivers' kubeconfig reader.
import CYAML

/// A YAML node and the 1-based line and column where it starts.
public struct YAMLNode: Sendable {
    /// A mapping entry, in file order.
    public struct Entry: Sendable {
        public var key: YAMLNode
        public var value: YAMLNode
    }

    /// What the node holds.
    public enum Kind: Sendable {
        /// A scalar; `isNull` for a plain empty, `~` or `null`.
        case scalar(String, isNull: Bool)
        case sequence([YAMLNode])
        case mapping([Entry])
    }

    public var kind: Kind
    public var line: Int
    public var column: Int

    /// The text of a non-null scalar, else nil.
    public var scalar: String? {
        if case .scalar(let text, let isNull) = kind, !isNull { return text }
        return nil
    }

    /// The items of a sequence, else nil.
    public var items: [YAMLNode]? {
        if case .sequence(let items) = kind { return items }
        return nil
    }

    /// The entries of a mapping, else nil.
    public var entries: [Entry]? {
        if case .mapping(let entries) = kind { return entries }
        return nil
    }

    /// The value of the first mapping entry whose key is the scalar `key`; nil for a missing key or a non-mapping.
    public subscript(key: String) -> YAMLNode? {
        entries?.first { $0.key.scalar == key }?.value
    }
}

/// A YAML document libyaml could not parse: its problem and where (1-based).
public struct YAMLSyntaxError: Error, Sendable, Equatable {
    public var message: String
    public var line: Int
    public var column: Int
}

/// Parses YAML text with libyaml.
public enum YAMLReader {
    /// The plain scalars that mean null.
    public static let nullSpellings: Set<String> = ["", "~", "null", "Null", "NULL"]
    /// The deepest nesting of maps and sequences `parse` accepts unless told otherwise.
    public static let depthMaxDefault = 32

    /// Parses one document; nil when the text holds none (empty, or only comments). Aliases, more than one document
    /// and nesting deeper than `depthMax` are errors.
    public static func parse(_ bytes: [UInt8], depthMax: Int = depthMaxDefault) throws(YAMLSyntaxError) -> YAMLNode? {
        let result: Result<YAMLNode?, YAMLSyntaxError> = bytes.withUnsafeBufferPointer { buffer in
            var parser = yaml_parser_t()
            guard yaml_parser_initialize(&parser) == 1 else {
                return .failure(YAMLSyntaxError(message: "libyaml could not allocate a parser", line: 1, column: 1))
            }
            defer { yaml_parser_delete(&parser) }
            yaml_parser_set_encoding(&parser, YAML_UTF8_ENCODING)
            yaml_parser_set_input_string(&parser, buffer.baseAddress, buffer.count)
            var builder = TreeBuilder(depthMax: depthMax)
            do throws(YAMLSyntaxError) {
                while try builder.consume(next(&parser)) {}
            } catch {
                return .failure(error)
            }
            return .success(builder.root)
        }
        return try result.get()
    }

    /// The next event, copied out of libyaml's memory, which is freed here.
    private static func next(_ parser: inout yaml_parser_t) throws(YAMLSyntaxError) -> Event {
        var event = yaml_event_t()
        guard yaml_parser_parse(&parser, &event) == 1 else { throw syntaxError(parser) }
        defer { yaml_event_delete(&event) }
        let line = Int(event.start_mark.line) + 1
        let column = Int(event.start_mark.column) + 1
        switch event.type {
        case YAML_STREAM_END_EVENT: return Event(kind: .streamEnd, line: line, column: column)
        case YAML_DOCUMENT_START_EVENT: return Event(kind: .documentStart, line: line, column: column)
        case YAML_MAPPING_START_EVENT: return Event(kind: .mappingStart, line: line, column: column)
        case YAML_MAPPING_END_EVENT: return Event(kind: .mappingEnd, line: line, column: column)
        case YAML_SEQUENCE_START_EVENT: return Event(kind: .sequenceStart, line: line, column: column)
        case YAML_SEQUENCE_END_EVENT: return Event(kind: .sequenceEnd, line: line, column: column)
        case YAML_ALIAS_EVENT: return Event(kind: .alias, line: line, column: column)
        case YAML_SCALAR_EVENT:
            let scalar = event.data.scalar
            let text = String(decoding: UnsafeBufferPointer(start: scalar.value, count: scalar.length), as: UTF8.self)
            let isNull = scalar.style == YAML_PLAIN_SCALAR_STYLE && nullSpellings.contains(text)
            return Event(kind: .scalar(text, isNull: isNull), line: line, column: column)
        default: return Event(kind: .other, line: line, column: column)
        }
    }

    /// The one place libyaml's error state becomes a Swift error.
    private static func syntaxError(_ parser: yaml_parser_t) -> YAMLSyntaxError {
        let problem = parser.problem.map { String(cString: $0) } ?? "unknown YAML error"
        let context = parser.context.map { String(cString: $0) }
        let mark = parser.problem_mark
        let message = context.map { "\(problem) \($0)" } ?? problem
        return YAMLSyntaxError(message: message, line: Int(mark.line) + 1, column: Int(mark.column) + 1)
    }

    /// A libyaml event reduced to what the tree needs.
    private struct Event {
        enum Kind {
            case streamEnd, documentStart, mappingStart, mappingEnd, sequenceStart, sequenceEnd, alias, other
            case scalar(String, isNull: Bool)
        }

        var kind: Kind
        var line: Int
        var column: Int
    }

    /// Builds the tree from events with an explicit stack, so deep input cannot overflow the call stack.
    private struct TreeBuilder {
        enum Frame {
            case sequence([YAMLNode], line: Int, column: Int)
            case mapping([YAMLNode.Entry], pendingKey: YAMLNode?, line: Int, column: Int)
        }

        let depthMax: Int
        var stack: [Frame] = []
        var root: YAMLNode?
        var documents = 0

        /// Takes one event; false once the stream has ended.
        mutating func consume(_ event: Event) throws(YAMLSyntaxError) -> Bool {
            switch event.kind {
            case .streamEnd:
                return false
            case .documentStart:
                documents += 1
                guard documents == 1 else {
                    throw YAMLSyntaxError(
                        message: "expected one YAML document, found a second", line: event.line, column: event.column)
                }
            case .alias:
                throw YAMLSyntaxError(
                    message: "aliases (*name) are not supported in the config file", line: event.line,
                    column: event.column)
            case .mappingStart, .sequenceStart:
                guard stack.count < depthMax else {
                    throw YAMLSyntaxError(
                        message: "nesting deeper than \(depthMax) levels", line: event.line,
                        column: event.column)
                }
                if case .mappingStart = event.kind {
                    stack.append(.mapping([], pendingKey: nil, line: event.line, column: event.column))
                } else {
                    stack.append(.sequence([], line: event.line, column: event.column))
                }
            case .mappingEnd:
                guard case .mapping(let entries, _, let line, let column) = stack.popLast() else { break }
                add(YAMLNode(kind: .mapping(entries), line: line, column: column))
            case .sequenceEnd:
                guard case .sequence(let items, let line, let column) = stack.popLast() else { break }
                add(YAMLNode(kind: .sequence(items), line: line, column: column))
            case .scalar(let text, let isNull):
                add(YAMLNode(kind: .scalar(text, isNull: isNull), line: event.line, column: event.column))
            case .other:
                break
            }
            return true
        }

        /// Puts a finished node into its parent, or makes it the root.
        mutating func add(_ node: YAMLNode) {
            switch stack.popLast() {
            case nil:
                root = node
            case .sequence(var items, let line, let column):
                items.append(node)
                stack.append(.sequence(items, line: line, column: column))
            case .mapping(var entries, let pendingKey, let line, let column):
                if let key = pendingKey {
                    entries.append(YAMLNode.Entry(key: key, value: node))
                    stack.append(.mapping(entries, pendingKey: nil, line: line, column: column))
                } else {
                    stack.append(.mapping(entries, pendingKey: node, line: line, column: column))
                }
            }
        }
    }
}
