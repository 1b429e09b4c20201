import FabricCore
import FabricProviders
import FabricScheduler
import Foundation
import Shuttle

/// Workloads placed on provider offers: an instance made idempotently and watched until it ends. A pod (Kubernetes,
/// CoreWeave, RunPod) runs one workload; a machine (AWS, GCP) is planned for a batch of workloads that wait for new
/// machines together (`machineBatchWindow`, `BatchPlanner`), so that several small ones share one machine where that
/// is cheaper, and it is deleted when the last of them leaves it.
///
/// ```
///  pending ──► scheduled ──► provisioning ──(instance running)──► starting ──► running ──► succeeded | failed
///     ▲                           │ name stored first, then provider.provision(name)            │
///     │   capacity / quota / auth │ offer skipped for a while                                   │ preempted (spot)
///     └───────────────────────────┘ next-cheapest candidate on the next pass  ◄──────────────────┘ another region
/// ```
/// The instance name is stored before the provider is called and is the idempotency key (ClientToken, requestId,
/// pod name), so a crash between the call and storing its answer never makes a second instance: after a restart
/// the same name is asked for again and the provider answers with the instance it has.
extension WorkloadService {
    /// Whether the scheduler may place workloads on offers (some provider driver is configured).
    var provisioningEnabled: Bool { !providers.isEmpty }

    /// Offers skipped now (expired entries dropped).
    func currentlyUnavailable(now: Timestamp) -> Set<OfferKey> {
        unavailableUntil = unavailableUntil.filter { $0.value > now }
        return Set(unavailableUntil.keys)
    }

    /// The offers of configured, enabled providers, for the scheduling pass.
    func provisionableOffers() -> (offers: [Offer], enabled: Set<String>) {
        guard provisioningEnabled else { return ([], []) }
        let view = offerView()
        let enabled = view.enabledProviders.intersection(providers.keys)
        return (view.offers.filter { enabled.contains($0.provider) }, enabled)
    }

    /// What real placements choose from: the nodes (less machines whose room is promised, `machineReserved`), and the
    /// offers of configured providers that are not skipped (only those of machine providers when `machinesOnly`).
    func placementSnapshot(now: Timestamp, nodes: [NodeInfo], machinesOnly: Bool = false) -> PlacementSnapshot {
        let offers = provisionableOffers()
        let shared = machineOwners.isEmpty ? nodes : nodes.filter { !machineReserved($0.id) }
        let usable = machinesOnly ? offers.offers.filter { !Self.runsWorkloadDirectly($0.provider) } : offers.offers
        return PlacementSnapshot(
            nodes: shared, offers: usable, enabledProviders: offers.enabled,
            unavailableOffers: currentlyUnavailable(now: now), includeOffers: provisioningEnabled)
    }

    /// The workloads that hold a machine now (sorted): those of its batch that have not left it, and those placed
    /// in its free room since.
    func machineHolders(_ name: String) -> [String] {
        (machineOwners[name] ?? []).sorted()
    }

    /// Whether a machine's room is promised to a workload that holds it but is not charged there now (its batch
    /// waits for it to join, or it restarts there after a backoff): then nothing else is placed on it. Otherwise its
    /// free room is anyone's, and whoever is placed there holds it too.
    func machineReserved(_ name: String) -> Bool {
        machineOwners[name]?.contains { allocations[$0] == nil } ?? false
    }

    /// The workloads an instance's news is for: every holder of a machine, or the one workload a pod runs.
    func holders(of ref: InstanceRef, lead id: String) -> [String] {
        if Self.runsWorkloadDirectly(ref.provider) {
            return active[id]?.status.instance?.name == ref.name ? [id] : []
        }
        return machineHolders(ref.name)
    }

    /// Plans the workloads waiting for new machines together and asks for the planned machines. A workload that now
    /// fits a node goes there; one that fits nowhere any more waits again (judged on the next pass).
    func planMachines() {
        machineBatchDue = false
        let batch = machineBatch.filter { e in
            guard let w = active[e.id] else { return false }
            return w.phase == .pending && w.status.instance == nil && !pendingSet.contains(e.id)
        }
        machineBatch = []
        guard !batch.isEmpty else { return }
        let specs = batch.map { active[$0.id]!.spec }
        let snapshot = placementSnapshot(now: clock.now(), nodes: sortedNodes, machinesOnly: true)
        let plan = BatchPlanner(stack: stack).plan(snapshot, specs)
        for k in plan.onNodes.keys.sorted() { placeOnNode(batch[k].id, plan.onNodes[k]!) }
        for k in plan.unplaced.keys.sorted() { enqueuePending(batch[k].id) }
        if !plan.unplaced.isEmpty { fullPassNeeded = true }
        for m in plan.machines {
            let members = m.workloads.map { (batch[$0].id, batch[$0].single) }
            let placements = Self.shares(of: m, members.map(\.1))
            beginProvisioning(Array(zip(members.map(\.0), placements)), machinePrice: m.pricePerHour)
        }
        if plan.machines.count > 0, batch.count > 1 {
            logger.info(
                "planned machines",
                [
                    "workloads": batch.count, "machines": plan.machines.count, "onNodes": plan.onNodes.count,
                    "price": plan.newMachinesPerHour,
                    "alone": plan.machines.flatMap(\.workloads).reduce(0.0) { $0 + batch[$1].single.pricePerHour },
                ])
        }
    }

    /// Each member's placement on a planned machine: the machine's offer, and a share of its price in proportion to
    /// what the member would cost on a machine of its own (so the shares add up to the machine's price).
    nonisolated static func shares(of m: BatchPlanner.NewMachine, _ singles: [Placement]) -> [Placement] {
        let alone = singles.reduce(0.0) { $0 + $1.pricePerHour }
        return singles.map { single in
            let share =
                singles.count == 1
                ? m.pricePerHour
                : alone > 0 ? m.pricePerHour * single.pricePerHour / alone : m.pricePerHour / Double(singles.count)
            return Placement(
                provider: m.offer.provider, region: m.offer.region, machineType: m.offer.machineType, spot: m.spot,
                pricePerHour: share, node: nil)
        }
    }

    /// The deterministic instance name for a workload: its ID and the version of the write that records the
    /// `provisioning` phase, so never reused, and DNS-safe.
    nonisolated static func instanceName(_ id: String, version: Int) -> String {
        "fabric-\(id.lowercased())-\(version)"
    }

    /// Places pending workloads on one new instance of an offer (a pod runs one; a machine may hold a planned
    /// batch): stores the instance name with each one's `provisioning` phase, then (once all are stored) asks the
    /// provider. The name comes from the first workload, so it is asked for under one name whatever happens.
    func beginProvisioning(_ members: [(id: String, placement: Placement)], machinePrice: Double) {
        guard let (leadID, first) = members.first, let lead = active[leadID],
            let provider = providers[first.provider]
        else { return }
        let ref = InstanceRef(
            name: Self.instanceName(leadID, version: lead.version + 2), provider: first.provider,
            region: first.region, machineType: first.machineType, spot: first.spot, pricePerHour: machinePrice)
        let company = members.count > 1 ? ", shared with \(members.count - 1) more" : ""
        var writes: [Promise<Void>] = []
        for (id, placement) in members {
            transition(
                id, to: .scheduled, reason: "Scheduled",
                message:
                    "placed on a new \(placement.provider) \(placement.machineType) in \(placement.region)\(company)"
            ) {
                $0.status.node = nil
                $0.status.placement = placement
                $0.status.pendingReasons = nil
            }
            let stored = transition(id, to: .provisioning, reason: "Provisioning", message: "asking for \(ref.name)") {
                $0.status.instance = ref
            }
            logger.info(
                "provisioning",
                [
                    "workload": id, "provider": ref.provider, "region": ref.region, "type": ref.machineType,
                    "spot": ref.spot, "price": placement.pricePerHour, "instance": ref.name,
                ])
            if let stored {
                writes.append(stored)
                placementsTotal += 1
            }
        }
        guard !writes.isEmpty else { return }
        let request = instanceRequest(lead.spec, id: leadID, ref: ref)
        Task {
            do { for w in writes { try await w.value() } } catch { return }  // not stored: nothing was asked for
            await self.callProvision(leadID, ref: ref, request: request, provider: provider)
        }
    }

    /// What the provider is asked for.
    nonisolated func instanceRequest(_ spec: WorkloadSpec, id: String, ref: InstanceRef) -> InstanceRequest {
        InstanceRequest(
            name: ref.name, region: ref.region, machineType: ref.machineType, spot: ref.spot,
            resources: spec.resources, image: spec.image, command: spec.command, env: spec.env,
            labels: [InstanceRequest.ownerLabel: "fabric", InstanceRequest.workloadLabel: id],
            bootstrapScript: Self.runsWorkloadDirectly(ref.provider) ? nil : options.machineBootstrap?(ref.name))
    }

    /// Calls `provision`, retrying throttling and transient failures, and hands the outcome to the actor.
    nonisolated func callProvision(_ id: String, ref: InstanceRef, request: InstanceRequest, provider: any Provider)
        async
    {
        do {
            let instance = try await withProviderRetries(provider.name.rawValue) {
                try await provider.provision(request)
            }
            if options.crashAfterProvision {
                logger.error(
                    "fault injection: exiting before the provisioned instance is stored", ["instance": ref.name])
                exit(137)
            }
            await provisioned(id, ref: ref, instance: instance)
        } catch {
            await provisionFailed(id, ref: ref, error: Self.providerError(error, provider: provider.name.rawValue))
        }
    }

    /// Runs a provider call, retrying `rateLimited` (after Retry-After) and `transient` (jittered backoff).
    nonisolated func withProviderRetries<T: Sendable>(
        _ provider: String, _ body: @Sendable () async throws -> T
    ) async throws -> T {
        var delay = options.providerRetryBase
        var attempt = 0
        while true {
            do {
                return try await body()
            } catch {
                let e = Self.providerError(error, provider: provider)
                attempt += 1
                guard e.isRetryable, attempt <= options.providerRetriesMax, !Task.isCancelled else { throw e }
                let wait = e.retryAfter ?? delay
                logger.warn(
                    "provider call failed; retrying",
                    ["provider": provider, "error": e.description, "attempt": attempt, "waitMillis": Self.millis(wait)])
                try? await timer.sleep(for: wait)
                delay = min(delay * 2, options.providerRetryMax)
            }
        }
    }

    nonisolated static func providerError(_ error: any Error, provider: String) -> ProviderError {
        if let e = error as? ProviderError { return e }
        return ProviderError(.transient, provider: provider, "\(error)")
    }

    /// The provider made (or already had) the instance.
    func provisioned(_ id: String, ref: InstanceRef, instance: Instance) {
        let holders = holders(of: ref, lead: id)
        guard !holders.isEmpty else {
            // Its workloads moved on (deleted, or placed elsewhere) while the call ran: the instance is not wanted.
            terminateLater(ref, reason: "no longer wanted")
            return
        }
        logger.info(
            "instance made", ["workloads": holders.joined(separator: ","), "instance": ref.name, "id": instance.id])
        for h in holders { update(h) { $0.status.instance?.id = instance.id } }
        for h in holders {
            guard let w = active[h], w.status.instance?.name == ref.name else { continue }
            if w.phase == .terminating {
                terminateInstanceThenFinish(h)
            } else {
                apply(instance, to: h)
            }
        }
    }

    /// The provider said no: skip the offer (or the whole provider) for a while and place the workload again.
    func provisionFailed(_ id: String, ref: InstanceRef, error: ProviderError) {
        let now = clock.now()
        let key = OfferKey(provider: ref.provider, region: ref.region, machineType: ref.machineType, spot: ref.spot)
        let until = now.adding(options.offerUnavailableFor)
        switch error.kind {
        case .quotaExceeded, .authFailed:
            // An account limit or bad credentials: every offer of that provider (in that region, for quotas).
            for o in offerView().offers where o.provider == ref.provider {
                guard error.kind == .authFailed || o.region == ref.region else { continue }
                unavailableUntil[
                    OfferKey(provider: o.provider, region: o.region, machineType: o.machineType, spot: false)] = until
                unavailableUntil[
                    OfferKey(provider: o.provider, region: o.region, machineType: o.machineType, spot: true)] = until
            }
            unavailableUntil[key] = until
        default:
            unavailableUntil[key] = until
        }
        let holders = holders(of: ref, lead: id)
        logger.warn(
            "provisioning failed; trying the next candidate",
            ["workloads": holders.joined(separator: ","), "offer": key.description, "error": error.description])
        let reason: String
        switch error.kind {
        case .capacityUnavailable: reason = "CapacityUnavailable"
        case .quotaExceeded: reason = "QuotaExceeded"
        case .authFailed: reason = "ProviderAuthFailed"
        case .rateLimited: reason = "ProviderThrottled"
        default: reason = "ProvisioningFailed"
        }
        for h in holders {
            guard let w = active[h], w.status.instance?.name == ref.name else { continue }
            if w.phase == .terminating {
                finishDeletion(h, status: nil)
            } else {
                placeAgain(h, reason: reason, message: "\(key): \(error.message)", pass: false)
            }
        }
        fullPassNeeded = true
        schedulePass()
    }

    /// Back to pending without placement, to be judged on the next (full) pass, which runs now unless `pass` is
    /// false. Its instance, if any, is deleted when no other workload holds it (`releaseInstance`): also after a
    /// refusal, in case the provider made one anyway.
    func placeAgain(_ id: String, reason: String, message: String, pass: Bool = true) {
        transition(id, to: .pending, reason: reason, message: message) {
            $0.status.placement = nil
            $0.status.node = nil
        }
        enqueuePending(id)
        fullPassNeeded = true
        if pass { schedulePass() }
    }

    /// Whether a provider's instance runs the workload itself (a pod), rather than a machine that boots shuttle,
    /// joins as a node named after the instance and is then given the workload.
    nonisolated static func runsWorkloadDirectly(_ provider: String) -> Bool {
        provider == ProviderName.k8s.rawValue || provider == ProviderName.coreweave.rawValue
            || provider == ProviderName.runpod.rawValue
    }

    /// A node joined: if it is the machine made for provisioning workloads, they are placed on it.
    func machineJoined(_ nodeID: String) {
        for id in machineHolders(nodeID) {
            guard let w = active[id], w.phase == .provisioning, w.status.instance?.name == nodeID else { continue }
            let attempt = w.status.attempts + 1
            allocate(w.id, w.spec.resources, on: nodeID)
            let stored = startAttempt(w.id, attempt, message: "machine \(nodeID) joined", node: nodeID)
            logger.info(
                "machine joined; starting its workload", ["workload": w.id, "node": nodeID, "attempt": attempt])
            if let stored {
                dispatch(Assignment(workloadID: w.id, attempt: attempt, spec: w.spec), to: nodeID, after: stored)
            }
        }
    }

    /// Starts the next attempt of a workload on the machine made for it (restart by policy; the machine is up).
    func restartOnOwnMachine(_ id: String, node: String) {
        guard let w = active[id] else { return }
        let attempt = w.status.attempts + 1
        allocate(id, w.spec.resources, on: node)
        placementsTotal += 1
        transition(id, to: .scheduled, reason: "Scheduled", message: "restarting on its machine \(node)") {
            $0.status.node = node
            $0.status.pendingReasons = nil
        }
        let stored = startAttempt(id, attempt, message: "attempt \(attempt)")
        logger.info("restarting on its machine", ["workload": id, "node": node, "attempt": attempt])
        if let stored {
            dispatch(Assignment(workloadID: id, attempt: attempt, spec: w.spec), to: node, after: stored)
        }
    }

    /// Moves a workload along with what its instance reports.
    func apply(_ instance: Instance, to id: String) {
        guard let w = active[id], let ref = w.status.instance else { return }
        if !Self.runsWorkloadDirectly(ref.provider) {
            applyMachine(instance, to: w, ref: ref)
            return
        }
        switch instance.state {
        case .pending, .unknown:
            if w.phase == .provisioning, let failure = instance.provisioningError {
                // The driver gave up on it (a pod Unschedulable past its pending timeout): as if provision failed
                // (placing it again deletes the instance: `releaseInstance`).
                provisionFailed(id, ref: ref, error: failure)
                return
            }
            // updatedAt: when the instance was asked for (or its ID stored), whichever came last.
            if w.phase == .provisioning, clock.now().since(w.updatedAt) > options.provisioningTimeout {
                provisionFailed(
                    id, ref: ref,
                    error: ProviderError(
                        .capacityUnavailable, provider: ref.provider, code: "ProvisioningTimeout",
                        "still \(instance.stateReason ?? "pending") after \(options.provisioningTimeout)"))
            }
        case .running:
            if w.phase == .provisioning {
                startAttempt(id, w.status.attempts + 1, message: "instance \(ref.name) is up")
            }
            if active[id]?.phase == .starting {
                transition(id, to: .running, reason: "Started", message: "running on \(ref.provider) \(ref.name)") {
                    $0.status.startedAt = self.clock.now()
                }
            }
        case .terminated:
            guard w.phase == .provisioning || w.phase == .starting || w.phase == .running else { return }
            if w.phase == .provisioning {
                transition(id, to: .starting, reason: "Starting", message: "instance \(ref.name) ran") {
                    $0.status.attempts += 1
                }
            }
            let code = instance.exitCode ?? (instance.stateReason == "Succeeded" ? 0 : 1)
            update(id) {
                $0.status.exitCode = code
                $0.status.finishedAt = self.clock.now()
            }
            applyRestartPolicy(
                id, succeeded: code == 0, reason: "Exited",
                message: "exited with code \(code) on \(ref.provider) \(ref.name)")
            fullPassNeeded = true
            schedulePass()
        case .preempted:
            skipSpot(ref)
            transition(id, to: .preempted, reason: "Preempted", message: "spot instance \(ref.name) was reclaimed") {
                $0.status.finishedAt = self.clock.now()
            }
            placeAgainAfterPreemption(id)
        case .stopping:
            break
        }
    }

    /// A machine's state: the workload itself runs under shuttle once the machine joins (`machineJoined`); here
    /// only a machine that never joins, ends or is taken back matters.
    func applyMachine(_ instance: Instance, to w: Workload, ref: InstanceRef) {
        switch instance.state {
        case .pending, .running, .unknown, .stopping:
            if w.phase == .provisioning, clock.now().since(w.updatedAt) > options.provisioningTimeout {
                provisionFailed(
                    w.id, ref: ref,
                    error: ProviderError(
                        .capacityUnavailable, provider: ref.provider, code: "JoinTimeout",
                        "machine \(ref.name) did not join within \(options.provisioningTimeout)"))
            }
        case .terminated, .preempted:
            if instance.state == .preempted { skipSpot(ref) }
            switch w.phase {
            case .provisioning:
                placeAgain(w.id, reason: "Rescheduled", message: "machine \(ref.name) ended before it joined")
            case .starting, .running:
                // The machine is gone under its workload: do not wait for its node to be declared lost, and give
                // its node no new work.
                if let node = w.status.node, nodes[node] != nil { _ = try? drain(node) }
                release(w.id)
                if instance.state == .preempted {
                    transition(
                        w.id, to: .preempted, reason: "Preempted", message: "spot machine \(ref.name) was reclaimed"
                    ) { $0.status.finishedAt = self.clock.now() }
                    placeAgainAfterPreemption(w.id)
                } else {
                    markLost(w.id, message: "machine \(ref.name) ended under its workload")
                    schedulePass()
                }
            default:
                break
            }
        }
    }

    /// A reclaimed spot instance: spot capacity of that provider in that region is skipped for a while, so the
    /// workload goes to another region (or on demand) when it is placed again.
    func skipSpot(_ ref: InstanceRef) {
        let until = clock.now().adding(options.offerUnavailableFor)
        var keys = [OfferKey(provider: ref.provider, region: ref.region, machineType: ref.machineType, spot: true)]
        for o in offerView().offers where o.provider == ref.provider && o.region == ref.region {
            keys.append(OfferKey(provider: o.provider, region: o.region, machineType: o.machineType, spot: true))
        }
        for k in keys { unavailableUntil[k] = until }
    }

    /// Not the workload's failure: placed again whatever its restart policy, within the restart limit.
    func placeAgainAfterPreemption(_ id: String) {
        if (active[id]?.status.attempts ?? Limits.restartsMax) < Limits.restartsMax {
            placeAgain(id, reason: "Rescheduled", message: "after a spot preemption, elsewhere")
        } else {
            transition(id, to: .failed, reason: "Preempted", message: "preempted after \(Limits.restartsMax) attempts")
        }
    }

    /// An attempt that ended (the workload is final, or pending for another attempt) no longer needs its instance:
    /// it is deleted and forgotten in the same write. Called by `transition`.
    func releaseInstance(_ w: inout Workload, from: Phase) {
        // A pod ending `terminating` was deleted by `terminateInstanceThenFinish`; a machine is deleted here (once
        // more is harmless: a gone instance is success).
        guard let ref = w.status.instance, w.phase.isFinal || w.phase == .pending,
            from != .terminating || !Self.runsWorkloadDirectly(ref.provider)
        else { return }
        // Restarting by policy on its own machine, which stays (`applyRestartPolicy` kept its placement).
        if w.phase == .pending, w.status.reason == "Restarting", w.status.placement != nil,
            !Self.runsWorkloadDirectly(ref.provider)
        {
            return
        }
        // A machine others of its batch still hold stays for them.
        if !Self.runsWorkloadDirectly(ref.provider), machineHolders(ref.name).contains(where: { $0 != w.id }) {
            w.status.instance = nil
            return
        }
        terminateLater(ref, reason: "its workload \(w.phase == .pending ? "will run again elsewhere" : "ended")")
        // Its node (a machine that joined) takes nothing new while it goes away.
        if !Self.runsWorkloadDirectly(ref.provider), let node = nodes[ref.name],
            node.state == .ready || node.state == .suspect
        {
            _ = try? drain(ref.name)
        }
        w.status.instance = nil
    }

    /// Keeps `machineOwners` in step with a workload's instance.
    func indexMachine(old: Workload?, new: Workload?) {
        let before = old?.status.instance.flatMap { Self.runsWorkloadDirectly($0.provider) ? nil : $0.name }
        let after = new?.status.instance.flatMap { Self.runsWorkloadDirectly($0.provider) ? nil : $0.name }
        guard before != after else { return }
        if let before, let id = old?.id {
            machineOwners[before]?.remove(id)
            if machineOwners[before]?.isEmpty == true { machineOwners[before] = nil }
        }
        if let after, let id = new?.id { machineOwners[after, default: []].insert(id) }
    }

    /// Deletes an instance in the background, retrying; the reconciler catches what this misses.
    nonisolated func terminateLater(_ ref: InstanceRef, reason: String) {
        guard let provider = providers[ref.provider] else { return }
        Task {
            do {
                try await withProviderRetries(ref.provider) {
                    try await provider.terminate(name: ref.name, region: ref.region)
                }
                logger.info("instance deleted", ["instance": ref.name, "provider": ref.provider, "why": reason])
            } catch {
                logger.warn(
                    "instance not deleted; the reconciler will try again",
                    ["instance": ref.name, "provider": ref.provider, "error": "\(error)"])
            }
        }
    }

    /// DELETE of a workload whose instance runs it: delete the instance, then the workload.
    func terminateInstanceThenFinish(_ id: String) {
        guard let ref = active[id]?.status.instance, let provider = providers[ref.provider] else {
            finishDeletion(id, status: nil)
            return
        }
        // A machine others of its batch still hold stays for them (the last one's deletion deletes it).
        if !Self.runsWorkloadDirectly(ref.provider), machineHolders(ref.name).contains(where: { $0 != id }) {
            finishDeletion(id, status: nil)
            return
        }
        Task { [weak self] in
            guard let self else { return }
            do {
                try await self.withProviderRetries(ref.provider) {
                    try await provider.terminate(name: ref.name, region: ref.region)
                }
            } catch {
                self.logger.warn(
                    "instance not deleted; the reconciler will try again",
                    ["instance": ref.name, "provider": ref.provider, "error": "\(error)"])
            }
            await self.finishDeletion(id, status: nil)
        }
    }

    // MARK: - Watching instances

    /// Asks each provider how the instances of unfinished workloads are doing (each instance once, however many
    /// workloads share it).
    func pollInstances() async {
        var watched: [String: (ids: [String], ref: InstanceRef)] = [:]
        for w in active.values.sorted(by: { $0.id < $1.id }) {
            guard let ref = w.status.instance, ref.id != nil,
                [.provisioning, .starting, .running].contains(w.phase)
            else { continue }
            watched[ref.name, default: ([], ref)].ids.append(w.id)
        }
        for name in watched.keys.sorted() {
            let (ids, ref) = watched[name]!
            guard let provider = providers[ref.provider] else { continue }
            do {
                let found = try await provider.status(name: ref.name, region: ref.region)
                for id in ids {
                    guard active[id]?.status.instance == ref else { continue }
                    if let found {
                        apply(found, to: id)
                    } else {
                        markLost(id, message: "instance \(ref.name) is gone from \(ref.provider)")
                    }
                }
                if found == nil { schedulePass() }
            } catch {
                logger.warn("instance status unknown", ["instance": ref.name, "error": "\(error)"])
            }
        }
    }

    /// Every provider's Fabric-owned instances against the store: unknown ones are deleted (orphans of a crash or
    /// of a failed delete), expected ones that are gone make their workload lost.
    func reconcileInstances() async {
        for (name, provider) in providers.sorted(by: { $0.key < $1.key }) {
            let owned: [Instance]
            do {
                owned = try await provider.list()
                providerCalls.succeeded(name)
            } catch {
                logger.warn("reconcile: cannot list instances", ["provider": name, "error": "\(error)"])
                providerCalls.failed(name, error, at: clock.now())
                continue
            }
            var expected: [String: [String]] = [:]  // instance name → the workloads that hold it
            for w in active.values.sorted(by: { $0.id < $1.id }) {
                if let ref = w.status.instance, ref.provider == name { expected[ref.name, default: []].append(w.id) }
            }
            let present = Set(owned.map(\.name))
            for i in owned where expected[i.name] == nil && i.state != .terminated {
                logger.warn("reconcile: deleting an instance no workload owns", ["provider": name, "instance": i.name])
                terminateLater(
                    InstanceRef(
                        name: i.name, provider: name, region: i.region, machineType: i.machineType, spot: i.spot),
                    reason: "orphaned")
            }
            for (instance, ids) in expected where !present.contains(instance) {
                for id in ids {
                    guard let w = active[id], w.status.instance?.name == instance, w.status.instance?.id != nil,
                        [.starting, .running].contains(w.phase)
                    else { continue }
                    markLost(id, message: "instance \(instance) is missing from \(name)")
                }
                schedulePass()
            }
        }
    }

    /// After a restart: a workload that was provisioning asks again with the same name (idempotent).
    func resumeProvisioning(_ id: String) {
        guard let w = active[id], let ref = w.status.instance else { return }
        guard let provider = providers[ref.provider] else {
            for h in holders(of: ref, lead: id) {
                placeAgain(h, reason: "Rescheduled", message: "its provider is no longer configured", pass: false)
            }
            return
        }
        let request = instanceRequest(w.spec, id: id, ref: ref)
        logger.info("resuming provisioning", ["workload": id, "instance": ref.name])
        Task { [weak self] in await self?.callProvision(id, ref: ref, request: request, provider: provider) }
    }

    /// Starts the instance watcher and the reconciler (only when some provider is configured).
    func startProvisioningLoops() {
        guard provisioningEnabled else { return }
        let poll = options.instancePollInterval
        let timer = self.timer
        instancePollTask = Task { [weak self] in
            while !Task.isCancelled {
                try? await timer.sleep(for: poll)
                await self?.pollInstances()
            }
        }
        let every = options.reconcileInterval
        reconcileTask = Task { [weak self] in
            while !Task.isCancelled {
                await self?.reconcileInstances()
                try? await timer.sleep(for: every)
            }
        }
    }
}
