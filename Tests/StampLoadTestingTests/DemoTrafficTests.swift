import NIOCore
import NIOHTTP1
import Testing
@testable import StampLoadTesting

@Suite("Demo traffic")
struct DemoTrafficTests {
    static func answer(_ status: HTTPResponseStatus, _ body: String, headers: HTTPHeaders = [:]) -> Result<PipelinedHTTPClient.Answer, PipelinedHTTPError> {
        .success(PipelinedHTTPClient.Answer(status: status, headers: headers, body: ByteBuffer(string: body)))
    }

    @Test func aWriteIsAcknowledgedBy201WithItsID() {
        let body = #"{"actor":"demo","field":"email","id":"251437998211072001","shard":1,"userId":"user-7"}"#
        #expect(WriteAttemptOutcome(Self.answer(.created, body)) == .acknowledged(id: 251_437_998_211_072_001, replayed: false))
        #expect(WriteAttemptOutcome(Self.answer(.created, body, headers: ["Idempotent-Replayed": "true"])) == .acknowledged(id: 251_437_998_211_072_001, replayed: true))
    }

    @Test(arguments: [
        (HTTPResponseStatus.created, #"{"field":"email"}"#, "201 without an id", false),
        (.badRequest, "{}", "HTTP 400", false),
        (.unauthorized, "{}", "HTTP 401", false),
        (.requestTimeout, "{}", "HTTP 408", true),
        (.tooManyRequests, "{}", "HTTP 429", true),
        (.internalServerError, "{}", "HTTP 500", true),
        (.serviceUnavailable, "{}", "HTTP 503", true),
    ])
    func onlyAnswersThatMaySucceedAgainAreRetried(status: HTTPResponseStatus, body: String, reason: String, retry: Bool) {
        #expect(WriteAttemptOutcome(Self.answer(status, body)) == .failed(reason: reason, detail: reason, retry: retry))
    }

    @Test(arguments: [
        (PipelinedHTTPError.Code.timedOut, true),
        (.connectionClosed, true),
        (.notConnected, true),
        (.answerTooLarge, true),
        (.protocolViolation, true),
        (.clientClosed, false),
    ])
    func aWriteWithNoAnswerIsRetriedUnlessTheClientClosed(code: PipelinedHTTPError.Code, retry: Bool) {
        let error = PipelinedHTTPError(code, "test")
        #expect(WriteAttemptOutcome(.failure(error)) == .failed(reason: code.rawValue, detail: "\(error)", retry: retry))
    }

    @Test func theIDIsTheDecimalOfTheIDMember() {
        #expect(WriteAttemptOutcome.id(in: ByteBuffer(string: #"{"id":"42","shard":0}"#)) == 42)
        #expect(WriteAttemptOutcome.id(in: ByteBuffer(string: #"{"userId":"7","id":"9"}"#)) == 9, "userId is not the id member")
        #expect(WriteAttemptOutcome.id(in: ByteBuffer(string: #"{"id":""}"#)) == nil)
        #expect(WriteAttemptOutcome.id(in: ByteBuffer(string: #"{"id":"99999999999999999999"}"#)) == nil, "above Int64")
        #expect(WriteAttemptOutcome.id(in: ByteBuffer(string: "")) == nil)
    }
}

@Suite("Generator counts and CPU shares")
struct ServedAndCPUTests {
    @Test func theCountsComeFromTheIDRoutesAnswersAndTheIssuedIDs() {
        let text = """
        # TYPE stamp_ids_issued_total counter
        stamp_ids_issued_total{shard="0"} 1500
        stamp_ids_issued_total{shard="2"} 20
        # TYPE stamp_http_request_duration_seconds histogram
        stamp_http_request_duration_seconds_bucket{route="/v1/ids",status="200",le="0.005"} 90
        stamp_http_request_duration_seconds_count{route="/v1/ids",status="200"} 120
        stamp_http_request_duration_seconds_count{route="/v1/ids",status="503"} 4
        stamp_http_request_duration_seconds_count{route="/v1/ids/:id",status="200"} 7
        stamp_http_request_duration_seconds_count{route="/health/ready",status="200"} 30
        """
        let counts = GeneratorCounts(metrics: Substring(text))
        #expect(counts == GeneratorCounts(requests: 120, ids: 1520))
        #expect(counts + counts - GeneratorCounts(requests: 20, ids: 40) == GeneratorCounts(requests: 220, ids: 3000))
        #expect(GeneratorCounts(metrics: "") == GeneratorCounts())
    }

    @Test func aSumTakesTheSeriesOfItsMetricWithEveryLabelAsked() {
        let text: Substring = """
        stamp_http_request_duration_seconds_count{route="/v1/users/{userId}/events",status="201"} 40
        stamp_http_request_duration_seconds_count{route="/v1/users/{userId}/events",status="200"} 2
        stamp_http_request_duration_seconds_count{route="/v1/users/{userId}/events/latest",status="200"} 5
        stamp_http_request_duration_seconds_count{route="/health/ready",status="200"} 9
        stamp_http_request_duration_seconds_count_other{route="/v1/users/{userId}/events"} 100
        stamp_lease_held 1
        """
        #expect(PrometheusText.sum("stamp_http_request_duration_seconds_count", labels: [#"route="/v1/"#], in: text) == 47)
        #expect(PrometheusText.sum("stamp_http_request_duration_seconds_count", labels: [#"route="/v1/users/{userId}/events""#, #"status="201""#], in: text) == 40)
        #expect(PrometheusText.sum("stamp_lease_held", in: text) == 1)
        #expect(PrometheusText.sum("stamp_missing", in: text) == 0)
    }

    @Test func cpuTimeIsUserPlusSystemTicks() {
        // Fields 14 and 15 (utime, stime) after a command with a space and a parenthesis in it.
        let line = "4242 (stamp (demo)) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9 0 100 0 0"
        #expect(ProcessCPU.time(inStat: line, ticksPerSecond: 100) == .seconds(3))
        #expect(ProcessCPU.time(inStat: "garbage", ticksPerSecond: 100) == nil)
        #expect(ProcessCPU.ownTime.map { $0 > .zero } == true, "this process has used some CPU")
        let thread = ProcessCPU.threadTime
        var spin = 0
        while ProcessCPU.threadTime == thread { spin += 1 }
        #expect(ProcessCPU.threadTime > thread, "this thread's time rises as it works (\(spin) turns)")
    }

    @Test func sharesAreCoresOverTheElapsedTime() {
        let before = CPUShares.Sample(driver: .seconds(1), auditTraffic: .zero, balancer: .seconds(2), auditServers: .seconds(3), generators: .zero)
        let after = CPUShares.Sample(driver: .seconds(4), auditTraffic: .seconds(2), balancer: .milliseconds(2500), auditServers: .seconds(13), generators: .seconds(1))
        let shares = CPUShares(from: before, to: after, elapsed: .seconds(10), machineCores: 2)
        #expect(shares == CPUShares(driver: 0.3, auditTraffic: 0.2, balancer: 0.05, auditServers: 1, generators: 0.1, machineCores: 2))
        #expect(shares.text == "driver 0.30 cores (15 % of the machine; audit traffic 0.20), balancer 0.05, audit servers 1.00, generators 0.10")
        let alone = CPUShares(from: CPUShares.Sample(driver: .zero, auditTraffic: .zero, balancer: nil, auditServers: .zero, generators: .zero), to: after, elapsed: .seconds(10), machineCores: 2)
        #expect(alone.balancer == nil)
        #expect(alone.text.contains("no balancer"))
    }
}
