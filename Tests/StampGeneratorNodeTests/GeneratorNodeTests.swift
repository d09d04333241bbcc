import StampCoordination
import StampCore
@testable import StampGeneratorNode
import StampTesting
import Testing

@Suite("Generator node")
struct GeneratorNodeTests {
    @Test func claimsPersistsAReservationThenIssues() async throws {
        let fixture = NodeFixture()
        try await fixture.node.prepare()
        #expect(fixture.node.readiness().isReady == false)
        _ = await fixture.node.step()  // claim
        #expect(fixture.node.node == 0)
        // Claimed but the reservation is not persisted yet: nothing may be issued.
        #expect(throws: IssueRefusal.self) { try fixture.node.issue(shard: 0, count: 1, after: nil) }
        _ = await fixture.node.step()  // renew with a reservation
        // The store held no reservation: the floor lies at claim time + 2 × max lead + 1 ms.
        #expect(fixture.node.readiness().isReady == false)
        fixture.advance(milliseconds: 1001)
        #expect(fixture.node.readiness().isReady)
        let ids = try fixture.node.issue(shard: 3, count: 5, after: nil)
        #expect(ids.count == 5)
        let stored = try #require(fixture.store.lease(of: 0))
        #expect(stored.reservedUntilUnixMilliseconds == NodeFixture.start + 2000 + 3000)
        for id in ids {
            #expect(id.fields(in: .default).unixMilliseconds < stored.reservedUntilUnixMilliseconds)
        }
        #expect(fixture.counter("stamp_ids_issued_total", [("shard", "3")]) == 5)
        #expect(fixture.counter("stamp_lease_claims_total", [("result", "ok")]) == 1)
    }

    @Test func nodesOnOneStoreGetDistinctNodeIDs() async throws {
        let store = InMemoryCoordinationStore(clock: ManualWallClock(unixMilliseconds: NodeFixture.start))
        var nodes: [Int] = []
        for _ in 0..<3 {
            let fixture = NodeFixture(store: store)
            try await fixture.start()
            nodes.append(try #require(fixture.node.node))
        }
        #expect(nodes == [0, 1, 2])
    }

    /// A node restarted at once, in the same millisecond or with its clock set back by seconds,
    /// issues only IDs above every ID it issued before.
    @Test(arguments: [0 as Int64, -5000])
    func restartIssuesAboveEverythingIssuedBefore(clockStep: Int64) async throws {
        let store = InMemoryCoordinationStore(clock: ManualWallClock(unixMilliseconds: NodeFixture.start))
        let wallClock = ManualWallClock(unixMilliseconds: NodeFixture.start)
        let first = NodeFixture(store: store, wallClock: wallClock)
        try await first.start()
        // Borrow ahead: the first run's IDs reach into the future within maxLead.
        let before = try first.node.issue(shard: 0, count: 10_000, after: nil)
        let highest = try #require(before.last)
        await first.node.release()

        // The machine's clock steps: the store on it (SQLite reads the same clock) sees the step too.
        wallClock.advance(milliseconds: clockStep)
        store.clock.advance(milliseconds: clockStep)
        let second = NodeFixture(store: store, wallClock: wallClock)
        try await second.start()
        #expect(second.node.node == 0)
        // Until the wall clock nears the stored reservation, the restarted node refuses.
        var refusals = 0
        var after: [StampID] = []
        while after.isEmpty {
            do {
                after = Array(try second.node.issue(shard: 0, count: 100, after: nil))
            } catch {
                refusals += 1
                #expect(second.node.readiness().isReady == false)
                second.advance(milliseconds: 250)
                _ = await second.node.step()
            }
            try #require(refusals < 100)
        }
        #expect(after.allSatisfy { $0 > highest })
        #expect(refusals > 0, "the reservation lies ahead of the clock, so the new node must wait")
    }

    /// A paused owner whose lease expired cannot extend its reservation once another node has
    /// claimed the node ID, and issues nothing past it: neither a request that was in flight when
    /// the pause began, nor one after it.
    @Test func pausedOwnerIsFenced() async throws {
        let storeClock = ManualWallClock(unixMilliseconds: NodeFixture.start)
        let store = InMemoryCoordinationStore(clock: storeClock)
        let wallClock = ManualWallClock(unixMilliseconds: NodeFixture.start)
        let zombie = NodeFixture(store: store, wallClock: wallClock)
        try await zombie.start()
        let zombieIDs = try zombie.node.issue(shard: 0, count: 100, after: nil)
        let reservationBefore = try #require(store.lease(of: 0)).reservedUntilUnixMilliseconds

        // A request passes the lease check and reads the wall clock; then the zombie is paused, and
        // on the store's clock its lease expires and another node claims it.
        let inFlight = BlockingCall {
            zombie.readings.pauseNextRead()
            return try zombie.node.issue(shard: 0, count: 1, after: nil)
        }
        await zombie.readings.waitUntilPaused()
        storeClock.advance(milliseconds: 11_000)
        wallClock.advance(milliseconds: 11_000)
        let successor = NodeFixture(store: store, wallClock: wallClock)
        try await successor.start()
        #expect(successor.node.node == 0)
        let successorIDs = try successor.node.issue(shard: 0, count: 100, after: nil)
        #expect(successorIDs.first!.fields(in: .default).unixMilliseconds >= reservationBefore)
        let successorReservation = try #require(store.lease(of: 0)).reservedUntilUnixMilliseconds

        // The zombie wakes with little time passed on its own monotonic clock, and before its next
        // step the request in flight completes: whatever it issues lies below the successor's IDs.
        zombie.clock.advance(by: .milliseconds(3400))
        zombie.readings.resume()
        if case .success(let ids) = await inFlight.value() {
            #expect(ids.allSatisfy { $0 < successorIDs.first! })
        }

        // Its renewal is due but rejected, since the store no longer names it owner.
        _ = await zombie.node.step()
        #expect(zombie.counter("stamp_lease_renewals_total", [("result", "lost")]) == 1)
        #expect(throws: IssueRefusal.self) { try zombie.node.issue(shard: 0, count: 1, after: nil) }
        #expect(zombie.node.readiness().isReady == false)
        let stored = try #require(store.lease(of: 0))
        #expect(stored.owner == successor.node.owner)
        #expect(stored.reservedUntilUnixMilliseconds == successorReservation)
        #expect(zombieIDs.allSatisfy { $0.fields(in: .default).unixMilliseconds < reservationBefore })
    }

    /// A request preempted between the lease check and taking its IDs resumes after the lease's
    /// deadline (ttl - margin without a confirmed renewal): it issues nothing.
    @Test func aRequestPreemptedPastTheLeasesDeadlineIssuesNothing() async throws {
        let fixture = NodeFixture()
        try await fixture.start()
        _ = try fixture.node.issue(shard: 0, count: 100, after: nil)
        let inFlight = BlockingCall {
            fixture.readings.pauseNextRead()
            return try fixture.node.issue(shard: 0, count: 1, after: nil)
        }
        await fixture.readings.waitUntilPaused()
        fixture.advance(milliseconds: 8000)
        fixture.readings.resume()
        switch await inFlight.value() {
        case .success(let ids):
            Issue.record("issued \(Array(ids)) after the lease's deadline")
        case .failure(let error):
            #expect(error is IssueRefusal)
        }
    }

    /// A request that holds the generator of a lease the node has since lost and claimed again
    /// issues nothing: its IDs would lie below those the new claim's generator issues.
    @Test func aRequestOnTheGeneratorOfALostLeaseIssuesNothingAfterAReclaim() async throws {
        // A reservation window longer than the outage, so that the old generator's own limit does not refuse.
        let fixture = NodeFixture(configuration: NodeConfiguration(lease: LeaseConfiguration(reservationWindow: .seconds(30))))
        try await fixture.start()
        let before = try fixture.node.issue(shard: 0, count: 100, after: nil)
        let inFlight = BlockingCall {
            fixture.readings.pauseNextRead()
            return try fixture.node.issue(shard: 0, count: 1, after: nil)
        }
        await fixture.readings.waitUntilPaused()

        // The lease runs out unrenewed; the node drops it and claims the same node ID again.
        fixture.advance(milliseconds: 10_000)
        _ = await fixture.node.step()
        _ = await fixture.node.step()
        #expect(fixture.node.node == 0)
        #expect(fixture.counter("stamp_lease_claims_total", [("result", "ok")]) == 2)

        fixture.readings.resume()
        switch await inFlight.value() {
        case .success(let ids):
            Issue.record("the generator of the lost lease issued \(Array(ids)) after the node ID was claimed again")
        case .failure(let error):
            #expect(error is IssueRefusal)
        }
        // The new claim's generator starts above the stored reservation, once the wall clock nears it.
        var reclaimed: IssuedIDs?
        while reclaimed == nil {
            reclaimed = try? fixture.node.issue(shard: 0, count: 1, after: nil)
            fixture.advance(milliseconds: 1000)
            _ = await fixture.node.step()
            try #require(fixture.clock.now.offset < .seconds(60))
        }
        #expect(reclaimed!.first! > before.last!)
    }

    /// A node whose wall clock runs 60 s ahead of the store's issues nothing and persists no
    /// reservation from its clock; once the clock is back, it resumes at the next renewal.
    @Test func aWallClockAheadOfTheStoresStopsIssuingUntilItIsBack() async throws {
        let storeClock = ManualWallClock(unixMilliseconds: NodeFixture.start)
        let logs = RecordingLogHandler.Records()
        let fixture = NodeFixture(store: InMemoryCoordinationStore(clock: storeClock), wallClock: ManualWallClock(unixMilliseconds: NodeFixture.start + 60_000), logs: logs)
        try await fixture.start()
        #expect(fixture.node.node == 0)
        do {
            let ids = try fixture.node.issue(shard: 0, count: 1, after: nil)
            Issue.record("issued \(Array(ids)) with the wall clock a minute ahead of the store's")
        } catch let refusal as IssueRefusal {
            #expect(refusal.reason == .clockSkewed)
        }
        let readiness = fixture.node.readiness()
        #expect(readiness.isReady == false)
        #expect(readiness.reason?.contains("60000 ms ahead of the coordination store's") == true)
        #expect(fixture.gauge("stamp_clock_skew_milliseconds") == 60_000)
        #expect(fixture.counter("stamp_refusals_total", [("reason", "clock-skewed")]) == 1)
        #expect(logs.messages.contains { $0.contains("differs from the coordination store's beyond the bound") })

        // Renewals go on at their interval, measuring again, and persist no reservation from this clock.
        for _ in 0..<3 {
            fixture.advance(milliseconds: 3334)
            _ = await fixture.node.step()
        }
        #expect(fixture.counter("stamp_lease_renewals_total", [("result", "ok")]) == 3)
        #expect(try #require(fixture.store.lease(of: 0)).reservedUntilUnixMilliseconds == 0)
        #expect(fixture.node.readiness().isReady == false)

        // The clock is set right: the next renewal measures it, the one after reserves, and IDs follow.
        fixture.wallClock.set(unixMilliseconds: storeClock.unixMilliseconds())
        fixture.advance(milliseconds: 3334)
        _ = await fixture.node.step()
        #expect(fixture.gauge("stamp_clock_skew_milliseconds") == 0)
        #expect(logs.messages.contains { $0.contains("back within the bound") })
        var steps = 0
        while !fixture.node.readiness().isReady {
            fixture.advance(milliseconds: 100)
            _ = await fixture.node.step()
            steps += 1
            try #require(steps < 50, "the node did not resume")
        }
        let ids = try fixture.node.issue(shard: 0, count: 1, after: nil)
        let reservation = try #require(fixture.store.lease(of: 0)).reservedUntilUnixMilliseconds
        #expect(reservation <= storeClock.unixMilliseconds() + 2 * 1000 + 3000 + 1, "the reservation follows the store's clock, not the skewed one")
        #expect(ids.allSatisfy { $0.fields(in: .default).unixMilliseconds < reservation })
    }

    /// A node that issued at its full lead restarts against an empty store at the same instant: the
    /// node ID has no reservation, so the node waits until the wall clock passes the claim time plus
    /// the maximum lead, and repeats no ID.
    @Test func aNodeIDWithNoReservationWaitsOutTheMaximumLead() async throws {
        let wallClock = ManualWallClock(unixMilliseconds: NodeFixture.start)
        let first = NodeFixture(wallClock: wallClock)
        try await first.start()
        var last: StampID?
        while true {
            do {
                last = try first.node.issue(shard: 0, count: 10_000, after: nil).last
            } catch let error as GeneratorError {
                #expect(error.code == .leadExceeded)
                break
            }
        }
        let highest = try #require(last)
        let restartedAt = wallClock.unixMilliseconds()
        #expect(highest.fields(in: .default).unixMilliseconds == restartedAt + 1000, "the first run reached its full lead")

        let logs = RecordingLogHandler.Records()
        let restarted = NodeFixture(store: InMemoryCoordinationStore(clock: ManualWallClock(unixMilliseconds: restartedAt)), wallClock: wallClock, logs: logs)
        try await restarted.node.prepare()
        _ = await restarted.node.step()  // claim
        _ = await restarted.node.step()  // renew
        #expect(restarted.node.node == 0)
        #expect(logs.messages.contains { $0.contains("no stored reservation") })
        #expect(restarted.node.readiness().isReady == false)
        var after: [StampID] = []
        while after.isEmpty {
            do {
                after = Array(try restarted.node.issue(shard: 0, count: 100, after: nil))
            } catch {
                #expect(wallClock.unixMilliseconds() <= restartedAt + 1000, "refused after the wall clock passed the claim time plus the maximum lead")
                restarted.advance(milliseconds: 50)
                _ = await restarted.node.step()
            }
        }
        #expect(wallClock.unixMilliseconds() > restartedAt + 1000, "issued before the wall clock passed the claim time plus the maximum lead")
        #expect(after.allSatisfy { $0 > highest }, "a restart against an empty store repeated IDs")
    }

    @Test func unrenewedLeaseStopsIssuingAfterTTLMinusMargin() async throws {
        let fixture = NodeFixture()
        try await fixture.start()
        fixture.store.failNext(100)
        var steps = 0
        while fixture.node.readiness().isReady {
            fixture.clock.advance(by: .milliseconds(500))
            fixture.wallClock.advance(milliseconds: 500)
            _ = await fixture.node.step()
            steps += 1
            try #require(steps < 100)
        }
        // Valid for ttl - margin = 8 s after the last confirmed renewal, which was sent at time 0.
        #expect(fixture.clock.now.offset == .seconds(8))
        #expect(throws: IssueRefusal.self) { try fixture.node.issue(shard: 0, count: 1, after: nil) }
        #expect(fixture.counter("stamp_lease_renewals_total", [("result", "error")]) > 0)
    }

    /// A renewal whose call never returns (the store dropped its connection, say) is given up after
    /// one renewal interval, so the next renewal goes out in time and the node keeps its lease.
    @Test(.timeLimit(.minutes(1)))
    func aRenewalThatNeverAnswersIsGivenUpInTime() async throws {
        let fixture = NodeFixture()
        try await fixture.start()
        // One renewal interval (10 s / 3) on, rounded up to a whole millisecond.
        let interval = fixture.node.configuration.lease.renewInterval.wholeMilliseconds + 1
        fixture.store.hangNext(1)
        fixture.advance(milliseconds: interval)
        let stepping = Task { await fixture.node.step() }
        await fixture.store.waitUntilHung()
        await fixture.clock.waitForSleepers()
        fixture.advance(milliseconds: interval)
        _ = await stepping.value
        #expect(fixture.counter("stamp_lease_renewals_total", [("result", "error")]) == 1)
        #expect(fixture.node.readiness().isReady, "still within ttl - margin of the last renewal")
        // The next renewal, after the retry interval, answers: the lease is good for ttl - margin from it.
        fixture.advance(milliseconds: fixture.node.configuration.lease.retryInterval.wholeMilliseconds)
        _ = await fixture.node.step()
        #expect(fixture.counter("stamp_lease_renewals_total", [("result", "ok")]) >= 2)
        fixture.advance(milliseconds: 5000)
        _ = await fixture.node.step()
        #expect(fixture.node.readiness().isReady)
        #expect(throws: Never.self) { try fixture.node.issue(shard: 0, count: 1, after: nil) }
        fixture.store.releaseHung()
    }

    @Test func backwardStepBeyondMaxLeadRefusesUntilTheClockCatchesUp() async throws {
        let fixture = NodeFixture()
        try await fixture.start()
        _ = try fixture.node.issue(shard: 0, count: 1, after: nil)
        fixture.wallClock.advance(milliseconds: -1500)
        do {
            _ = try fixture.node.issue(shard: 0, count: 1, after: nil)
            Issue.record("issued 1.5 s ahead of the wall clock")
        } catch let error as GeneratorError {
            #expect(error.code == .leadExceeded)
        }
        #expect(fixture.node.readiness().isReady == false)
        #expect(fixture.counter("stamp_refusals_total", [("reason", "lead-exceeded")]) == 1)
        fixture.node.refreshMetrics()
        #expect(fixture.counter("stamp_clock_backward_steps_total") == 1)
        fixture.wallClock.advance(milliseconds: 500)
        #expect(fixture.node.readiness().isReady)
        _ = try fixture.node.issue(shard: 0, count: 1, after: nil)
    }

    @Test func otherLayoutRefusesToStart() async throws {
        let store = InMemoryCoordinationStore(clock: ManualWallClock(unixMilliseconds: NodeFixture.start))
        try await NodeFixture(store: store).node.prepare()
        let other = try IDLayout(parsing: "time=41,sequence=11,shard=5,node=6,epoch=2025-01-01T00:00:00Z")
        let fixture = NodeFixture(store: store, configuration: NodeConfiguration(layout: other))
        await #expect(throws: CoordinationError.self) { try await fixture.node.prepare() }
    }
}
