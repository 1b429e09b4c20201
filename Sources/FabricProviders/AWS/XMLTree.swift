import Foundation

#if canImport(FoundationXML)
    import FoundationXML
#endif

/// A parsed XML element: its name, its own text, and its child elements in order. EC2 Query API answers are
/// small documents read once, so a tree is simpler than streaming.
public struct XMLTree: Sendable, Hashable {
    public var name: String
    public var text: String
    public var children: [XMLTree]

    /// The most nested elements accepted.
    public static let depthMax = 64
    /// The most elements one document may hold.
    public static let elementsMax = 200_000

    /// An element (tests build small trees by hand).
    public init(name: String, text: String = "", children: [XMLTree] = []) {
        self.name = name
        self.text = text
        self.children = children
    }

    /// Parses a document; throws `XMLTreeError` for malformed XML or one past the limits.
    public static func parse(_ data: Data) throws -> XMLTree {
        let builder = Builder()
        let parser = XMLParser(data: data)
        parser.shouldProcessNamespaces = false
        parser.shouldResolveExternalEntities = false
        parser.delegate = builder
        let ok = parser.parse()
        if let limit = builder.limitError { throw limit }
        guard ok, let root = builder.root else {
            throw XMLTreeError(
                message: parser.parserError.map { "malformed XML: \($0.localizedDescription)" } ?? "no root element")
        }
        return root
    }

    /// The first child element named `name`.
    public func child(_ name: String) -> XMLTree? { children.first { $0.name == name } }

    /// Every child element named `name`.
    public func children(_ name: String) -> [XMLTree] { children.filter { $0.name == name } }

    /// The element at a slash-separated path of child names (`instanceState/name`).
    public func at(_ path: String) -> XMLTree? {
        var node = self
        for part in path.split(separator: "/") {
            guard let next = node.child(String(part)) else { return nil }
            node = next
        }
        return node
    }

    /// The trimmed text at `path`, nil when absent or empty.
    public func string(_ path: String) -> String? {
        guard let t = at(path)?.text.trimmingCharacters(in: .whitespacesAndNewlines), !t.isEmpty else { return nil }
        return t
    }

    /// The `item` children of the element at `path` (EC2's list shape).
    public func items(_ path: String) -> [XMLTree] { at(path)?.children("item") ?? [] }

    private final class Builder: NSObject, XMLParserDelegate {
        var stack: [XMLTree] = []
        var root: XMLTree?
        var count = 0
        var limitError: XMLTreeError?

        func parser(
            _ parser: XMLParser, didStartElement elementName: String, namespaceURI: String?, qualifiedName: String?,
            attributes: [String: String] = [:]
        ) {
            count += 1
            guard stack.count < XMLTree.depthMax, count <= XMLTree.elementsMax else {
                limitError = XMLTreeError(
                    message: "XML nested deeper than \(XMLTree.depthMax) or over \(XMLTree.elementsMax) elements")
                parser.abortParsing()
                return
            }
            stack.append(XMLTree(name: elementName))
        }

        func parser(_ parser: XMLParser, foundCharacters string: String) {
            guard !stack.isEmpty else { return }
            stack[stack.count - 1].text += string
        }

        func parser(
            _ parser: XMLParser, didEndElement elementName: String, namespaceURI: String?, qualifiedName: String?
        ) {
            guard let done = stack.popLast() else { return }
            if stack.isEmpty { root = done } else { stack[stack.count - 1].children.append(done) }
        }
    }
}

/// A document that is not well-formed XML, or too large to accept.
public struct XMLTreeError: Error, Sendable, Hashable, CustomStringConvertible {
    public var message: String
    public var description: String { message }
}
