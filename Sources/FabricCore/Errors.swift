/// The one error shape of Fabric: a code, a human message, the field it concerns (if any) and the call site.
///
/// HTTP renders it as `{"error":{"code","message","field"}}` with `code.httpStatus`.
public struct FabricError: Error, Sendable, Equatable, CustomStringConvertible {
    /// A stable, machine-readable error code.
    public enum Code: String, Sendable, Codable, CaseIterable {
        case invalidArgument = "invalid_argument"
        case notFound = "not_found"
        case alreadyExists = "already_exists"
        case conflict = "conflict"
        case payloadTooLarge = "payload_too_large"
        case methodNotAllowed = "method_not_allowed"
        case unsupportedMediaType = "unsupported_media_type"
        case permissionDenied = "permission_denied"
        case failedPrecondition = "failed_precondition"
        case resourceExhausted = "resource_exhausted"
        case unavailable = "unavailable"
        case internalError = "internal"

        /// The HTTP status this code maps to.
        public var httpStatus: Int {
            switch self {
            case .invalidArgument: 400
            case .notFound: 404
            case .methodNotAllowed: 405
            case .alreadyExists, .conflict, .failedPrecondition: 409
            case .payloadTooLarge: 413
            case .unsupportedMediaType: 415
            case .permissionDenied: 403
            case .resourceExhausted: 429
            case .unavailable: 503
            case .internalError: 500
            }
        }
    }

    public var code: Code
    public var message: String
    public var field: String?
    public var file: String
    public var line: Int

    public init(_ code: Code, _ message: String, field: String? = nil, file: String = #fileID, line: Int = #line) {
        self.code = code
        self.message = message
        self.field = field
        self.file = file
        self.line = line
    }

    /// Equality ignores the call site: two errors are the same when code, message and field agree.
    public static func == (a: FabricError, b: FabricError) -> Bool {
        a.code == b.code && a.message == b.message && a.field == b.field
    }

    public var description: String {
        let f = field.map { " field=\($0)" } ?? ""
        return "\(code.rawValue): \(message)\(f) (at \(file):\(line))"
    }

    public static func invalid(_ field: String, _ message: String, file: String = #fileID, line: Int = #line)
        -> FabricError
    {
        FabricError(.invalidArgument, message, field: field, file: file, line: line)
    }
}
