import FabricActors
import FabricCore
import FabricLog

/// Where stored workload transitions are announced. Called in store order for each workload (after the write),
/// from the persist lanes: keep it fast and non-blocking.
public protocol EventPublisher: Sendable {
    func publish(_ event: WorkloadEvent)
    /// A node changed state (`fabric.events.node.<id>`).
    func publish(_ event: NodeEvent)
}

/// Publishes each workload transition on NATS as JSON, on `fabric.events.workload.<id>`.
///
/// The payload is the stored event: `{"workloadID","seq","at","from","to","reason","message"}`; `seq` is the
/// per-workload (so per-subject) sequence number, starting at 1, without gaps. Best effort: an event that cannot
/// be published while NATS is away is logged and dropped; `GET /v1/workloads/:id/events` keeps the full history.
public final class NATSEventPublisher: EventPublisher {
    public static let subjectPrefix = "fabric.events.workload."

    let connection: NATSConnection
    let logger: Logger

    public init(connection: NATSConnection, logger: Logger) {
        self.connection = connection
        self.logger = logger
    }

    public static let nodeSubjectPrefix = "fabric.events.node."

    public static func subject(workloadID: String) -> String { subjectPrefix + workloadID }

    public static func subject(node: String) -> String { nodeSubjectPrefix + node }

    public func publish(_ event: NodeEvent) {
        do {
            let data = try FabricJSON.encode(event)
            try connection.publish(subject: Self.subject(node: event.node), data: [UInt8](data))
        } catch {
            logger.warn("node event not published", ["node": event.node, "seq": event.seq, "error": error])
        }
    }

    public func publish(_ event: WorkloadEvent) {
        do {
            let data = try FabricJSON.encode(event)
            try connection.publish(subject: Self.subject(workloadID: event.workloadID), data: [UInt8](data))
        } catch {
            logger.warn("event not published", ["workload": event.workloadID, "seq": event.seq, "error": error])
        }
    }
}
