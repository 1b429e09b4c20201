import FabricCore
import FabricScheduler

/// A broken invariant: what kind, and a message naming the workload, node or instance.
public struct Violation: Sendable, Equatable, CustomStringConvertible {
    public enum Kind: String, Sendable, CaseIterable {
        /// A workload moved between phases the lifecycle does not allow (`Phase.canTransition`).
        case illegalTransition = "illegal-transition"
        /// A node holds more CPU, memory or GPUs than it has.
        case overCommit = "over-commit"
        /// A workload ran on two nodes at once, or still runs after it ended.
        case doubleRun = "double-run"
        /// A workload landed on GPUs of another model, or none.
        case gpuMismatch = "gpu-mismatch"
        /// A workload landed outside its provider, region or spot constraints.
        case constraintMismatch = "constraint-mismatch"
        /// Two cloud instances with one name (a provision that was not idempotent).
        case duplicateInstance = "duplicate-instance"
        /// A cloud instance the controller does not know of, after convergence.
        case orphanInstance = "orphan-instance"
        /// An instance the controller believes in that the provider does not have, after convergence.
        case ghostInstance = "ghost-instance"
        /// The $/h the controller believes it pays differs from the provider's bill.
        case costMismatch = "cost-mismatch"
        /// After convergence a workload is neither final nor legitimately pending.
        case notConverged = "not-converged"
        /// A sampled placement was not the brute-force cheapest feasible candidate.
        case notCheapest = "not-cheapest"
    }

    public var kind: Kind
    public var message: String
    public var at: Timestamp

    public var description: String { "\(kind.rawValue): \(message)" }
}

/// The shape of a machine, as the fake cloud created it (the truth the checker compares against).
struct MachineShape {
    var capacity: Resources
    var provider: String
    var region: String
    var spot: Bool
}

/// Checks the invariants after every event, from what it is told by the fake cloud (instances), the node runtimes
/// (what runs where) and the controller's workload transitions. It keeps its own books and shares nothing with
/// the controller's, so a controller bug cannot hide itself.
final class InvariantChecker {
    private(set) var violation: Violation? = nil
    private var now = Timestamp(millisecondsSinceEpoch: 0)

    private var shapes: [String: MachineShape] = [:]
    /// Per node: what the workloads holding capacity there add up to.
    private var held: [String: Resources] = [:]
    /// Per workload: where it holds capacity, and how much.
    private var holding: [String: (node: String, r: Resources)] = [:]
    /// Per workload: the node whose runtime runs it.
    private var runningAt: [String: String] = [:]
    private(set) var transitions = 0
    private var liveTags: [String: String] = [:]
    private var tagOf: [String: String] = [:]

    func tick(_ t: Timestamp) { now = t }

    func fail(_ kind: Violation.Kind, _ message: String) {
        guard violation == nil else { return }
        violation = Violation(kind: kind, message: message, at: now)
    }

    // MARK: The fake cloud's truth

    /// A machine was created (or a base-fleet node already exists). `tag` is the provision call's client token:
    /// two live machines from one token are a duplicate (a retry that was not idempotent).
    func instanceCreated(_ name: String, _ shape: MachineShape, tag: String?) {
        if let tag {
            if let other = liveTags[tag], other != name {
                fail(.duplicateInstance, "instances \(other) and \(name) were both created for \(tag)")
            }
            liveTags[tag] = name
            tagOf[name] = tag
        }
        shapes[name] = shape
        checkNode(name)
    }

    /// A machine is gone (terminated, failed or reclaimed).
    func instanceGone(_ name: String) {
        if let tag = tagOf.removeValue(forKey: name), liveTags[tag] == name { liveTags[tag] = nil }
    }

    // MARK: Node runtimes

    func runtimeStarted(_ workload: String, on node: String) {
        if let other = runningAt[workload], other != node {
            fail(.doubleRun, "workload \(workload) started on \(node) while it runs on \(other)")
        }
        runningAt[workload] = node
    }

    func runtimeStopped(_ workload: String, on node: String) {
        if runningAt[workload] == node { runningAt[workload] = nil }
    }

    // MARK: Controller transitions

    /// The controller moves `w` from `from` to `to` (on `node` where it holds capacity).
    func transition(_ w: String, _ spec: WorkloadSpec, from: Phase, to: Phase, node: String?, reason: String) {
        transitions += 1
        if !from.canTransition(to: to) {
            fail(.illegalTransition, "workload \(w): \(from.rawValue) -> \(to.rawValue) (\(reason)) is not allowed")
        }
        if from.holdsCapacity && !to.holdsCapacity, let h = holding.removeValue(forKey: w) {
            held[h.node] = held[h.node, default: .zero].subtracting(h.r)
        }
        if !from.holdsCapacity && to.holdsCapacity, let node {
            holding[w] = (node, spec.resources)
            held[node] = held[node, default: .zero].adding(spec.resources)
            checkNode(node)
        }
        if to == .starting, let node, let shape = shapes[node] { checkSpec(w, spec, shape, node) }
    }

    private func checkNode(_ node: String) {
        guard let shape = shapes[node], let h = held[node] else { return }
        let c = shape.capacity
        if h.cpuMillis > c.cpuMillis || h.memoryBytes > c.memoryBytes || h.gpuCount > c.gpuCount {
            fail(
                .overCommit,
                "node \(node) holds cpu=\(h.cpuMillis)m mem=\(h.memoryBytes)B gpu=\(h.gpuCount) of cpu="
                    + "\(c.cpuMillis)m mem=\(c.memoryBytes)B gpu=\(c.gpuCount)")
        }
    }

    private func checkSpec(_ w: String, _ spec: WorkloadSpec, _ shape: MachineShape, _ node: String) {
        if let want = spec.resources.gpu, want.count > 0 {
            guard let have = shape.capacity.gpu, have.count > 0 else {
                return fail(.gpuMismatch, "workload \(w) wants \(want.count) GPU but node \(node) has none")
            }
            if let model = want.model, !GPUModel.satisfies(offered: have.model ?? "", requested: model) {
                return fail(
                    .gpuMismatch, "workload \(w) wants \(model) but node \(node) has \(have.model ?? "unknown") GPUs")
            }
        }
        let p = spec.placement
        if let ps = p.providers, !ps.contains(shape.provider) {
            fail(.constraintMismatch, "workload \(w) allows providers \(ps) but node \(node) is \(shape.provider)")
        }
        if let rs = p.regions, !rs.contains(shape.region) {
            fail(.constraintMismatch, "workload \(w) allows regions \(rs) but node \(node) is in \(shape.region)")
        }
        if p.spot == .never && shape.spot || p.spot == .required && !shape.spot {
            fail(.constraintMismatch, "workload \(w) spot=\(p.spot.rawValue) on node \(node) spot=\(shape.spot)")
        }
    }

    // MARK: After convergence

    /// What the fake cloud bills and what the controller believes it pays, instance by instance.
    func checkInstances(cloud: [String: Int64], books: [String: Int64], nodePrices: Int64) {
        for name in cloud.keys.sorted() where books[name] == nil {
            return fail(.orphanInstance, "instance \(name) runs at the provider but the controller does not know it")
        }
        for name in books.keys.sorted() where cloud[name] == nil {
            return fail(.ghostInstance, "the controller believes in instance \(name), which the provider lacks")
        }
        for name in cloud.keys.sorted() where cloud[name] != books[name] {
            return fail(
                .costMismatch,
                "instance \(name): provider bills \(cloud[name]!) micro-$/h, controller believes "
                    + "\(books[name]!)")
        }
        let billed = cloud.values.reduce(0, +)
        if billed != nodePrices {
            fail(.costMismatch, "provider bills \(billed) micro-$/h, the controller's nodes add up to \(nodePrices)")
        }
    }

    /// Nothing may still run for a workload that ended or waits.
    func checkNothingRunsFor(_ done: (String) -> Bool) {
        for w in runningAt.keys.sorted() where done(w) {
            fail(.doubleRun, "workload \(w) has ended or is pending but still runs on \(runningAt[w]!)")
            return
        }
    }
}
