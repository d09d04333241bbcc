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
        #expect(fixture.node.readiness().isReady)
        let ids = try fixture.node.issue(shard: 3, count: 5, after: nil)
        #expect(ids.count == 5)
        let stored = try #require(fixture.store.lease(of: 0))
        #expect(stored.reservedUntilUnixMilliseconds == NodeFixture.start + 3000)
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

        wallClock.advance(milliseconds: clockStep)
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
            #expect(refusals < 100)
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
        zombie.readings.pauseNextRead()
        let inFlight = BlockingCall { try zombie.node.issue(shard: 0, count: 1, after: nil) }
        await zombie.readings.waitUntilPaused()
        storeClock.advance(milliseconds: 11_000)
        wallClock.advance(milliseconds: 11_000)
        let successor = NodeFixture(store: store, wallClock: wallClock)
        try await successor.start()
        #expect(successor.node.node == 0)
        let successorIDs = try successor.node.issue(shard: 0, count: 100, after: nil)
        #expect(successorIDs.first!.fields(in: .default).unixMilliseconds >= reservationBefore)
        let successorReservation = try #require(store.lease(of: 0)).reservedUntilUnixMilliseconds

        // The zombie resumes after 11 s on its monotonic clock too, past the lease's ttl - margin,
        // and before its next step: the request in flight issues nothing.
        zombie.clock.advance(by: .seconds(11))
        zombie.readings.resume()
        switch await inFlight.value() {
        case .success(let ids):
            Issue.record("a request in flight issued \(Array(ids)) after the lease's deadline")
            #expect(ids.allSatisfy { $0 < successorIDs.first! })
        case .failure(let error):
            #expect(error is IssueRefusal)
        }

        // The zombie's renewal is now due but rejected, since the store no longer names it owner.
        _ = await zombie.node.step()
        #expect(zombie.counter("stamp_lease_renewals_total", [("result", "lost")]) == 1)
        #expect(throws: IssueRefusal.self) { try zombie.node.issue(shard: 0, count: 1, after: nil) }
        #expect(zombie.node.readiness().isReady == false)
        let stored = try #require(store.lease(of: 0))
        #expect(stored.owner == successor.node.owner)
        #expect(stored.reservedUntilUnixMilliseconds == successorReservation)
        #expect(zombieIDs.allSatisfy { $0.fields(in: .default).unixMilliseconds < reservationBefore })
    }

    /// A request that holds the generator of a lease the node has since lost and claimed again
    /// issues nothing: its IDs would lie below those the new claim's generator issued meanwhile.
    @Test func aRequestOnTheGeneratorOfALostLeaseIssuesNothingAfterAReclaim() async throws {
        let fixture = NodeFixture()
        try await fixture.start()
        let before = try fixture.node.issue(shard: 0, count: 100, after: nil)
        fixture.readings.pauseNextRead()
        let inFlight = BlockingCall { try fixture.node.issue(shard: 0, count: 1, after: nil) }
        await fixture.readings.waitUntilPaused()

        // The lease runs out unrenewed; the node drops it, claims the same node ID again and issues.
        fixture.advance(milliseconds: 10_000)
        _ = await fixture.node.step()
        _ = await fixture.node.step()
        #expect(fixture.node.node == 0)
        #expect(fixture.counter("stamp_lease_claims_total", [("result", "ok")]) == 2)
        let reclaimed = try fixture.node.issue(shard: 0, count: 100, after: nil)
        #expect(reclaimed.first! > before.last!)

        fixture.readings.resume()
        switch await inFlight.value() {
        case .success(let ids):
            Issue.record("the old generator issued \(Array(ids)) after the new one issued from \(reclaimed.first!)")
        case .failure(let error):
            #expect(error is IssueRefusal)
        }
        let after = try fixture.node.issue(shard: 0, count: 1, after: nil)
        #expect(after.first! > reclaimed.last!)
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
            #expect(steps < 100)
        }
        // Valid for ttl - margin = 8 s after the last confirmed renewal, which was sent at time 0.
        #expect(fixture.clock.now.offset == .seconds(8))
        #expect(throws: IssueRefusal.self) { try fixture.node.issue(shard: 0, count: 1, after: nil) }
        #expect(fixture.counter("stamp_lease_renewals_total", [("result", "error")]) > 0)
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
