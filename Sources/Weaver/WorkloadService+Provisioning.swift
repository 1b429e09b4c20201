import FabricCore
import FabricProviders
import FabricScheduler
import Foundation
import Shuttle

/// Workloads placed on provider offers: an instance per workload, made idempotently, watched until it ends.
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

    /// What real placements choose from: the nodes (less machines made for one workload), and the offers of
    /// configured providers that are not skipped.
    func placementSnapshot(now: Timestamp, nodes: [NodeInfo]) -> PlacementSnapshot {
        let offers = provisionableOffers()
        let shared = machineOwners.isEmpty ? nodes : nodes.filter { machineOwners[$0.id] == nil }
        return PlacementSnapshot(
            nodes: shared, offers: offers.offers, enabledProviders: offers.enabled,
            unavailableOffers: currentlyUnavailable(now: now), includeOffers: provisioningEnabled)
    }

    /// The deterministic instance name for a workload: its ID and the version of the write that records the
    /// `provisioning` phase, so never reused, and DNS-safe.
    nonisolated static func instanceName(_ id: String, version: Int) -> String {
        "fabric-\(id.lowercased())-\(version)"
    }

    /// Places a pending workload on an offer: stores the instance name with the `provisioning` phase, then (once
    /// stored) asks the provider.
    func beginProvisioning(_ id: String, _ placement: Placement) {
        guard let w = active[id], let provider = providers[placement.provider] else { return }
        let ref = InstanceRef(
            name: Self.instanceName(id, version: w.version + 2), provider: placement.provider,
            region: placement.region, machineType: placement.machineType, spot: placement.spot)
        transition(
            id, to: .scheduled, reason: "Scheduled",
            message: "placed on a new \(placement.provider) \(placement.machineType) in \(placement.region)"
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
        guard let stored else { return }
        placementsTotal += 1
        let request = instanceRequest(w.spec, id: id, ref: ref)
        Task {
            do { try await stored.value() } catch { return }  // not stored: nothing was asked for
            await self.callProvision(id, ref: ref, request: request, provider: provider)
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
        guard let w = active[id], w.status.instance?.name == ref.name else {
            // The workload moved on (deleted, or placed elsewhere) while the call ran: the instance is not wanted.
            terminateLater(ref, reason: "no longer wanted")
            return
        }
        logger.info("instance made", ["workload": id, "instance": ref.name, "id": instance.id])
        update(id) { $0.status.instance?.id = instance.id }
        if w.phase == .terminating {
            terminateInstanceThenFinish(id)
            return
        }
        apply(instance, to: id)
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
        logger.warn(
            "provisioning failed; trying the next candidate",
            ["workload": id, "offer": key.description, "error": error.description])
        guard let w = active[id], w.status.instance?.name == ref.name else { return }
        let reason: String
        switch error.kind {
        case .capacityUnavailable: reason = "CapacityUnavailable"
        case .quotaExceeded: reason = "QuotaExceeded"
        case .authFailed: reason = "ProviderAuthFailed"
        case .rateLimited: reason = "ProviderThrottled"
        default: reason = "ProvisioningFailed"
        }
        if w.phase == .terminating {
            finishDeletion(id, status: nil)
            return
        }
        placeAgain(id, reason: reason, message: "\(key): \(error.message)")
    }

    /// Back to pending without placement, to be judged on the next (full) pass. Its instance, if any, is deleted
    /// (`releaseInstance`): also after a refusal, in case the provider made one anyway.
    func placeAgain(_ id: String, reason: String, message: String) {
        transition(id, to: .pending, reason: reason, message: message) {
            $0.status.placement = nil
            $0.status.node = nil
        }
        enqueuePending(id)
        fullPassNeeded = true
        schedulePass()
    }

    /// Whether a provider's instance runs the workload itself (a pod), rather than a machine that boots shuttle,
    /// joins as a node named after the instance and is then given the workload.
    nonisolated static func runsWorkloadDirectly(_ provider: String) -> Bool {
        provider == ProviderName.k8s.rawValue || provider == ProviderName.coreweave.rawValue
            || provider == ProviderName.runpod.rawValue
    }

    /// A node joined: if it is the machine made for a provisioning workload, the workload is placed on it.
    func machineJoined(_ nodeID: String) {
        guard
            let w = active.values.first(where: {
                $0.phase == .provisioning && $0.status.instance?.name == nodeID
                    && !Self.runsWorkloadDirectly($0.status.instance?.provider ?? "")
            })
        else { return }
        let attempt = w.status.attempts + 1
        allocate(w.id, w.spec.resources, on: nodeID)
        let stored = startAttempt(w.id, attempt, message: "machine \(nodeID) joined", node: nodeID)
        logger.info("machine joined; starting its workload", ["workload": w.id, "node": nodeID, "attempt": attempt])
        if let stored {
            dispatch(Assignment(workloadID: w.id, attempt: attempt, spec: w.spec), to: nodeID, after: stored)
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
        if let before, machineOwners[before] == old?.id { machineOwners[before] = nil }
        if let after, let id = new?.id { machineOwners[after] = id }
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

    /// Asks each provider how the instances of unfinished workloads are doing.
    func pollInstances() async {
        let watched = active.values.compactMap { w -> (String, InstanceRef)? in
            guard let ref = w.status.instance, ref.id != nil,
                [.provisioning, .starting, .running].contains(w.phase)
            else { return nil }
            return (w.id, ref)
        }
        for (id, ref) in watched {
            guard let provider = providers[ref.provider] else { continue }
            do {
                let found = try await provider.status(name: ref.name, region: ref.region)
                guard active[id]?.status.instance == ref else { continue }
                if let found {
                    apply(found, to: id)
                } else {
                    markLost(id, message: "instance \(ref.name) is gone from \(ref.provider)")
                    schedulePass()
                }
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
            var expected: [String: String] = [:]  // instance name → workload
            for w in active.values {
                if let ref = w.status.instance, ref.provider == name { expected[ref.name] = w.id }
            }
            let present = Set(owned.map(\.name))
            for i in owned where expected[i.name] == nil && i.state != .terminated {
                logger.warn("reconcile: deleting an instance no workload owns", ["provider": name, "instance": i.name])
                terminateLater(
                    InstanceRef(
                        name: i.name, provider: name, region: i.region, machineType: i.machineType, spot: i.spot),
                    reason: "orphaned")
            }
            for (instance, id) in expected where !present.contains(instance) {
                guard let w = active[id], w.status.instance?.id != nil,
                    [.starting, .running].contains(w.phase)
                else { continue }
                markLost(id, message: "instance \(instance) is missing from \(name)")
                schedulePass()
            }
        }
    }

    /// After a restart: a workload that was provisioning asks again with the same name (idempotent).
    func resumeProvisioning(_ id: String) {
        guard let w = active[id], let ref = w.status.instance, let provider = providers[ref.provider] else {
            placeAgain(id, reason: "Rescheduled", message: "its provider is no longer configured")
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
